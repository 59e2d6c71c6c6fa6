// The PostgreSQL job cache and event store (see fastret/pg_store.hpp).
//
// libpq is used non-blocking: every step (connect, send, each result) waits in poll() with a
// deadline, so a server that stops answering costs at most the configured timeouts, never a
// hung thread. Every exchange is one pipeline (statements queued, one Sync, results read in
// order): a batch is BEGIN, the per-jid statements, multi-row INSERTs for returns and events,
// COMMIT, in a single round trip.
#include "fastret/pg_store.hpp"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string_view>

namespace fastret {

namespace {

using steady = std::chrono::steady_clock;

// ---- error classification ------------------------------------------------------------------

bool contains(std::string_view text, std::string_view what) noexcept {
    return text.find(what) != std::string_view::npos;
}

// Failures without a SQLSTATE (while connecting, or of the connection) that no retry can
// cure: credentials, TLS verification, a missing database or role, bad TLS files or options.
// libpq gives no SQLSTATE for them, so its (English) messages are matched.
bool is_permanent_connect_failure(std::string_view msg) noexcept {
    static constexpr std::string_view k_permanent[] = {
        "authentication failed",     // password, SCRAM, certificate, ident, ...
        "no pg_hba.conf entry",      // the server refuses this user/database/address
        "pg_hba.conf rejects",       //
        "does not exist",            // database or role
        "no password supplied",      // the server wants one and none is configured
        "password is required",      //
        "is not permitted to log in",
        "certificate verify failed",  // server certificate not signed by sslrootcert
        "does not match host name",   // verify-full: certificate for another name
        "does not support SSL",       // no TLS on the server, sslmode demands it
        "root certificate file",      // verify-ca/verify-full without a CA file
        "could not read root certificate",
        "certificate file",           // client certificate unreadable
        "private key",                // client key unreadable, wrong or too open
        "alert unknown ca",           // the server does not accept our client certificate
        "alert bad certificate",
        "alert certificate required",
        "invalid sslmode value",
        "invalid connection option",
        "invalid integer value",
        "invalid port number",
    };
    for (auto p : k_permanent)
        if (contains(msg, p)) return true;
    return false;
}

// The one place where PostgreSQL failures become sink outcomes.
//  - retry: connection exceptions (08), serialization failure/deadlock (40), insufficient
//    resources (53), system errors such as I/O (58), shutdown or startup in progress
//    (57P01-57P03), lock not available (55P03), statement timeout/cancel (57014), a read-only
//    server (25006: writes reached a standby after a failover); and every connection-level
//    failure that is not permanent (refused, timed out, reset, name resolution);
//  - drop: this data can never be stored: data exceptions (22: too long, not JSON, bad
//    encoding), integrity constraints (23), program limits (54: index row too big);
//  - fatal: everything else, in particular credentials (28), schema missing or different and
//    privileges (42), unknown database (3D000), TLS and configuration failures: the sink stops
//    and keeps its records in the spool until someone acts.
write_status classify(std::string_view sqlstate, std::string_view message) noexcept {
    if (sqlstate.size() == 5) {
        const auto cls = sqlstate.substr(0, 2);
        if (cls == "08" || cls == "40" || cls == "53" || cls == "58") return write_status::retry;
        if (sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03" ||
            sqlstate == "55P03" || sqlstate == "57014" || sqlstate == "25006")
            return write_status::retry;
        if (cls == "22" || cls == "23" || cls == "54") return write_status::drop;
        return write_status::fatal;  // 28, 42, 3D000, 3F000, XX, ...
    }
    return is_permanent_connect_failure(message) ? write_status::fatal : write_status::retry;
}

struct pg_error {
    write_status status = write_status::retry;
    std::string sqlstate;
    std::string message;
    bool connection_lost = false;  // the connection is unusable (or in an unknown state)
};

// libpq's messages end with a newline and put hints on indented lines: one line, no doubled
// spaces after "FATAL:".
std::string one_line(std::string_view raw) {
    std::string out;
    out.reserve(raw.size());
    for (char c : raw) {
        if (c == '\n' || c == '\r' || c == '\t') c = ' ';
        if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
        out += c;
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
}

// ---- binary encodings ------------------------------------------------------------------------

constexpr Oid k_int8 = 20, k_text = 25, k_jsonb = 3802, k_timestamptz = 1184;
constexpr std::int64_t k_pg_epoch_us = 946684800000000LL;  // 2000-01-01, Unix microseconds

void put32(std::string& out, std::uint32_t v) {
    v = htonl(v);
    out.append(reinterpret_cast<const char*>(&v), 4);
}
void put64(std::string& out, std::int64_t v) {
    put32(out, static_cast<std::uint32_t>(static_cast<std::uint64_t>(v) >> 32));
    put32(out, static_cast<std::uint32_t>(static_cast<std::uint64_t>(v)));
}

// PostgreSQL text cannot hold a NUL byte: each one becomes the six characters `\u0000`.
void append_text(std::string& out, std::string_view s) {
    if (std::memchr(s.data(), 0, s.size()) == nullptr) {
        out.append(s);
        return;
    }
    for (char c : s) {
        if (c == '\0')
            out.append("\\u0000");
        else
            out += c;
    }
}

// jsonb cannot hold U+0000: the escape `\u0000` is rewritten as `\\u0000`, a string holding
// the six characters of the escape. Other escapes (including `\\u0000`, an escaped backslash
// followed by "u0000") are kept as they are.
void append_json(std::string& out, std::string_view json) {
    if (json.find("\\u0000") == std::string_view::npos) {
        out.append(json);
        return;
    }
    for (std::size_t i = 0; i < json.size(); ++i) {
        char c = json[i];
        if (c != '\\' || i + 1 >= json.size()) {
            out += c;
            continue;
        }
        if (json.compare(i + 1, 5, "u0000") == 0) {
            out.append("\\\\u0000");
            i += 5;
        } else {
            out += c;
            out += json[++i];
        }
    }
}

std::string text_value(std::string_view s) {
    std::string out;
    append_text(out, s);
    return out;
}

std::string timestamptz_value(std::int64_t unix_us) {
    std::string out;
    put64(out, unix_us - k_pg_epoch_us);
    return out;
}

// ---- schema ----------------------------------------------------------------------------------

// pgjsonb's stock tables with their stock column types (so CREATE ... IF NOT EXISTS is a no-op
// on a stock database), except two that are wider when fastret creates the table: fun (stock
// varchar(50)) and tag (stock varchar(255): a tag holds a minion id, which may be that long
// alone). Then what fastret adds, each step idempotent.
const std::vector<std::string> k_schema = {
    "CREATE TABLE IF NOT EXISTS jids ("
    "jid varchar(255) NOT NULL PRIMARY KEY, load jsonb NOT NULL)",
    // A stock database gets alter_time = the time of the upgrade for its existing jobs: they
    // are kept for keep_jobs from then on, not lost at once.
    "ALTER TABLE jids ADD COLUMN IF NOT EXISTS minions jsonb,"
    " ADD COLUMN IF NOT EXISTS endtime text,"
    " ADD COLUMN IF NOT EXISTS alter_time timestamptz DEFAULT now()",
    // get_jobs pages newest jid first in byte order, whatever the database's collation.
    "CREATE INDEX IF NOT EXISTS idx_jids_jid_c ON jids (jid COLLATE \"C\")",
    "CREATE INDEX IF NOT EXISTS idx_jids_alter_time ON jids (alter_time)",

    "CREATE TABLE IF NOT EXISTS salt_returns ("
    "fun varchar(255) NOT NULL, jid varchar(255) NOT NULL, \"return\" jsonb NOT NULL,"
    " id varchar(255) NOT NULL, success varchar(10) NOT NULL, full_ret jsonb NOT NULL,"
    " alter_time timestamptz DEFAULT now())",
    "ALTER TABLE salt_returns ADD COLUMN IF NOT EXISTS record_id text,"
    " ADD COLUMN IF NOT EXISTS retcode bigint",
    // Re-delivery of a return is a no-op (ON CONFLICT (record_id) DO NOTHING). Stock rows have
    // no record id (NULL), which a unique index allows any number of times.
    "CREATE UNIQUE INDEX IF NOT EXISTS idx_salt_returns_record_id ON salt_returns (record_id)",
    "CREATE INDEX IF NOT EXISTS idx_salt_returns_id ON salt_returns (id)",
    "CREATE INDEX IF NOT EXISTS idx_salt_returns_jid ON salt_returns (jid)",
    "CREATE INDEX IF NOT EXISTS idx_salt_returns_fun_id_time ON salt_returns (fun, id, alter_time)",
    "CREATE INDEX IF NOT EXISTS idx_salt_returns_alter_time ON salt_returns (alter_time)",

    // The stock sequence name, so that the writer role's grant is the same on both.
    "CREATE SEQUENCE IF NOT EXISTS seq_salt_events_id",
    "CREATE TABLE IF NOT EXISTS salt_events ("
    "id bigint NOT NULL DEFAULT nextval('seq_salt_events_id') PRIMARY KEY, tag text NOT NULL,"
    " data jsonb NOT NULL, alter_time timestamptz DEFAULT now(), master_id varchar(255) NOT NULL)",
    "ALTER TABLE salt_events ADD COLUMN IF NOT EXISTS record_id text",
    // Events are keyed by (time, record id): inserts append to this index instead of landing
    // on random pages (a record id is a hash), and an event's time is fixed when it is made,
    // so a re-delivery hits the same key. The time column also serves retention and
    // newest-first reads.
    "CREATE UNIQUE INDEX IF NOT EXISTS idx_salt_events_time_record_id"
    " ON salt_events (alter_time, record_id)",
    "CREATE INDEX IF NOT EXISTS idx_salt_events_tag ON salt_events (tag)",

    // Archive tables (clean_old_jobs with archive): the same columns; a stock archive table
    // (made by pgjsonb's archive_to_table from the stock columns) gets fastret's added.
    "CREATE TABLE IF NOT EXISTS jids_archive (LIKE jids)",
    "ALTER TABLE jids_archive ADD COLUMN IF NOT EXISTS minions jsonb,"
    " ADD COLUMN IF NOT EXISTS endtime text, ADD COLUMN IF NOT EXISTS alter_time timestamptz",
    "CREATE TABLE IF NOT EXISTS salt_returns_archive (LIKE salt_returns)",
    "ALTER TABLE salt_returns_archive ADD COLUMN IF NOT EXISTS record_id text,"
    " ADD COLUMN IF NOT EXISTS retcode bigint",
    "CREATE TABLE IF NOT EXISTS salt_events_archive (LIKE salt_events)",
    "ALTER TABLE salt_events_archive ADD COLUMN IF NOT EXISTS record_id text",
};

// What the store needs to find (columns as table.column, and indexes by name): anything
// missing means the schema is created or upgraded on open (or is reported fatal).
constexpr std::string_view k_schema_objects[] = {
    "jids.jid", "jids.load", "jids.minions", "jids.endtime", "jids.alter_time",
    "idx_jids_jid_c", "idx_jids_alter_time",
    "salt_returns.fun", "salt_returns.jid", "salt_returns.return", "salt_returns.id",
    "salt_returns.success", "salt_returns.full_ret", "salt_returns.alter_time",
    "salt_returns.record_id", "salt_returns.retcode",
    "idx_salt_returns_record_id", "idx_salt_returns_id", "idx_salt_returns_jid",
    "idx_salt_returns_fun_id_time", "idx_salt_returns_alter_time",
    "seq_salt_events_id",
    "salt_events.id", "salt_events.tag", "salt_events.data", "salt_events.alter_time",
    "salt_events.master_id", "salt_events.record_id",
    "idx_salt_events_time_record_id", "idx_salt_events_tag",
    "jids_archive.minions", "jids_archive.endtime", "jids_archive.alter_time",
    "salt_returns_archive.record_id", "salt_returns_archive.retcode",
    "salt_events_archive.record_id",
};

// The missing objects of k_schema_objects, comma-separated (empty: complete).
std::string schema_probe_sql() {
    std::string list;
    for (auto name : k_schema_objects) {
        if (!list.empty()) list += ',';
        list += '\'';
        list += name;
        list += '\'';
    }
    return "SELECT coalesce(string_agg(x, ', '), '') FROM unnest(ARRAY[" + list +
           "]::text[]) AS x WHERE CASE WHEN strpos(x, '.') > 0 THEN NOT EXISTS ("
           "SELECT 1 FROM pg_catalog.pg_attribute a"
           " WHERE a.attrelid = to_regclass(split_part(x, '.', 1))"
           " AND a.attname = split_part(x, '.', 2) AND a.attnum > 0 AND NOT a.attisdropped)"
           " ELSE to_regclass(x) IS NULL END";
}

// Serializes schema changes of every fastret process on the database ('fastret' in ASCII).
constexpr const char* k_schema_lock = "SELECT pg_advisory_xact_lock(28817596127274356)";

bool is_plain_role_name(const std::string& name) {
    if (name.empty() || name.size() > 63) return false;
    if (!(name[0] == '_' || (name[0] >= 'a' && name[0] <= 'z'))) return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return c == '_' || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    });
}

std::vector<std::string> role_statements(const std::string& writer, const std::string& reader) {
    for (const auto* role : {&writer, &reader})
        if (!is_plain_role_name(*role))
            throw config_error("postgres schema: role name '" + *role +
                               "' is not a plain identifier (lowercase letters, digits and _, "
                               "not starting with a digit, at most 63 characters)");
    if (writer == reader)
        throw config_error("postgres schema: the writer and reader roles must differ");
    // The names are validated above; they are quoted all the same.
    const std::string w = "\"" + writer + "\"", r = "\"" + reader + "\"";
    auto create = [](const std::string& name, const std::string& quoted) {
        return "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '" +
               name + "') THEN CREATE ROLE " + quoted + " LOGIN; END IF; END $$";
    };
    return {
        create(writer, w),
        create(reader, r),
        "GRANT SELECT, INSERT, DELETE ON jids, salt_returns, salt_events TO " + w,
        // save_load fills a placeholder row, save_minions merges, update_endtime sets.
        "GRANT UPDATE (load, minions, endtime, alter_time) ON jids TO " + w,
        "GRANT SELECT, INSERT ON jids_archive, salt_returns_archive, salt_events_archive TO " + w,
        "GRANT USAGE ON SEQUENCE seq_salt_events_id TO " + w,
        "GRANT SELECT ON jids, salt_returns, salt_events, jids_archive, salt_returns_archive,"
        " salt_events_archive TO " +
            r,
    };
}

// ---- statements --------------------------------------------------------------------------------

// Prepared once per connection, with typed parameters (so no literal ever carries a value).
struct prepared {
    std::string name;
    std::string sql;
    std::vector<Oid> types;
};

// A jids row whose load is the placeholder (JSON null: the row was made by a minion list or
// an end time before the load arrived).
#define FASTRET_NO_LOAD(col) "jsonb_typeof(" col ") = 'null'"

// Insert-if-absent for the load: fills a placeholder row, never overwrites a real load.
const prepared k_save_load = {
    "fastret_save_load",
    "INSERT INTO jids (jid, load, alter_time) VALUES ($1, $2, $3)"
    " ON CONFLICT (jid) DO UPDATE SET load = excluded.load, alter_time = excluded.alter_time"
    " WHERE " FASTRET_NO_LOAD("jids.load"),
    {k_text, k_jsonb, k_timestamptz}};

// The string elements of a jsonb value that is an array (nothing for anything else).
#define FASTRET_STRINGS_OF(x)                                                         \
    "SELECT e #>> '{}' AS v FROM jsonb_array_elements(CASE WHEN jsonb_typeof(" x      \
    ") = 'array' THEN " x " ELSE '[]'::jsonb END) AS e WHERE jsonb_typeof(e) = 'string'"
// Sorted in byte order (as sqlite_store), without duplicates.
#define FASTRET_SORTED_ARRAY(from) \
    "(SELECT coalesce(jsonb_agg(v ORDER BY v COLLATE \"C\"), '[]'::jsonb) FROM (" from ") AS s)"

// Union of the stored minion list and the new one.
const prepared k_save_minions = {
    "fastret_save_minions",
    "INSERT INTO jids (jid, load, minions, alter_time) VALUES ($1, 'null'::jsonb, "
    FASTRET_SORTED_ARRAY("SELECT DISTINCT v FROM (" FASTRET_STRINGS_OF("$2") ") AS n") ", $3)"
    " ON CONFLICT (jid) DO UPDATE SET minions = "
    FASTRET_SORTED_ARRAY(FASTRET_STRINGS_OF("jids.minions") " UNION "
                         FASTRET_STRINGS_OF("excluded.minions")),
    {k_text, k_jsonb, k_timestamptz}};

// The payload is a JSON string; its text value is stored.
const prepared k_save_endtime = {
    "fastret_save_endtime",
    "INSERT INTO jids (jid, load, endtime, alter_time) VALUES ($1, 'null'::jsonb, $2 #>> '{}', $3)"
    " ON CONFLICT (jid) DO UPDATE SET endtime = excluded.endtime",
    {k_text, k_jsonb, k_timestamptz}};

// Returns and events go in by multi-row INSERT ... VALUES ... ON CONFLICT DO NOTHING, which
// makes re-delivery (and the same record twice in a batch) a no-op. Measured against unnest()
// of binary arrays and COPY into a temporary table, it was the fastest idempotent way (see
// bench/pg_write_paths.cpp). A batch takes statements of k_bulk_rows rows and, for the rest,
// of the powers of two below, all prepared once per connection.
constexpr std::size_t k_bulk_rows = 128;

// `return` and success are filled as the stock returner fills them ($5, full_ret, is
// converted once at bind time however often the statement refers to it).
const std::vector<Oid> k_return_row_types = {k_text, k_text, k_text, k_text, k_jsonb,
                                              k_timestamptz, k_text, k_int8};
const std::vector<Oid> k_event_row_types = {k_text, k_jsonb, k_timestamptz, k_text, k_text};

std::string bulk_sql(bool returns, std::size_t rows) {
    std::string sql =
        returns ? "INSERT INTO salt_returns (fun, jid, \"return\", id, success, full_ret,"
                  " alter_time, record_id, retcode) VALUES "
                : "INSERT INTO salt_events (tag, data, alter_time, master_id, record_id) VALUES ";
    const std::size_t width = returns ? k_return_row_types.size() : k_event_row_types.size();
    for (std::size_t r = 0; r < rows; ++r) {
        auto p = [&](std::size_t col) { return "$" + std::to_string(r * width + col); };
        sql += r ? ",(" : "(";
        if (returns)
            sql += p(1) + "," + p(2) + ",coalesce(" + p(5) + " -> 'return','null'::jsonb)," +
                   p(3) + "," + p(4) + "," + p(5) + "," + p(6) + "," + p(7) + "," + p(8);
        else
            sql += p(1) + "," + p(2) + "," + p(3) + "," + p(4) + "," + p(5);
        sql += ")";
    }
    sql += returns ? " ON CONFLICT (record_id) DO NOTHING"
                   : " ON CONFLICT (alter_time, record_id) DO NOTHING";
    return sql;
}

// Every statement a session prepares, in the order the schema's DDL and a batch take the
// tables' locks (jids, salt_returns, salt_events): preparing takes them too, and a common
// order cannot deadlock.
const std::vector<prepared>& session_statements() {
    static const std::vector<prepared> all = [] {
        std::vector<prepared> v = {k_save_load, k_save_minions, k_save_endtime};
        for (bool returns : {true, false})
            for (std::size_t n = k_bulk_rows; n >= 1; n /= 2) {
                const auto& row = returns ? k_return_row_types : k_event_row_types;
                prepared p{std::string(returns ? "fastret_returns_" : "fastret_events_") +
                               std::to_string(n),
                           bulk_sql(returns, n), {}};
                for (std::size_t r = 0; r < n; ++r) p.types.insert(p.types.end(), row.begin(), row.end());
                v.push_back(std::move(p));
            }
        return v;
    }();
    return all;
}

const prepared& bulk_statement(bool returns, std::size_t rows) {
    // Laid out by session_statements(): 3 per-jid statements, then sizes k_bulk_rows, /2, ... 1
    // for returns, then the same for events.
    std::size_t index = 0;
    for (std::size_t n = k_bulk_rows; n > rows; n /= 2) ++index;
    std::size_t per_kind = 0;
    for (std::size_t n = k_bulk_rows; n >= 1; n /= 2) ++per_kind;
    return session_statements()[3 + (returns ? 0 : per_kind) + index];
}

// Most payload bytes in one statement: the server takes a statement's parameters in one
// message of at most 1 GB, and holds them in memory while it runs.
constexpr std::size_t k_statement_bytes = 16u << 20;
// A larger payload is left out without being sent: it could never be stored (jsonb's limit is
// 256 MB; below this, the server says so with a drop-class error) and would come near the
// message limit.
constexpr std::size_t k_max_value_bytes = 512u << 20;

// ---- reads -----------------------------------------------------------------------------------

constexpr const char* k_get_load =
    "SELECT load FROM jids WHERE jid = $1 AND NOT " FASTRET_NO_LOAD("load");

constexpr const char* k_get_minions =
    "SELECT minions FROM jids WHERE jid = $1 AND minions IS NOT NULL";

constexpr const char* k_get_returns =
    "SELECT DISTINCT ON (id COLLATE \"C\") id, full_ret FROM salt_returns WHERE jid = $1"
    " ORDER BY id COLLATE \"C\", alter_time DESC NULLS LAST";

constexpr const char* k_get_jobs =
    "SELECT jid, load FROM jids WHERE NOT " FASTRET_NO_LOAD("load")
    " AND (NOT $1 OR load ->> 'fun' IS DISTINCT FROM 'saltutil.find_job')"
    " ORDER BY jid COLLATE \"C\" DESC LIMIT $2";

// Distinct values by skipping through the index (PostgreSQL has no skip scan): one index
// probe per minion instead of reading every return.
constexpr const char* k_get_minion_ids =
    "WITH RECURSIVE m(id) AS ("
    " (SELECT id FROM salt_returns ORDER BY id LIMIT 1)"
    " UNION ALL"
    " SELECT (SELECT r.id FROM salt_returns r WHERE r.id > m.id ORDER BY r.id LIMIT 1)"
    " FROM m WHERE m.id IS NOT NULL)"
    " SELECT id FROM m WHERE id IS NOT NULL ORDER BY id COLLATE \"C\"";

constexpr const char* k_get_fun =
    "WITH RECURSIVE m(id) AS ("
    " (SELECT id FROM salt_returns WHERE fun = $1 ORDER BY id LIMIT 1)"
    " UNION ALL"
    " SELECT (SELECT r.id FROM salt_returns r WHERE r.fun = $1 AND r.id > m.id"
    "  ORDER BY r.id LIMIT 1)"
    " FROM m WHERE m.id IS NOT NULL)"
    " SELECT id, $1 FROM m WHERE id IS NOT NULL ORDER BY id COLLATE \"C\"";

constexpr const char* k_get_endtime =
    "SELECT endtime FROM jids WHERE jid = $1 AND endtime IS NOT NULL";

constexpr const char* k_get_events =
    "SELECT tag, data FROM salt_events WHERE tag LIKE $1 ESCAPE E'\\\\'"
    " ORDER BY alter_time DESC NULLS LAST, id DESC LIMIT $2";

// clean_old_jobs, in this order inside one transaction: the returns of expiring jobs first
// (so none is left without its job), then the jobs, the events, and old returns whose job was
// never stored (or is already gone).
constexpr const char* k_clean[] = {
    "DELETE FROM salt_returns WHERE jid IN (SELECT jid FROM jids WHERE alter_time < $1)",
    "DELETE FROM jids WHERE alter_time < $1",
    "DELETE FROM salt_events WHERE alter_time < $1",
    "DELETE FROM salt_returns r WHERE alter_time < $1"
    " AND NOT EXISTS (SELECT 1 FROM jids j WHERE j.jid = r.jid)",
};

#define FASTRET_JIDS_COLS "jid, load, minions, endtime, alter_time"
#define FASTRET_RETURNS_COLS \
    "fun, jid, \"return\", id, success, full_ret, alter_time, record_id, retcode"
#define FASTRET_EVENTS_COLS "id, tag, data, alter_time, master_id, record_id"

// The same with archive: each DELETE hands its rows to an INSERT into the archive table.
constexpr const char* k_clean_archive[] = {
    "WITH moved AS (DELETE FROM salt_returns WHERE jid IN"
    " (SELECT jid FROM jids WHERE alter_time < $1) RETURNING " FASTRET_RETURNS_COLS ")"
    " INSERT INTO salt_returns_archive (" FASTRET_RETURNS_COLS ") SELECT * FROM moved",
    "WITH moved AS (DELETE FROM jids WHERE alter_time < $1 RETURNING " FASTRET_JIDS_COLS ")"
    " INSERT INTO jids_archive (" FASTRET_JIDS_COLS ") SELECT * FROM moved",
    "WITH moved AS (DELETE FROM salt_events WHERE alter_time < $1 RETURNING " FASTRET_EVENTS_COLS
    ") INSERT INTO salt_events_archive (" FASTRET_EVENTS_COLS ") SELECT * FROM moved",
    "WITH moved AS (DELETE FROM salt_returns r WHERE alter_time < $1"
    " AND NOT EXISTS (SELECT 1 FROM jids j WHERE j.jid = r.jid) RETURNING " FASTRET_RETURNS_COLS
    ") INSERT INTO salt_returns_archive (" FASTRET_RETURNS_COLS ") SELECT * FROM moved",
};

// count(): the table name is looked up, never interpolated.
constexpr std::array<std::pair<std::string_view, const char*>, 3> k_count = {{
    {"jids", "SELECT count(*) FROM jids"},
    {"salt_returns", "SELECT count(*) FROM salt_returns"},
    {"salt_events", "SELECT count(*) FROM salt_events"},
}};

// A shell-style glob (`*`, `?`) as a LIKE pattern with `\` as the escape character.
std::string glob_to_like(std::string_view glob) {
    std::string out;
    out.reserve(glob.size() + 8);
    for (char c : glob) {
        switch (c) {
            case '*': out += '%'; break;
            case '?': out += '_'; break;
            case '%':
            case '_':
            case '\\':
                out += '\\';
                out += c;
                break;
            default: out += c;
        }
    }
    return out;
}

// ---- connection --------------------------------------------------------------------------------

struct result_deleter {
    void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using result_ptr = std::unique_ptr<PGresult, result_deleter>;

// A statement's parameters. Values are borrowed from the records where they go as they are
// (libpq copies them when the statement is queued), owned where they must be rewritten (NUL)
// or encoded (binary timestamps and numbers). Text and JSON go in text format: libpq sends a
// text value up to its terminating NUL, which a std::string always has and (after the
// rewrite) nowhere else.
class params {
public:
    // An lvalue is borrowed: it must outlive the queueing of the statement.
    params& text(const std::string& s) {
        if (std::memchr(s.data(), 0, s.size()) != nullptr) return own(text_value(s), 0);
        return add(s.c_str(), s.size(), 0);
    }
    params& jsonb(const std::string& json) {
        if (json.find("\\u0000") != std::string::npos) {
            std::string fixed;
            append_json(fixed, json);
            return own(std::move(fixed), 0);
        }
        if (std::memchr(json.data(), 0, json.size()) != nullptr)
            return own(text_value(json), 0);  // not JSON anyway: the server will say so
        return add(json.c_str(), json.size(), 0);
    }
    params& text(std::string&& s) { return own(text_value(s), 0); }
    params& jsonb(std::string&&) = delete;  // would dangle: pass an lvalue
    params& timestamptz(std::int64_t unix_us) { return own(timestamptz_value(unix_us), 1); }
    params& boolean(bool b) { return own(std::string(1, b ? '\1' : '\0'), 1); }
    params& int8_or_null(std::optional<std::int64_t> v) {
        if (!v) return add(nullptr, 0, 1);
        std::string out;
        put64(out, *v);
        return own(std::move(out), 1);
    }

