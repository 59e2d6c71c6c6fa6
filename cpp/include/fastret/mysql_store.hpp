// The job cache and event store in MariaDB (MySQL protocol, MariaDB Connector/C).
//
// Schema: saltext-mysql's tables and columns, so that queries written for the stock `mysql`
// returner keep working, plus what fastret needs (see mysql_schema() for the DDL):
//   jids(jid, load, | minions, endtime, has_load, fun, tgt, tgt_type, user, alter_time)
//   salt_returns(fun, jid, return, id, success, full_ret, alter_time, | record_id, retcode)
//   salt_events(id, tag, data, alter_time, master_id, | record_id)
//   and jids_archive, salt_returns_archive, salt_events_archive of the same shape.
// The stock columns are filled as the stock returner fills them: `return` is the "return"
// member of full_ret, success is '1' or '0', master_id is the event's master. All tables are
// utf8mb4 with a binary, no-pad collation (ids and tags compare exactly, 4-byte UTF-8 fits);
// alter_time is TIMESTAMP(6), UTC, the record's creation time (clamped to TIMESTAMP's range,
// 1970-01-01 00:00:01 .. 2038-01-19 03:14:07). A job row created by a minion list or an end
// time before its load carries the load '{}' and has_load = 0 until the load arrives.
//
// Writes are idempotent by record id (events: record id and time), with
// INSERT ... ON DUPLICATE KEY UPDATE, so at-least-once delivery never duplicates a row; a
// load is inserted only if the jid has none; minion lists are merged (sorted, distinct
// strings); the end time is set (see fastret/job_store.hpp).
//
// Requires MariaDB 10.6 or later (JSON_TABLE, ADD COLUMN/CREATE INDEX IF NOT EXISTS).
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

// How the client checks the server's TLS certificate (the libmysqlclient ssl-mode names).
enum class mysql_ssl_mode {
    disabled,         // plain TCP: only for a trusted network (or a unix socket)
    required,         // TLS, certificate not checked (encryption without authentication)
    verify_ca,        // TLS, certificate chain checked against ssl_ca (required), name not
    verify_identity,  // TLS, chain (ssl_ca, or the system CAs) and host name checked: default
};

struct mysql_config {
    std::string host = "localhost";  // always TCP (also for "localhost") unless unix_socket
    unsigned port = 3306;
    std::string unix_socket;  // non-empty: connect through this socket, host/port unused
    std::string db = "salt";
    std::string user = "salt";
    std::string password;  // secret: never in a message
    std::string ssl_ca;    // CA file (PEM); empty: the system's CAs
    std::string ssl_cert;  // client certificate (mutual TLS), with ssl_key
    std::string ssl_key;
    mysql_ssl_mode ssl_mode = mysql_ssl_mode::verify_identity;
    // The client library counts in whole seconds: each is rounded up to one.
    unsigned connect_timeout_ms = 5000;
    unsigned read_timeout_ms = 30000;  // also bounds every statement's wait for a reply
    unsigned write_timeout_ms = 30000;
    bool create_schema = true;  // create (or upgrade) the schema on open when incomplete
    bool archive = false;       // clean_old_jobs moves rows to the *_archive tables
    // Events are written by one prepared INSERT with an array of parameter sets per request
    // (COM_STMT_BULK_EXECUTE); multi-row INSERT text when off or when the server lacks it.
    bool bulk_events = true;
};

// The schema's DDL: idempotent (every statement can run again; on a database created by the
// stock saltext-mysql returner it converts the tables to utf8mb4 and TIMESTAMP(6) once and
// adds fastret's columns and indexes), then two roles created if absent: `writer_role`
// (SELECT, INSERT and UPDATE on the six tables, which MariaDB requires for
// INSERT ... ON DUPLICATE KEY UPDATE; DELETE on the three live tables for clean_old_jobs; no
// DDL) and `reader_role` (SELECT only). Statements end with ";\n", so
// the text can be piped into the mariadb client with the database selected. Role names must
// be plain identifiers ([A-Za-z_][A-Za-z0-9_]*, at most 64 characters, distinct, not
// NONE/PUBLIC): config_error otherwise.
std::string mysql_schema(const std::string& writer_role, const std::string& reader_role);

