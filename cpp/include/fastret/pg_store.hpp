// The job cache and event store in PostgreSQL (libpq), compatible with Salt's stock pgjsonb
// returner: its tables and columns are kept and filled as it fills them, so that existing
// queries and dashboards keep working, and fastret adds what it needs.
//
// Schema (see postgres_schema(); every statement is idempotent and upgrades a database made
// by the stock pgjsonb returner in place):
//   jids(jid varchar(255) PRIMARY KEY, load jsonb NOT NULL,
//        + minions jsonb, endtime text, alter_time timestamptz)
//   salt_returns(fun, jid, return jsonb, id, success 'true'/'false', full_ret jsonb,
//        alter_time timestamptz, + record_id text UNIQUE, retcode bigint)
//   salt_events(id bigint PRIMARY KEY (sequence seq_salt_events_id), tag, data jsonb,
//        alter_time timestamptz, master_id, + record_id text; UNIQUE (alter_time, record_id))
//   jids_archive, salt_returns_archive, salt_events_archive: the same columns (archive option)
//
// Stored values:
//  - alter_time is the record's creation time (ts_us, exact to the microsecond); salt_returns
//    gets `return` = full_ret->'return' and success 'true'/'false' (unknown: 'false'), as the
//    stock returner writes them; salt_events.master_id is the record's minion field.
//  - A jid known only from its minion list or end time has a placeholder row whose load is
//    JSON null; it is not a job for get_load/get_jobs until its load arrives.
//  - jsonb cannot hold U+0000: the escape `\u0000` in a payload is stored as the six
//    characters `\u0000` (the JSON text `\\u0000`), and a NUL byte in a text column (jid,
//    minion id, fun, tag) likewise as the text `\u0000`. A payload that is not JSON cannot be
//    stored in a jsonb column: that record is dropped.
//  - JSON comes back as jsonb prints it: equal as JSON to what was written, but with jsonb's
//    key order and spacing.
//
// Connection: one persistent libpq connection per store object, non-blocking with a deadline
// on every step, TLS verified by default (sslmode verify-full). The password is passed to
// libpq as a parameter of its own and never appears in a message.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "fastret/job_store.hpp"
#include "fastret/record.hpp"
#include "fastret/sink.hpp"

namespace fastret {

// How to reach the database and what the store may do there.
struct pg_store_config {
    // libpq connection parameters. Those left unset take their value from `dsn` when it names
    // them, else the defaults in brackets; those set override `dsn`.
    std::optional<std::string> host;     // ["localhost"]; a path starting with / is a socket dir
    std::optional<std::string> port;     // ["5432"]
    std::optional<std::string> dbname;   // ["salt"]
    std::optional<std::string> user;     // ["salt"]
    std::optional<std::string> sslmode;  // ["verify-full"]
    std::string password;                // empty: none given (libpq may use PGPASSWORD, .pgpass)
    std::string sslrootcert, sslcert, sslkey;  // empty: not given
    std::string sslcrl;  // certificate revocation list file; empty: none (must exist if given)
    std::string dsn;  // a libpq connection string or URI; empty: none
    int connect_timeout_ms = 3000;     // longest connection attempt
    int statement_timeout_ms = 30000;  // server-side statement_timeout; also the longest a
                                       // round trip may go without any progress
    bool create_schema = true;  // create/upgrade the schema on open when it is incomplete
    bool archive = false;       // clean_old_jobs moves rows to the *_archive tables
};

// The schema's DDL: tables, columns and indexes (what a store creates on open), one statement
// per element, each idempotent.
const std::vector<std::string>& postgres_schema_statements();

// The schema's DDL plus a writer role (LOGIN; SELECT/INSERT on the three tables, UPDATE of
// the jids columns writes change, DELETE for clean_old_jobs, INSERT/SELECT on the archive
// tables, USAGE on the events sequence) and a reader role (LOGIN; SELECT only), both created
// if absent, without a password (set one with ALTER ROLE). Role names must be lowercase plain
// identifiers ([a-z_][a-z0-9_]*, at most 63 characters) and differ; config_error otherwise.
// For `fastret schema postgres` (and psql).
std::string postgres_schema(const std::string& writer_role, const std::string& reader_role);

// The store's configuration from a postgres sink's validated options (see
// sinks/postgres_sink.cpp for the table): an option left at its default does not override the
// same parameter in `dsn`.
pg_store_config postgres_store_config(const options& opts);

class pg_store final : public job_store {
public:
    // Connects (at most connect_timeout_ms) and checks the schema; when it is incomplete and
    // create_schema is set, creates what is missing in one transaction under an advisory lock
    // (several processes may open at once). Throws store_error: retry when the server cannot
    // be reached (refused, timed out, shutting down), fatal for refused credentials, a TLS
    // failure (certificate not verified, no TLS on the server), a missing database, an invalid
    // dsn, or a schema that is incomplete and may not be created here ("schema missing: run
    // `fastret schema postgres --apply`"). Blocking.
    explicit pg_store(pg_store_config config);
    ~pg_store() override;
    pg_store(const pg_store&) = delete;
    pg_store& operator=(const pg_store&) = delete;