    int size() const noexcept { return static_cast<int>(values_.size()); }
    const char* const* values() const noexcept { return values_.data(); }
    const int* lengths() const noexcept { return lengths_.data(); }
    const int* formats() const noexcept { return formats_.data(); }

private:
    params& add(const char* data, std::size_t size, int format) {
        values_.push_back(data);
        lengths_.push_back(static_cast<int>(size));
        formats_.push_back(format);
        return *this;
    }
    params& own(std::string bytes, int format) {
        owned_.push_back(std::move(bytes));  // a deque: earlier values keep their address
        return add(owned_.back().data(), owned_.back().size(), format);
    }
    std::deque<std::string> owned_;
    std::vector<const char*> values_;
    std::vector<int> lengths_;
    std::vector<int> formats_;
};

// Waits until the socket is ready for `events`: 1 ready, 0 deadline passed, -1 error.
int wait_socket(int fd, short events, steady::time_point deadline, short* revents) {
    if (fd < 0) return -1;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now());
        if (left.count() < 0) return 0;
        pollfd p{fd, events, 0};
        int rc = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count() + 1, 60000)));
        if (rc > 0) {
            if (revents) *revents = p.revents;
            return 1;
        }
        if (rc == 0) {
            if (steady::now() >= deadline) return 0;
            continue;
        }
        if (errno != EINTR) return -1;
    }
}