// The configuration from a mysql sink's validated options (see mysql_sink_options()); throws
// config_error for options that contradict each other (verify_ca without ssl_ca, a client
// certificate without its key).
mysql_config mysql_config_from(const options& opts);

// Connects with `config` and runs mysql_schema(writer_role, reader_role) (for
// `fastret schema mysql --apply`; needs CREATE, ALTER, CREATE ROLE and GRANT OPTION, so it
// is meant for an administrator's account). Throws config_error (role names) or store_error.
void apply_mysql_schema(const mysql_config& config, const std::string& writer_role,
                        const std::string& reader_role);

class mysql_store final : public job_store {
public:
    // Connects (TLS per ssl_mode), sets up the session (utf8mb4, UTC, strict SQL mode, READ
    // COMMITTED, a lock wait shorter than the read timeout) and checks the schema; when it is
    // incomplete and create_schema is set, applies mysql_schema()'s tables under a named lock
    // (one creator at a time). Blocks for at most the connect timeout plus the DDL's time.
    // Throws store_error: retry (server unreachable, too many connections, shutting down) or
    // fatal (credentials refused, database missing, TLS refused or certificate rejected,
    // schema missing without the privilege to create it). Messages never contain the password.
    explicit mysql_store(mysql_config config);
    ~mysql_store() override;
    mysql_store(const mysql_store&) = delete;
    mysql_store& operator=(const mysql_store&) = delete;

    // Writes the batch in one transaction: one multi-row INSERT per table (split only to stay
    // under the server's max_allowed_packet), sent as one multi-statement round trip when it
    // fits in a packet. ok once committed. A batch that fails with a drop-class error (value
    // too long, invalid string, out of range) is written again record by record under
    // savepoints: ok with `dropped` counting the records left out; a record too large for
    // max_allowed_packet is left out the same way. retry: connection lost (the next write
    // reconnects), lock wait timeout, deadlock, too many connections, shutdown. fatal: schema
    // gone, privileges revoked, credentials refused. Thread-safe; blocks for at most the
    // timeouts (connect + write + read).
    write_result write(std::span<const record> batch) noexcept override;

    // Job-cache reads (see fastret/job_store.hpp). A read that finds the connection lost
    // reconnects and runs once more (reads are idempotent). Throws store_error.
    std::optional<std::string> get_load(const std::string& jid) override;
    std::optional<std::string> get_minions_of(const std::string& jid) override;
    // The latest return per minion (by alter_time; equal times: by record id).
    std::vector<std::pair<std::string, std::string>> get_returns(const std::string& jid) override;
    std::vector<std::pair<std::string, std::string>> get_jobs(std::size_t limit = 0,
                                                              bool skip_find_job = false) override;
    std::vector<std::string> get_minion_ids() override;
    std::vector<std::pair<std::string, std::string>> get_fun(const std::string& fun) override;
    std::optional<std::string> get_endtime(const std::string& jid) override;
    // One transaction: with archive set, the rows are first copied to the *_archive tables;
    // then the returns of expiring jobs, the jobs, old events and old returns without a job
    // are deleted. Returns the rows deleted. Throws store_error.
    std::uint64_t clean_old_jobs(std::int64_t cutoff_us) override;
    // The glob's `*` and `?` become LIKE's `%` and `_`; every other character (`%`, `_`, `\`
    // included) matches itself. Case-sensitive.
    std::vector<std::pair<std::string, std::string>> get_events(const std::string& tag_glob,
                                                                std::size_t limit) override;
    std::uint64_t count(const std::string& table) override;

    // The server's max_allowed_packet as read at the last connect (bytes).
    std::uint64_t max_packet() const noexcept;

    // Batches committed with their events sent as arrays of parameter sets (bulk_events).
    std::uint64_t bulk_batches() const noexcept;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace fastret
