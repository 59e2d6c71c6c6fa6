// The embedded job cache and event store in SQLite (WAL mode).
//
// Schema (created on open if missing):
//   jids(jid TEXT PRIMARY KEY, load TEXT NOT NULL, minions TEXT, endtime TEXT,
//        fun TEXT, tgt TEXT, tgt_type TEXT, user TEXT, alter_time INTEGER)
//   salt_returns(record_id TEXT PRIMARY KEY, jid TEXT, fun TEXT, id TEXT, success INTEGER,
//        retcode INTEGER, full_ret TEXT, alter_time INTEGER)  -- index on (jid), (id, fun, alter_time)
//   salt_events(id INTEGER PRIMARY KEY, record_id TEXT, tag TEXT, data TEXT, master_id TEXT,
//        alter_time INTEGER, UNIQUE (alter_time, record_id))  -- index on (tag)
//   (the primary key on jids.jid serves newest-first paging)
//
// Writes are idempotent by record id (events: by time and record id; a re-delivery keeps the
// record's time) with INSERT OR IGNORE, so at-least-once delivery never duplicates a row. A job_load record inserts the load only if the jid has none yet (the
// publish load is never overwritten by a return load); a job_minions record merges the minion
// list; job_endtime sets the end time.
//
// Reads open their own connection (WAL readers do not block the writer) and are safe from any
// thread; each sqlite_store object serializes its own calls with a mutex.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "fastret/job_store.hpp"
#include "fastret/record.hpp"
#include "fastret/sink.hpp"

namespace fastret {

// The schema's DDL (what a store creates on open), for `fastret schema sqlite`.
std::string sqlite_schema_sql();

class sqlite_store final : public job_store {
public:
    // Opens (creating) the database. Throws std::runtime_error with SQLite's message on failure.
    explicit sqlite_store(const std::filesystem::path& path, int busy_timeout_ms = 5000,
                          bool synchronous_full = false);
    ~sqlite_store() override;
    sqlite_store(const sqlite_store&) = delete;
    sqlite_store& operator=(const sqlite_store&) = delete;

    // Writes a batch in one transaction. Returns ok, retry (SQLITE_BUSY/LOCKED/IOERR/FULL/
    // CANTOPEN/PROTOCOL/READONLY/NOMEM) or
    // drop (constraint/other) with SQLite's message.
    write_result write(std::span<const record> batch) noexcept override;

    // Job-cache reads. JSON texts are returned as stored.
    std::optional<std::string> get_load(const std::string& jid) override;          // load JSON
    std::optional<std::string> get_minions_of(const std::string& jid) override;    // JSON array
    std::vector<std::pair<std::string, std::string>> get_returns(const std::string& jid) override;  // (minion, full_ret JSON), latest per minion
    // (jid, load JSON) of all jobs, newest first; limit 0 = all.
    std::vector<std::pair<std::string, std::string>> get_jobs(std::size_t limit = 0,
                                                              bool skip_find_job = false) override;
    std::vector<std::string> get_minion_ids() override;                           // distinct minions with returns
    std::vector<std::pair<std::string, std::string>> get_fun(const std::string& fun) override;  // (minion, fun) of each minion's latest call of fun
    std::optional<std::string> get_endtime(const std::string& jid) override;
    // Deletes jobs (load and returns together) stored (jids.alter_time) before `cutoff_us`, and
    // events older than it. Returns rows deleted.
    std::uint64_t clean_old_jobs(std::int64_t cutoff_us) override;
    // Events with tag matching a GLOB pattern (SQLite GLOB), newest first, for tests and the CLI.
    std::vector<std::pair<std::string, std::string>> get_events(const std::string& tag_glob,
                                                                std::size_t limit) override;
    std::uint64_t count(const std::string& table) override;

    const std::filesystem::path& path() const noexcept;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace fastret