// libpq prints notices to stderr by default; a library must not.
void ignore_notice(void*, const char*) {}

class connection {
public:
    connection() = default;
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection() { close(); }

    PGconn* get() const noexcept { return conn_; }
    bool usable() const noexcept {
        return conn_ && owner_ == ::getpid() && PQstatus(conn_) == CONNECTION_OK;
    }
    void close() noexcept {
        // A forked child shares the parent's socket (and TLS state): finishing the connection
        // here would send the server a Terminate in the parent's session, or garble its TLS
        // stream. The child forgets its copy instead (and opens its own when it needs one).
        if (conn_ && owner_ == ::getpid()) PQfinish(conn_);
        conn_ = nullptr;
    }

    // Connects within timeout_ms. On failure returns the error, the connection stays closed.
    std::optional<pg_error> open(const std::map<std::string, std::string>& keywords,
                                 int timeout_ms) {
        close();
        std::vector<const char*> keys, values;
        for (const auto& [k, v] : keywords) {
            keys.push_back(k.c_str());
            values.push_back(v.c_str());
        }
        keys.push_back(nullptr);
        values.push_back(nullptr);
        PGconn* c = PQconnectStartParams(keys.data(), values.data(), 0);
        if (!c) throw std::bad_alloc();
        const auto deadline = steady::now() + std::chrono::milliseconds(timeout_ms);
        auto failed = [&](std::string msg) {
            PQfinish(c);
            pg_error e;
            e.status = classify({}, msg);
            e.message = std::move(msg);
            e.connection_lost = true;
            return e;
        };
        PostgresPollingStatusType st = PGRES_POLLING_WRITING;
        if (PQstatus(c) == CONNECTION_BAD) return failed(one_line(PQerrorMessage(c)));
        for (;;) {
            if (st == PGRES_POLLING_OK) break;
            if (st == PGRES_POLLING_FAILED) return failed(one_line(PQerrorMessage(c)));
            const int fd = PQsocket(c);
            int rc = wait_socket(fd, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline,
                                 nullptr);
            if (rc == 0)
                return failed("connection timed out after " + std::to_string(timeout_ms) +
                              " ms (connect_timeout_ms)");
            if (rc < 0) return failed(std::string("poll failed: ") + std::strerror(errno));
            st = PQconnectPoll(c);
        }
        PQsetNoticeProcessor(c, &ignore_notice, nullptr);
        if (PQsetnonblocking(c, 1) != 0) return failed(one_line(PQerrorMessage(c)));
        conn_ = c;
        owner_ = ::getpid();
        return std::nullopt;
    }

