// The job-cache contract shared by every database backend (sqlite, postgres, mysql).
//
// A job store holds three things: jobs (the publish load of each jid, its minion list, its end
// time), returns (one row per minion return) and events (the master's event bus). It is written
// by a sink (one store object on the runtime's I/O thread, write() per batch) and read by the
// Salt job-cache entry points (a second store object in the calling process: reads never wait
// behind a batch being written).
//
// Write semantics, the same for every backend:
//  - every write is idempotent: returns and events are keyed by the record id (events by
//    record id and time), so a batch delivered twice (at-least-once) leaves one row per record;
//  - job_load inserts the load only if the jid has none yet: the publish load is never
//    overwritten by the load Salt passes again with each return;
//  - job_minions merges the minion list into the jid's (creating the jid's row if the load has
//    not arrived yet); job_endtime sets the end time;
//  - write() reports ok only once the batch is committed; connection loss and lock timeouts
//    are retry, constraint/size errors are drop (or ok with `dropped` when the store could
//    store the rest), a missing or incompatible schema or refused credentials are fatal.
//
// Read semantics: JSON texts come back as stored. Reads throw store_error on failure, with a
// message that never contains a secret (no password, no full DSN).
//
// Thread-safety: every method may be called from any thread; an object serializes its own
// calls. Blocking: every method blocks for at most the backend's configured timeouts.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "fastret/config.hpp"
#include "fastret/record.hpp"
#include "fastret/sink.hpp"

namespace fastret {

// Thrown by a store's constructor and reads. `status` says what retrying would achieve: retry
// (the server is down, a lock timed out), fatal (bad credentials, schema missing, TLS refused).
struct store_error : std::runtime_error {
    write_status status;
    store_error(write_status s, const std::string& msg) : std::runtime_error(msg), status(s) {}
};

class job_store {
public:
    virtual ~job_store() = default;

    // Writes a batch in one transaction (one round trip where the backend allows). noexcept.
    virtual write_result write(std::span<const record> batch) noexcept = 0;

    // The jid's publish load (JSON object), if any.
    virtual std::optional<std::string> get_load(const std::string& jid) = 0;
    // The jid's minion list (JSON array), if one was saved.
    virtual std::optional<std::string> get_minions_of(const std::string& jid) = 0;
    // (minion id, full_ret JSON) of the jid's returns, the latest per minion.
    virtual std::vector<std::pair<std::string, std::string>> get_returns(const std::string& jid) = 0;
    // (jid, load JSON) of stored jobs, newest jid first; limit 0 = all. With skip_find_job,
    // jobs whose fun is saltutil.find_job are left out (before the limit applies).
    virtual std::vector<std::pair<std::string, std::string>> get_jobs(std::size_t limit,
                                                                      bool skip_find_job) = 0;
    // Distinct minion ids that have returns.
    virtual std::vector<std::string> get_minion_ids() = 0;
    // (minion id, fun) of every minion that has a return of `fun` (Salt's get_fun).
    virtual std::vector<std::pair<std::string, std::string>> get_fun(const std::string& fun) = 0;
    // The jid's end time as saved by update_endtime, if any.
    virtual std::optional<std::string> get_endtime(const std::string& jid) = 0;
    // Deletes jobs (load, minion list and returns together) stored before cutoff_us (Unix
    // microseconds) and events older than it. Returns the rows deleted.
    virtual std::uint64_t clean_old_jobs(std::int64_t cutoff_us) = 0;
    // (tag, data JSON) of events whose tag matches a shell-style glob (`*`, `?`), newest
    // first; limit 0 = all. For tests and the CLI.
    virtual std::vector<std::pair<std::string, std::string>> get_events(
        const std::string& tag_glob, std::size_t limit) = 0;
    // Row count of "jids", "salt_returns" or "salt_events" (std::invalid_argument otherwise).
    virtual std::uint64_t count(const std::string& table) = 0;
};

// Opens a store of a registered sink type ("sqlite", "postgres", "mysql") from that type's
// validated options (the same options the sink gets). Throws config_error for a type without
// a job store, store_error when the database cannot be reached or used.
std::unique_ptr<job_store> open_job_store(const std::string& type, const options& opts);

// The DDL of a type's schema (idempotent: safe to run on an existing or a stock returner's
// database, it adds what is missing), plus, where the backend has roles, a writer role that
// may only insert and read what the returners need and a reader role for analysts. Role names
// must be plain identifiers (config_error otherwise). Throws config_error for a type without one.
std::string job_store_schema(const std::string& type, const std::string& writer_role,
                             const std::string& reader_role);

// Connects with a type's validated options and applies job_store_schema() (for `fastret schema
// --apply`; meant for an administrator's account that may create tables and roles). Throws
// config_error or store_error.
void apply_job_store_schema(const std::string& type, const options& opts,
                            const std::string& writer_role, const std::string& reader_role);

}  // namespace fastret