    // Writes a batch in one transaction and one round trip (pipelined; returns and events by
    // prepared multi-row INSERT ... VALUES ... ON CONFLICT DO NOTHING of up to 128 rows each).
    // Outcomes:
    //  - ok once COMMIT is acknowledged;
    //  - retry: connection lost or timed out (the connection is reopened by the next write),
    //    serialization failure/deadlock, resources, shutdown, lock or statement timeout, a
    //    read-only server (failover);
    //  - drop-class errors (data exceptions, constraints, program limits) on a batch of several
    //    records: the batch is written again under savepoints, halving the ranges that fail,
    //    so that exactly the records at fault are left out: ok with `dropped` and the first
    //    error; a single record that cannot be stored: drop;
    //  - fatal: schema missing or changed, privileges, credentials, TLS.
    // Records of an unknown kind, or with a payload over 512 MB, are left out without being
    // sent (counted in `dropped`). noexcept; blocking for at most the timeouts (name
    // resolution of `host` excepted: libpq resolves it synchronously).
    write_result write(std::span<const record> batch) noexcept override;

    // Reads (see job_store.hpp). They reconnect once when the connection was lost, and throw
    // store_error (status as for write) when the server cannot answer.
    std::optional<std::string> get_load(const std::string& jid) override;
    std::optional<std::string> get_minions_of(const std::string& jid) override;
    std::vector<std::pair<std::string, std::string>> get_returns(const std::string& jid) override;
    std::vector<std::pair<std::string, std::string>> get_jobs(std::size_t limit = 0,
                                                              bool skip_find_job = false) override;
    std::vector<std::string> get_minion_ids() override;
    std::vector<std::pair<std::string, std::string>> get_fun(const std::string& fun) override;
    std::optional<std::string> get_endtime(const std::string& jid) override;
    // One transaction: jobs (jids.alter_time) older than the cutoff with all their returns,
    // events older than it, and returns older than it whose job is gone. With `archive`, the
    // rows are moved into the *_archive tables in the same transaction.
    std::uint64_t clean_old_jobs(std::int64_t cutoff_us) override;
    // Tag glob: `*` and `?` (every other character literal), as SQL LIKE with escaping.
    std::vector<std::pair<std::string, std::string>> get_events(const std::string& tag_glob,
                                                                std::size_t limit) override;
    std::uint64_t count(const std::string& table) override;

    // Connects as `config` says and runs postgres_schema(writer_role, reader_role) in one
    // transaction under the schema's advisory lock, then disconnects (for `fastret schema
    // postgres --apply`: needs a user allowed to create tables and roles, and works whatever
    // state the schema is in). Throws config_error for bad role names, store_error otherwise
    // (as the constructor; "permission denied" is fatal).
    static void apply_schema(const pg_store_config& config, const std::string& writer_role,
                             const std::string& reader_role);

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace fastret