    // Reads whatever the server sent while the connection was idle: a server that terminated
    // the session (admin command, restart) has sent its FATAL and closed, which shows here as
    // a connection that is no longer usable.
    void poll_idle() noexcept {
        // The message and the end of the stream may need a read each.
        for (int i = 0; i < 4 && usable(); ++i) {
            pollfd p{PQsocket(conn_), POLLIN, 0};
            if (::poll(&p, 1, 0) <= 0) return;
            if (PQconsumeInput(conn_) == 0 || PQstatus(conn_) == CONNECTION_BAD) close();
        }
    }

private:
    PGconn* conn_ = nullptr;
    pid_t owner_ = 0;
};

// One exchange: statements queued in a pipeline, one Sync, results read in order. Waits at
// most idle_timeout for each step of progress (sending, each result).
class round_trip {
public:
    round_trip(connection& conn, std::chrono::milliseconds idle_timeout)
        : conn_(conn), idle_timeout_(idle_timeout) {
        if (!conn_.usable() || PQenterPipelineMode(conn_.get()) != 1) broken_ = true;
    }
    round_trip(const round_trip&) = delete;
    round_trip& operator=(const round_trip&) = delete;
    ~round_trip() {
        // An abandoned exchange leaves the connection in an unknown state.
        if (!finished_) conn_.close();
    }

    // Queues a statement without parameters.
    void exec(const char* sql) { exec(sql, params{}); }

    // Queues a statement with parameters, typed by the server from the SQL.
    void exec(const char* sql, const params& p) {
        if (broken_) return;
        if (PQsendQueryParams(conn_.get(), sql, p.size(), nullptr, p.values(), p.lengths(),
                              p.formats(), 0) != 1)
            broken_ = true;
        ++queued_;
    }

    void prepare(const prepared& stmt) {
        if (broken_) return;
        if (PQsendPrepare(conn_.get(), stmt.name.c_str(), stmt.sql.c_str(),
                          static_cast<int>(stmt.types.size()), stmt.types.data()) != 1)
            broken_ = true;
        ++queued_;
    }

    void exec_prepared(const prepared& stmt, const params& p) {
        if (broken_) return;
        if (PQsendQueryPrepared(conn_.get(), stmt.name.c_str(), p.size(), p.values(), p.lengths(),
                                p.formats(), 0) != 1)
            broken_ = true;
        ++queued_;
    }

    std::size_t queued() const noexcept { return queued_; }

    // Sends everything and reads every result. True when every statement succeeded; else
    // error() says why and failed_at() which statement failed (queued() when none did: the
    // connection broke or timed out).
    bool finish() {
        finished_ = true;
        PGconn* c = conn_.get();
        if (broken_ || PQpipelineSync(c) != 1) return lost(one_line(c ? PQerrorMessage(c) : ""));
        // Flushing: the server may answer while we still send (a large batch), so its answers
        // are read meanwhile, or both sides could wait on full buffers.
        for (auto deadline = steady::now() + idle_timeout_;;) {
            int rc = PQflush(c);
            if (rc == 0) break;
            if (rc < 0) return lost(one_line(PQerrorMessage(c)));
            short revents = 0;
            int w = wait_socket(PQsocket(c), POLLIN | POLLOUT, deadline, &revents);
            if (w == 0) return timed_out();
            if (w < 0) return lost(std::string("poll failed: ") + std::strerror(errno));
            if ((revents & (POLLIN | POLLERR | POLLHUP)) && PQconsumeInput(c) == 0)
                return lost(one_line(PQerrorMessage(c)));
            deadline = steady::now() + idle_timeout_;
        }
        results_.clear();
        results_.resize(queued_);
        failed_at_ = queued_;
        for (std::size_t i = 0; i < queued_; ++i) {
            // One result per statement, then a null that ends it.
            for (bool first = true;; first = false) {
                PGresult* r = nullptr;
                if (!next_result(r)) return false;
                if (!r) {
                    if (first) return lost("postgres: the server's answers ended early");
                    break;
                }
                result_ptr owned(r);
                const auto st = PQresultStatus(r);
                if (st == PGRES_FATAL_ERROR && failed_at_ == queued_) {
                    failed_at_ = i;
                    error_ = error_of(r);
                } else if (st == PGRES_PIPELINE_ABORTED || st == PGRES_FATAL_ERROR) {
                    // skipped after the failure, or a second error: the first one counts
                } else if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
                    return lost("postgres: unexpected COPY state");
                } else if (first) {
                    results_[i] = std::move(owned);
                }
            }
        }
        PGresult* sync = nullptr;
        if (!next_result(sync)) return false;
        result_ptr owned_sync(sync);
        if (!sync || PQresultStatus(sync) != PGRES_PIPELINE_SYNC)
            return lost("postgres: the server's answers are out of step");
        if (PQexitPipelineMode(c) != 1) return lost(one_line(PQerrorMessage(c)));
        if (failed_at_ != queued_ && PQstatus(c) == CONNECTION_BAD) error_->connection_lost = true;
        return failed_at_ == queued_;
    }

    const std::optional<pg_error>& error() const noexcept { return error_; }
    std::size_t failed_at() const noexcept { return failed_at_; }
    PGresult* result(std::size_t i) const noexcept {
        return i < results_.size() ? results_[i].get() : nullptr;
    }

private:
    bool next_result(PGresult*& out) {
        PGconn* c = conn_.get();
        auto deadline = steady::now() + idle_timeout_;
        while (PQisBusy(c)) {
            int w = wait_socket(PQsocket(c), POLLIN, deadline, nullptr);
            if (w == 0) return timed_out();
            if (w < 0) return lost(std::string("poll failed: ") + std::strerror(errno));
            if (PQconsumeInput(c) == 0) {
                // The connection broke; libpq still hands out what it had read, then an error.
                if (!PQisBusy(c)) break;
                return lost(one_line(PQerrorMessage(c)));
            }
            deadline = steady::now() + idle_timeout_;
        }
        out = PQgetResult(c);
        return true;
    }

    static pg_error error_of(const PGresult* r) {
        pg_error e;
        const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        const char* primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        e.sqlstate = state ? state : "";
        // The primary message only: details can quote the row's values.
        e.message = one_line(primary ? primary : PQresultErrorMessage(r));
        if (!e.sqlstate.empty()) e.message += " (SQLSTATE " + e.sqlstate + ")";
        e.status = classify(e.sqlstate, e.message);
        return e;
    }

    // The connection broke (or is in an unknown state): closed. A server error that came
    // before (e.g. 57P01, the session was terminated) is the better explanation and is kept.
    bool lost(std::string msg) {
        if (!error_) {
            pg_error e;
            e.message = msg.empty() ? "connection lost" : std::move(msg);
            e.status = classify({}, e.message);
            error_ = std::move(e);
            failed_at_ = queued_;
        }
        error_->connection_lost = true;
        conn_.close();
        return false;
    }

    bool timed_out() {
        return lost("no answer from the server within " + std::to_string(idle_timeout_.count()) +
                    " ms (statement_timeout_ms); connection closed");
    }

    connection& conn_;
    std::chrono::milliseconds idle_timeout_;
    std::size_t queued_ = 0;
    bool broken_ = false;
    bool finished_ = false;
    std::vector<result_ptr> results_;
    std::size_t failed_at_ = 0;
    std::optional<pg_error> error_;
};

std::string cell(const PGresult* r, int row, int col) {
    return std::string(PQgetvalue(r, row, col), static_cast<std::size_t>(PQgetlength(r, row, col)));
}

std::uint64_t affected(const PGresult* r) {
    const char* n = r ? PQcmdTuples(const_cast<PGresult*>(r)) : "";
    return *n ? std::stoull(n) : 0;
}

bool is_kind_known(record_kind k) noexcept {
    switch (k) {
        case record_kind::job_return:
        case record_kind::job_load:
        case record_kind::job_minions:
        case record_kind::event:
        case record_kind::job_endtime: return true;
    }
    return false;
}

}  // namespace

// ---- the store ---------------------------------------------------------------------------------

struct pg_store::impl {
    pg_store_config cfg;
    std::map<std::string, std::string> keywords;  // libpq connection parameters
    std::vector<std::string> secrets;             // never shown in a message
    std::string where;                            // user@host:port/db for messages
    std::mutex mu;
    connection conn;

    std::chrono::milliseconds idle_timeout() const {
        // The server cancels a statement after statement_timeout; the margin lets its answer
        // (57014) arrive before the client gives up on the connection.
        return std::chrono::milliseconds(cfg.statement_timeout_ms + 2000);
    }

    // "postgres: " + msg, with every secret removed.
    std::string message(std::string_view msg) const {
        std::string out = "postgres: ";
        out.append(msg);
        for (const auto& s : secrets) {
            if (s.empty()) continue;
            for (auto at = out.find(s); at != std::string::npos; at = out.find(s, at + 8))
                out.replace(at, s.size(), "<secret>");
        }
        return out;
    }

    void configure(pg_store_config config) {
        cfg = std::move(config);
        cfg.connect_timeout_ms = std::max(cfg.connect_timeout_ms, 1);
        cfg.statement_timeout_ms = std::max(cfg.statement_timeout_ms, 1);
        build_keywords();
    }

    void build_keywords() {
        const std::map<std::string, std::string> defaults = {
            {"host", "localhost"}, {"port", "5432"}, {"dbname", "salt"},
            {"user", "salt"}, {"sslmode", "verify-full"},
        };
        for (const auto& [k, v] : defaults) keywords[k] = v;
        keywords["application_name"] = "fastret";
        // TLS is the transport security here; libpq would otherwise first try GSSAPI
        // encryption wherever a Kerberos ticket cache exists (a dsn may turn it back on).
        keywords["gssencmode"] = "disable";
        // TCP keepalives find a dead peer on an idle connection; tcp_user_timeout bounds how
        // long sent data may stay unacknowledged (a vanished server or network).
        keywords["keepalives"] = "1";
        keywords["keepalives_idle"] = "30";
        keywords["keepalives_interval"] = "10";
        keywords["keepalives_count"] = "3";
        keywords["tcp_user_timeout"] =
            std::to_string(cfg.connect_timeout_ms + cfg.statement_timeout_ms);
        // libpq's own timeout (whole seconds, at least 2) backs up the store's deadline.
        keywords["connect_timeout"] = std::to_string(std::max(2, (cfg.connect_timeout_ms + 999) / 1000));

        if (!cfg.dsn.empty()) {
            // Parsed here rather than by the connect call so that a malformed string is
            // reported without libpq quoting a piece of it (which may be the password).
            char* err = nullptr;
            PQconninfoOption* opts = PQconninfoParse(cfg.dsn.c_str(), &err);
            if (!opts) {
                if (err) PQfreemem(err);
                throw store_error(write_status::fatal,
                                  "postgres: option 'dsn' is not a valid libpq connection string "
                                  "or URI");
            }
            for (auto* o = opts; o->keyword; ++o) {
                if (!o->val || !*o->val) continue;
                keywords[o->keyword] = o->val;
                if (std::string_view(o->keyword) == "password") secrets.emplace_back(o->val);
            }
            PQconninfoFree(opts);
        }
        auto set = [&](const char* key, const std::optional<std::string>& v) {
            if (v && !v->empty()) keywords[key] = *v;
        };
        set("host", cfg.host);
        set("port", cfg.port);
        set("dbname", cfg.dbname);
        set("user", cfg.user);
        set("sslmode", cfg.sslmode);
        if (!cfg.password.empty()) {
            keywords["password"] = cfg.password;
            secrets.push_back(cfg.password);
        }
        if (!cfg.sslrootcert.empty()) keywords["sslrootcert"] = cfg.sslrootcert;
        if (!cfg.sslcert.empty()) keywords["sslcert"] = cfg.sslcert;
        if (!cfg.sslkey.empty()) keywords["sslkey"] = cfg.sslkey;
        if (!cfg.sslcrl.empty()) keywords["sslcrl"] = cfg.sslcrl;
        // libpq silently skips a CRL file it cannot find: a typo would turn revocation
        // checking off without a word.
        if (auto crl = keywords.find("sslcrl"); crl != keywords.end() && !crl->second.empty() &&
                                                ::access(crl->second.c_str(), R_OK) != 0)
            throw store_error(write_status::fatal,
                              "postgres: sslcrl file '" + crl->second +
                                  "' cannot be read: " + std::strerror(errno));
        // Record fields are UTF-8; the server converts for the database if it must.
        keywords["client_encoding"] = "UTF8";
        where = keywords["user"] + "@" + keywords["host"] + ":" + keywords["port"] + "/" +
                keywords["dbname"];
    }

    // A connection failure explained: what failed and what to change.
    std::string explain_connect_failure(const std::string& raw) const {
        const auto& mode = keywords.at("sslmode");
        if (contains(raw, "certificate verify failed"))
            return message("server certificate verification failed: " + raw +
                           " (check sslrootcert: it must be the CA that signed the server's "
                           "certificate; with sslcrl, the certificate may be revoked)");
        if (contains(raw, "does not match host name"))
            return message("server certificate does not match the host: " + raw +
                           " (connect by a name the certificate holds, or set sslmode verify-ca)");
        if (contains(raw, "does not support SSL"))
            return message("the server does not offer TLS and sslmode is " + mode + ": " + raw +
                           " (enable ssl on the server, or set sslmode to prefer or disable to "
                           "connect without verified TLS)");
        if (contains(raw, "root certificate file"))
            return message("sslmode " + mode + " verifies the server's certificate and needs " +
                           "the CA: set sslrootcert (" + raw + ")");
        if (contains(raw, "authentication failed") || contains(raw, "no password supplied"))
            return message("authentication failed (" + where + "): " + raw +
                           " (check user and pass)");
        return message(raw + " (" + where + ")");
    }

    [[noreturn]] void throw_error(const pg_error& e) const {
        throw store_error(e.status, message(e.message));
    }

    // Opens the connection and makes it ready for writes and reads: session settings, the
    // schema (checked; created or upgraded when allowed), the prepared statements. Without
    // `use`, only the session settings (for running the schema's DDL).
    void open_session(bool use = true) {
        if (auto err = conn.open(keywords, cfg.connect_timeout_ms))
            throw store_error(err->status, explain_connect_failure(err->message));
        try {
            std::string missing;
            {
                round_trip rt(conn, idle_timeout());
                const auto timeout = "SET statement_timeout = " + std::to_string(cfg.statement_timeout_ms);
                rt.exec(timeout.c_str());
                rt.exec("SET client_min_messages = warning");  // no NOTICEs from IF NOT EXISTS
                if (use) rt.exec(schema_probe_sql().c_str());
                if (!rt.finish()) throw_error(*rt.error());
                if (!use) return;
                missing = cell(rt.result(2), 0, 0);
            }
            if (!missing.empty()) {
                if (!cfg.create_schema)
                    throw store_error(write_status::fatal,
                                      message("schema missing or incomplete in " + where +
                                              " (missing: " + missing +
                                              "): run `fastret schema postgres --apply`, or "
                                              "set create_schema"));
                create_schema(missing);
            }
            round_trip rt(conn, idle_timeout());
            for (const auto& p : session_statements()) rt.prepare(p);
            if (!rt.finish()) throw_error(*rt.error());
        } catch (...) {
            conn.close();
            throw;
        }
    }

    // Runs statements in one transaction under the schema lock. With `if_missing`, only when
    // the schema is still incomplete once the lock is held: processes that open a new
    // database together wait for the first one's DDL and then find nothing to do (running
    // it again would lock the tables against their writes, and could deadlock with them).
    void run_ddl(const std::vector<std::string>& statements, std::string missing,
                 bool if_missing) {
        if (if_missing) {
            round_trip rt(conn, idle_timeout());
            rt.exec("BEGIN");
            rt.exec(k_schema_lock);
            rt.exec(schema_probe_sql().c_str());
            if (!rt.finish()) ddl_failed(*rt.error(), missing);
            missing = cell(rt.result(2), 0, 0);
        }
        round_trip rt(conn, idle_timeout());
        if (!if_missing) {
            rt.exec("BEGIN");
            rt.exec(k_schema_lock);
        }
        if (!if_missing || !missing.empty())
            for (const auto& s : statements) rt.exec(s.c_str());
        rt.exec("COMMIT");
        if (!rt.finish()) ddl_failed(*rt.error(), missing);
    }

    [[noreturn]] void ddl_failed(const pg_error& e, const std::string& missing) {
        if (!e.connection_lost) rollback();
        if (e.sqlstate == "42501")  // insufficient_privilege
            throw store_error(write_status::fatal,
                              message("schema missing: run `fastret schema postgres --apply` "
                                      "(user of " + where + " may not create it: " + e.message +
                                      (missing.empty() ? "" : "; missing: " + missing) + ")"));
        throw_error(e);
    }

    void create_schema(const std::string& missing) { run_ddl(k_schema, missing, true); }

    // Leaves no transaction open after a failure (a failed pipeline keeps an explicit
    // transaction in its aborted state until ROLLBACK).
    void rollback() noexcept {
        try {
            if (!conn.usable()) return;
            if (PQtransactionStatus(conn.get()) == PQTRANS_IDLE) return;
            round_trip rt(conn, idle_timeout());
            rt.exec("ROLLBACK");
            if (!rt.finish()) conn.close();
        } catch (...) {
            conn.close();
        }
    }

    // Makes sure there is a usable session; throws store_error.
    void ensure_session() {
        conn.poll_idle();
        if (!conn.usable()) open_session();
    }

    // ---- write path ----

    // Queues the statements that store `batch`: the per-jid statements, then returns and events
    // in bulk statements (they touch other tables, so the order between the three groups does
    // not matter). The per-jid statements go in jid order (a jid's own records keep theirs):
    // writers that share jids then lock the jids rows in the same order and cannot deadlock.
    static void queue_records(round_trip& rt, std::span<const record* const> batch) {
        std::vector<const record*> jobs, returns, events;
        for (const record* r : batch) {
            if (r->kind == record_kind::job_return)
                returns.push_back(r);
            else if (r->kind == record_kind::event)
                events.push_back(r);
            else
                jobs.push_back(r);
        }
        std::stable_sort(jobs.begin(), jobs.end(),
                         [](const record* a, const record* b) { return a->jid < b->jid; });
        for (const record* r : jobs) {
            const prepared& stmt = r->kind == record_kind::job_load      ? k_save_load
                                   : r->kind == record_kind::job_minions ? k_save_minions
                                                                         : k_save_endtime;
            params p;
            p.text(r->jid).jsonb(r->payload).timestamptz(r->ts_us);
            rt.exec_prepared(stmt, p);
        }
        queue_bulk(rt, returns, true);
        queue_bulk(rt, events, false);
    }

    static void queue_bulk(round_trip& rt, const std::vector<const record*>& rows, bool returns) {
        std::vector<std::string> ids;  // computed record ids, for records without one
        ids.reserve(rows.size());
        for (std::size_t from = 0; from < rows.size();) {
            // As many rows as fit in k_statement_bytes (at least one), rounded down to a
            // prepared size.
            std::size_t fit = 0, bytes = 0;
            while (from + fit < rows.size() && fit < k_bulk_rows &&
                   (fit == 0 || bytes + rows[from + fit]->payload.size() <= k_statement_bytes))
                bytes += rows[from + fit++]->payload.size();
            std::size_t n = k_bulk_rows;
            while (n > fit) n /= 2;
            params p;
            for (std::size_t i = from; i < from + n; ++i) {
                const record& r = *rows[i];
                const std::string* id = &r.id;
                if (r.id.empty()) id = &ids.emplace_back(compute_record_id(r));
                if (returns) {
                    static const std::string t = "true", f = "false";
                    p.text(r.fun).text(r.jid).text(r.minion).text(r.success > 0 ? t : f);
                    p.jsonb(r.payload).timestamptz(r.ts_us).text(*id).int8_or_null(r.retcode);
                } else {
                    p.text(r.tag).jsonb(r.payload).timestamptz(r.ts_us).text(r.minion).text(*id);
                }
            }
            rt.exec_prepared(bulk_statement(returns, n), p);
            from += n;
        }
    }

    write_result failure(const pg_error& e) {
        if (e.connection_lost) conn.close();
        return {e.status, message(e.message), 0};
    }

    // The whole batch in one transaction, one round trip.
    std::optional<pg_error> write_all(std::span<const record* const> batch) {
        round_trip rt(conn, idle_timeout());
        rt.exec("BEGIN");
        queue_records(rt, batch);
        rt.exec("COMMIT");
        if (rt.finish()) return std::nullopt;
        pg_error e = *rt.error();
        if (!e.connection_lost) rollback();
        return e;
    }

    // The batch again after a drop-class failure, in one transaction: ranges of records under
    // a savepoint, a failing range halved until the records at fault are found and left out.
    // k bad records in n cost about 2k·log2(n) round trips instead of n.
    write_result write_bisect(std::span<const record* const> batch, write_result res) {
        std::vector<std::pair<std::size_t, std::size_t>> todo;  // [first, last), a stack
        const std::size_t n = batch.size();
        todo.emplace_back(n / 2, n);
        todo.emplace_back(0, n / 2);
        bool begun = false, undo = false;
        while (!todo.empty()) {
            auto [first, last] = todo.back();
            todo.pop_back();
            if (first == last) continue;
            round_trip rt(conn, idle_timeout());
            if (!begun) rt.exec("BEGIN");
            if (undo) {
                rt.exec("ROLLBACK TO SAVEPOINT fastret_range");
                rt.exec("RELEASE SAVEPOINT fastret_range");
            }
            const std::size_t range_start = rt.queued() + 1;
            rt.exec("SAVEPOINT fastret_range");
            queue_records(rt, batch.subspan(first, last - first));
            const std::size_t range_end = rt.queued();
            rt.exec("RELEASE SAVEPOINT fastret_range");
            begun = true;
            undo = false;
            if (rt.finish()) continue;
            const pg_error e = *rt.error();
            const bool in_range = rt.failed_at() >= range_start && rt.failed_at() < range_end;
            if (e.connection_lost || e.status != write_status::drop || !in_range) {
                if (!e.connection_lost) rollback();
                return failure(e);
            }
            undo = true;
            if (last - first == 1) {
                if (res.dropped++ == 0) res.error = message(e.message);
                continue;
            }
            const std::size_t mid = first + (last - first) / 2;
            todo.emplace_back(mid, last);
            todo.emplace_back(first, mid);
        }
        round_trip rt(conn, idle_timeout());
        if (undo) {
            rt.exec("ROLLBACK TO SAVEPOINT fastret_range");
            rt.exec("RELEASE SAVEPOINT fastret_range");
        }
        rt.exec("COMMIT");
        if (!rt.finish()) {
            const pg_error e = *rt.error();
            if (!e.connection_lost) rollback();
            return failure(e);
        }
        return res;
    }

    write_result write(std::span<const record> batch) {
        // Records that no table can take are left out up front (counted, never sent).
        write_result res;
        std::vector<const record*> good;
        good.reserve(batch.size());
        for (const auto& r : batch) {
            std::string why;
            if (!is_kind_known(r.kind))
                why = "unknown record kind " + std::to_string(static_cast<int>(r.kind));
            else if (r.payload.size() > k_max_value_bytes)
                why = "a payload of " + std::to_string(r.payload.size()) +
                      " bytes is more than PostgreSQL can take in one value";
            if (why.empty())
                good.push_back(&r);
            else if (res.dropped++ == 0)
                res.error = message(why);
        }
        if (batch.empty()) return res;
        if (good.empty()) return {write_status::drop, res.error, 0};
        try {
            ensure_session();
        } catch (const store_error& e) {
            return {e.status == write_status::ok ? write_status::retry : e.status, e.what(), 0};
        }
        auto err = write_all(good);
        if (!err) return res;
        if (err->status != write_status::drop || good.size() == 1 || err->connection_lost) {
            auto out = failure(*err);
            // One record was of an unknown kind and the only other one cannot be stored.
            if (out.status == write_status::drop) out.dropped = 0;
            return out;
        }
        return write_bisect(good, std::move(res));
    }

    // ---- reads ----

    // Runs a read exchange, reconnecting once if the connection turns out to be lost.
    template <class Queue, class Use>
    auto read(Queue&& queue, Use&& use) {
        for (int attempt = 0;; ++attempt) {
            ensure_session();
            round_trip rt(conn, idle_timeout());
            queue(rt);
            if (rt.finish()) return use(rt);
            const pg_error e = *rt.error();
            if (e.connection_lost) {
                conn.close();
                if (attempt == 0) continue;
            }
            throw_error(e);
        }
    }

    std::optional<std::string> single(const char* sql, const params& p) {
        return read([&](round_trip& rt) { rt.exec(sql, p); },
                    [](round_trip& rt) -> std::optional<std::string> {
                        PGresult* r = rt.result(0);
                        if (!r || PQntuples(r) == 0 || PQgetisnull(r, 0, 0)) return std::nullopt;
                        return cell(r, 0, 0);
                    });
    }

    std::vector<std::pair<std::string, std::string>> pairs(const char* sql, const params& p) {
        return read([&](round_trip& rt) { rt.exec(sql, p); },
                    [](round_trip& rt) {
                        std::vector<std::pair<std::string, std::string>> out;
                        PGresult* r = rt.result(0);
                        const int n = r ? PQntuples(r) : 0;
                        out.reserve(static_cast<std::size_t>(n));
                        for (int i = 0; i < n; ++i) out.emplace_back(cell(r, i, 0), cell(r, i, 1));
                        return out;
                    });
    }
};

const std::vector<std::string>& postgres_schema_statements() { return k_schema; }

std::string postgres_schema(const std::string& writer_role, const std::string& reader_role) {
    auto roles = role_statements(writer_role, reader_role);
    std::string out =
        "-- fastret schema for PostgreSQL: Salt's pgjsonb tables plus what fastret adds.\n"
        "-- Every statement is idempotent: run it on a new database, again, or on a database\n"
        "-- made by the stock pgjsonb returner (upgraded in place).\n"
        "BEGIN;\n";
    out += std::string(k_schema_lock) + ";\n";
    for (const auto& s : k_schema) out += s + ";\n";
    out += "-- Roles (created without a password: ALTER ROLE ... PASSWORD '...').\n";
    for (const auto& s : roles) out += s + ";\n";
    out += "COMMIT;\n";
    return out;
}

pg_store::pg_store(pg_store_config config) : impl_(std::make_unique<impl>()) {
    impl_->configure(std::move(config));
    std::lock_guard lock(impl_->mu);
    impl_->open_session();
}

pg_store::~pg_store() = default;

write_result pg_store::write(std::span<const record> batch) noexcept {
    try {
        std::lock_guard lock(impl_->mu);
        return impl_->write(batch);
    } catch (const std::bad_alloc&) {
        return {write_status::retry, "postgres: out of memory", 0};
    } catch (...) {
        return {write_status::retry, "postgres: write failed", 0};
    }
}

std::optional<std::string> pg_store::get_load(const std::string& jid) {
    std::lock_guard lock(impl_->mu);
    return impl_->single(k_get_load, params().text(jid));
}

std::optional<std::string> pg_store::get_minions_of(const std::string& jid) {
    std::lock_guard lock(impl_->mu);
    return impl_->single(k_get_minions, params().text(jid));
}

std::vector<std::pair<std::string, std::string>> pg_store::get_returns(const std::string& jid) {
    std::lock_guard lock(impl_->mu);
    return impl_->pairs(k_get_returns, params().text(jid));
}

std::vector<std::pair<std::string, std::string>> pg_store::get_jobs(std::size_t limit,
                                                                    bool skip_find_job) {
    std::lock_guard lock(impl_->mu);
    params p;
    p.boolean(skip_find_job);
    if (limit == 0 || limit > static_cast<std::size_t>(INT64_MAX))
        p.int8_or_null(std::nullopt);  // LIMIT NULL: all
    else
        p.int8_or_null(static_cast<std::int64_t>(limit));
    return impl_->pairs(k_get_jobs, p);
}

std::vector<std::string> pg_store::get_minion_ids() {
    std::lock_guard lock(impl_->mu);
    return impl_->read([](round_trip& rt) { rt.exec(k_get_minion_ids); },
                       [](round_trip& rt) {
                           std::vector<std::string> out;
                           PGresult* r = rt.result(0);
                           const int n = r ? PQntuples(r) : 0;
                           for (int i = 0; i < n; ++i) out.push_back(cell(r, i, 0));
                           return out;
                       });
}

std::vector<std::pair<std::string, std::string>> pg_store::get_fun(const std::string& fun) {
    std::lock_guard lock(impl_->mu);
    return impl_->pairs(k_get_fun, params().text(fun));
}

std::optional<std::string> pg_store::get_endtime(const std::string& jid) {
    std::lock_guard lock(impl_->mu);
    return impl_->single(k_get_endtime, params().text(jid));
}

std::uint64_t pg_store::clean_old_jobs(std::int64_t cutoff_us) {
    std::lock_guard lock(impl_->mu);
    auto& self = *impl_;
    self.ensure_session();
    round_trip rt(self.conn, self.idle_timeout());
    rt.exec("BEGIN");
    params p;
    p.timestamptz(cutoff_us);
    for (const char* sql : self.cfg.archive ? k_clean_archive : k_clean) rt.exec(sql, p);
    rt.exec("COMMIT");
    if (!rt.finish()) {
        const pg_error e = *rt.error();
        if (e.connection_lost)
            self.conn.close();
        else
            self.rollback();
        self.throw_error(e);
    }
    std::uint64_t deleted = 0;
    for (std::size_t i = 1; i <= std::size(k_clean); ++i) deleted += affected(rt.result(i));
    return deleted;
}

std::vector<std::pair<std::string, std::string>> pg_store::get_events(const std::string& tag_glob,
                                                                      std::size_t limit) {
    std::lock_guard lock(impl_->mu);
    params p;
    p.text(glob_to_like(tag_glob));
    if (limit == 0 || limit > static_cast<std::size_t>(INT64_MAX))
        p.int8_or_null(std::nullopt);
    else
        p.int8_or_null(static_cast<std::int64_t>(limit));
    return impl_->pairs(k_get_events, p);
}

std::uint64_t pg_store::count(const std::string& table) {
    const char* sql = nullptr;
    for (const auto& [name, query] : k_count)
        if (name == table) sql = query;
    if (!sql) throw std::invalid_argument("postgres: unknown table for count()");
    std::lock_guard lock(impl_->mu);
    auto n = impl_->single(sql, params{});
    return n ? std::stoull(*n) : 0;
}

void pg_store::apply_schema(const pg_store_config& config, const std::string& writer_role,
                            const std::string& reader_role) {
    auto statements = k_schema;
    auto roles = role_statements(writer_role, reader_role);
    statements.insert(statements.end(), roles.begin(), roles.end());
    impl self;
    self.configure(config);
    self.open_session(false);
    self.run_ddl(statements, "", false);
}

}  // namespace fastret
