// The embedded job cache and event store (see fastret/sqlite_store.hpp).
//
// Two connections per store: the write connection (opened in the constructor, used by
// write() and clean_old_jobs()) and a read connection opened lazily by the first read. In WAL
// mode readers never block the writer and the writer never blocks readers. Each connection is
// guarded by its own mutex, so a store object may be used from any thread.
#include "fastret/sqlite_store.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <exception>
#include <map>
#include <stdexcept>
#include <string_view>
#include <thread>

namespace fastret {

namespace {

// The one place where SQLite result codes become sink outcomes.
//  - retry: transient (another writer holds the lock, the disk is full or failing, the file
//    cannot be opened right now, read-only for the moment, out of memory);
//  - fatal: the store itself is unusable until someone acts (schema missing or different,
//    corruption, not a database, permission or authorization): the sink stops and every
//    record stays in the spool, nothing is thrown away;
//  - drop: this record can never be stored (constraint, too big, type mismatch).
write_status classify(int rc) noexcept {
    switch (rc & 0xff) {  // primary code of an extended result code
        case SQLITE_OK:
        case SQLITE_DONE:
        case SQLITE_ROW: return write_status::ok;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
        case SQLITE_IOERR:
        case SQLITE_FULL:
        case SQLITE_CANTOPEN:
        case SQLITE_PROTOCOL:
        case SQLITE_READONLY:
        case SQLITE_NOMEM: return write_status::retry;
        case SQLITE_CONSTRAINT:
        case SQLITE_TOOBIG:
        case SQLITE_MISMATCH:
        case SQLITE_RANGE: return write_status::drop;
        default: return write_status::fatal;  // ERROR, CORRUPT, NOTADB, PERM, AUTH, SCHEMA, ...
    }
}

// Raised inside the store when a statement fails; carries SQLite's result code.
struct sqlite_failure : store_error {
    int code;
    sqlite_failure(int rc, const std::string& msg)
        : store_error(classify(rc) == write_status::ok ? write_status::fatal : classify(rc), msg),
          code(rc) {}
};

constexpr const char* k_schema[] = {
    "CREATE TABLE IF NOT EXISTS jids ("
    " jid TEXT PRIMARY KEY, load TEXT NOT NULL, minions TEXT, endtime TEXT,"
    " fun TEXT, tgt TEXT, tgt_type TEXT, user TEXT, alter_time INTEGER)",
    "CREATE INDEX IF NOT EXISTS jids_alter_time ON jids(alter_time)",
    "CREATE TABLE IF NOT EXISTS salt_returns ("
    " record_id TEXT PRIMARY KEY, jid TEXT, fun TEXT, id TEXT, success INTEGER,"
    " retcode INTEGER, full_ret TEXT, alter_time INTEGER)",
    "CREATE INDEX IF NOT EXISTS salt_returns_jid ON salt_returns(jid)",
    "CREATE INDEX IF NOT EXISTS salt_returns_id_fun_time ON salt_returns(id, fun, alter_time)",
    // Events arrive by the hundred thousand: rows are keyed by (time, record id), so that
    // inserts append to the index instead of landing at random pages (a record id alone is a
    // hash); measured about 4x the insert rate. A re-delivery carries the record's original
    // time, so it still hits the same key and is ignored. The key's time column also serves
    // retention (clean_old_jobs) and newest-first reads.
    "CREATE TABLE IF NOT EXISTS salt_events ("
    " id INTEGER PRIMARY KEY, record_id TEXT NOT NULL, tag TEXT, data TEXT, master_id TEXT,"
    " alter_time INTEGER NOT NULL, UNIQUE (alter_time, record_id))",
    "CREATE INDEX IF NOT EXISTS salt_events_tag ON salt_events(tag)",
};

// How many of the schema's objects exist already (all present: no write transaction needed).
constexpr const char* k_schema_probe =
    "SELECT count(*) FROM sqlite_master WHERE name IN ('jids', 'jids_alter_time',"
    " 'salt_returns', 'salt_returns_jid', 'salt_returns_id_fun_time', 'salt_events',"
    " 'salt_events_tag')";
constexpr int k_schema_objects = 7;

// A jids row whose load is still the placeholder (created by job_minions or job_endtime).
#define FASTRET_NO_LOAD(col) "(" col " IS NULL OR " col " = '')"

// ---- write path --------------------------------------------------------------------------

constexpr const char* k_insert_return =
    "INSERT OR IGNORE INTO salt_returns"
    " (record_id, jid, fun, id, success, retcode, full_ret, alter_time)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

constexpr const char* k_insert_event =
    "INSERT OR IGNORE INTO salt_events (record_id, tag, data, master_id, alter_time)"
    " VALUES (?1, ?2, ?3, ?4, ?5)";

// Insert-if-absent for the load: fills a placeholder row, never overwrites a real load. The
// summary columns come from the load itself (json_valid guards against non-JSON payloads,
// which are stored verbatim with NULL summary columns).
constexpr const char* k_save_load =
    "INSERT INTO jids (jid, load, fun, tgt, tgt_type, user, alter_time)"
    " VALUES (?1, ?2,"
    "  CASE WHEN json_valid(?2) THEN json_extract(?2, '$.fun') END,"
    "  CASE WHEN json_valid(?2) THEN json_extract(?2, '$.tgt') END,"
    "  CASE WHEN json_valid(?2) THEN json_extract(?2, '$.tgt_type') END,"
    "  CASE WHEN json_valid(?2) THEN json_extract(?2, '$.user') END,"
    "  ?3)"
    " ON CONFLICT (jid) DO UPDATE SET load = excluded.load, fun = excluded.fun,"
    "  tgt = excluded.tgt, tgt_type = excluded.tgt_type, user = excluded.user,"
    "  alter_time = excluded.alter_time"
    " WHERE " FASTRET_NO_LOAD("jids.load");

// Union of the stored minion list and the new one, sorted, without duplicates. Only string
// elements of a JSON array count; anything else contributes nothing.
#define FASTRET_ARRAY_OR_EMPTY(x) \
    "(CASE WHEN json_valid(" x ") AND json_type(" x ") = 'array' THEN " x " ELSE '[]' END)"

constexpr const char* k_save_minions =
    "INSERT INTO jids (jid, load, minions, alter_time)"
    " VALUES (?1, '',"
    "  (SELECT json_group_array(value) FROM ("
    "    SELECT DISTINCT value FROM json_each(" FASTRET_ARRAY_OR_EMPTY("?2") ")"
    "    WHERE type = 'text' ORDER BY 1)),"
    "  ?3)"
    " ON CONFLICT (jid) DO UPDATE SET minions ="
    "  (SELECT json_group_array(value) FROM ("
    "    SELECT value FROM json_each(" FASTRET_ARRAY_OR_EMPTY("jids.minions") ") WHERE type = 'text'"
    "    UNION SELECT value FROM json_each(excluded.minions) WHERE type = 'text'"
    "    ORDER BY 1))";

// The payload is a JSON string; its text value is stored (a non-JSON payload verbatim).
constexpr const char* k_save_endtime =
    "INSERT INTO jids (jid, load, endtime, alter_time)"
    " VALUES (?1, '', CASE WHEN json_valid(?2) THEN json_extract(?2, '$') ELSE ?2 END, ?3)"
    " ON CONFLICT (jid) DO UPDATE SET endtime = excluded.endtime";

// ---- reads -------------------------------------------------------------------------------

constexpr const char* k_get_load =
    "SELECT load FROM jids WHERE jid = ?1 AND NOT " FASTRET_NO_LOAD("load");

constexpr const char* k_get_minions = "SELECT minions FROM jids WHERE jid = ?1";

constexpr const char* k_get_returns =
    "SELECT id, full_ret FROM ("
    "  SELECT id, full_ret, ROW_NUMBER() OVER ("
    "    PARTITION BY id ORDER BY alter_time DESC, rowid DESC) AS rn"
    "  FROM salt_returns WHERE jid = ?1)"
    " WHERE rn = 1 ORDER BY id";

constexpr const char* k_get_jobs =
    "SELECT jid, load FROM jids"
    " WHERE NOT " FASTRET_NO_LOAD("load")
    "  AND (?1 = 0 OR fun IS NOT 'saltutil.find_job')"
    " ORDER BY jid DESC LIMIT ?2";

constexpr const char* k_get_minion_ids =
    "SELECT DISTINCT id FROM salt_returns WHERE id IS NOT NULL ORDER BY id";

constexpr const char* k_get_fun =
    "SELECT id, fun FROM ("
    "  SELECT id, fun, ROW_NUMBER() OVER ("
    "    PARTITION BY id ORDER BY alter_time DESC, rowid DESC) AS rn"
    "  FROM salt_returns WHERE fun = ?1 AND id IS NOT NULL)"
    " WHERE rn = 1 ORDER BY id";

constexpr const char* k_get_endtime = "SELECT endtime FROM jids WHERE jid = ?1";

constexpr const char* k_get_events =
    "SELECT tag, data FROM salt_events WHERE tag GLOB ?1"
    " ORDER BY alter_time DESC, id DESC LIMIT ?2";

// clean_old_jobs, in this order inside one transaction: returns of expiring jobs first (so
// none is left without its job), then the jobs, the events, and old returns whose job was
// never stored (or is already gone).
constexpr const char* k_clean[] = {
    "DELETE FROM salt_returns WHERE jid IN (SELECT jid FROM jids WHERE alter_time < ?1)",
    "DELETE FROM jids WHERE alter_time < ?1",
    "DELETE FROM salt_events WHERE alter_time < ?1",
    "DELETE FROM salt_returns WHERE alter_time < ?1"
    " AND NOT EXISTS (SELECT 1 FROM jids WHERE jids.jid = salt_returns.jid)",
};

// count(): the table name is looked up, never interpolated.
constexpr std::array<std::pair<std::string_view, const char*>, 3> k_count = {{
    {"jids", "SELECT count(*) FROM jids"},
    {"salt_returns", "SELECT count(*) FROM salt_returns"},
    {"salt_events", "SELECT count(*) FROM salt_events"},
}};

// One SQLite connection with its cache of prepared statements.
class connection {
public:
    connection() = default;
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection() { close(); }

    // Opens `path`; throws std::runtime_error naming the path with SQLite's message.
    void open(const std::filesystem::path& path, int flags, int busy_timeout_ms) {
        path_ = path.string();
        sqlite3* db = nullptr;
        int rc = sqlite3_open_v2(path_.c_str(), &db, flags | SQLITE_OPEN_NOMUTEX, nullptr);
        if (rc != SQLITE_OK) {
            std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
            sqlite3_close(db);
            throw sqlite_failure(rc, "sqlite: cannot open database '" + path_ + "': " + msg);
        }
        db_ = db;
        sqlite3_extended_result_codes(db_, 1);
        sqlite3_busy_timeout(db_, busy_timeout_ms);
    }

    void close() noexcept {
        for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
        cache_.clear();
        if (db_) sqlite3_close(db_);
        db_ = nullptr;
    }

    bool is_open() const noexcept { return db_ != nullptr; }
    sqlite3* db() const noexcept { return db_; }

    [[noreturn]] void fail(int rc, std::string_view what) const {
        std::string msg = "sqlite: ";
        msg += what;
        msg += ": ";
        msg += db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
        msg += " (";
        msg += path_;
        msg += ")";
        throw sqlite_failure(rc, msg);
    }

    // Runs SQL without results (or ignoring them).
    void exec(const char* sql) {
        int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
        if (rc != SQLITE_OK) fail(rc, sql);
    }

    // The cached prepared statement for `sql`, reset and with its bindings cleared.
    sqlite3_stmt* prepare(const char* sql) {
        auto it = cache_.find(sql);
        if (it != cache_.end()) {
            sqlite3_reset(it->second);
            sqlite3_clear_bindings(it->second);
            return it->second;
        }
        sqlite3_stmt* stmt = nullptr;
        int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
        if (rc != SQLITE_OK) {
            sqlite3_finalize(stmt);
            fail(rc, "prepare");
        }
        cache_.emplace(sql, stmt);
        return stmt;
    }

private:
    sqlite3* db_ = nullptr;
    std::string path_;
    std::map<std::string, sqlite3_stmt*> cache_;
};

// A statement in use: bind, step, read columns; reset on scope exit so that no read
// transaction is held open between calls (that would stall WAL checkpoints).
class statement {
public:
    statement(connection& conn, const char* sql) : conn_(conn), stmt_(conn.prepare(sql)) {}
    ~statement() { sqlite3_reset(stmt_); }
    statement(const statement&) = delete;
    statement& operator=(const statement&) = delete;

    statement& bind(int i, std::string_view text) {
        check(sqlite3_bind_text64(stmt_, i, text.data(), text.size(), SQLITE_TRANSIENT,
                                  SQLITE_UTF8));
        return *this;
    }
    statement& bind(int i, std::int64_t v) {
        check(sqlite3_bind_int64(stmt_, i, v));
        return *this;
    }
    statement& bind_null(int i) {
        check(sqlite3_bind_null(stmt_, i));
        return *this;
    }

    // True when a row is available, false when done; throws on error.
    bool step() {
        int rc = sqlite3_step(stmt_);
        if (rc == SQLITE_ROW) return true;
        if (rc == SQLITE_DONE) return false;
        conn_.fail(rc, "step");
    }
    void run() {
        while (step()) {
        }
    }

    bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
    std::string text(int col) const {
        const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
        return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)))
                 : std::string();
    }
    std::int64_t int64(int col) const { return sqlite3_column_int64(stmt_, col); }

private:
    void check(int rc) {
        if (rc != SQLITE_OK) conn_.fail(rc, "bind");
    }
    connection& conn_;
    sqlite3_stmt* stmt_;
};

std::vector<std::pair<std::string, std::string>> pairs(statement& st) {
    std::vector<std::pair<std::string, std::string>> out;
    while (st.step()) out.emplace_back(st.text(0), st.text(1));
    return out;
}

}  // namespace

struct sqlite_store::impl {
    std::filesystem::path path;
    int busy_timeout_ms = 5000;

    std::mutex write_mu;
    connection writer;

    std::mutex read_mu;
    connection reader;  // opened by the first read

    void open_writer(bool synchronous_full) {
        writer.open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, busy_timeout_ms);
        // Switching a new database to WAL while another process does the same can fail with
        // SQLITE_BUSY without SQLite calling the busy handler, so the setup is retried here
        // until the busy timeout has passed.
        const auto deadline =
            std::chrono::steady_clock::now() + std::chrono::milliseconds(busy_timeout_ms);
        for (int attempt = 0;; ++attempt) {
            try {
                writer.exec("PRAGMA journal_mode=WAL");
                writer.exec(synchronous_full ? "PRAGMA synchronous=FULL"
                                             : "PRAGMA synchronous=NORMAL");
                create_schema();
                return;
            } catch (const sqlite_failure& e) {
                const int primary = e.code & 0xff;
                if ((primary == SQLITE_BUSY || primary == SQLITE_LOCKED) &&
                    std::chrono::steady_clock::now() < deadline) {
                    std::this_thread::sleep_for(std::chrono::milliseconds(attempt < 5 ? 1 : 10));
                    continue;
                }
                writer.close();
                throw;
            } catch (...) {
                writer.close();
                throw;
            }
        }
    }

    void create_schema() {
        {
            statement probe(writer, k_schema_probe);
            if (probe.step() && probe.int64(0) == k_schema_objects) return;
        }
        writer.exec("BEGIN IMMEDIATE");
        try {
            for (const char* sql : k_schema) writer.exec(sql);
            writer.exec("COMMIT");
        } catch (...) {
            sqlite3_exec(writer.db(), "ROLLBACK", nullptr, nullptr, nullptr);
            throw;
        }
    }

    connection& read_conn() {
        if (!reader.is_open()) {
            reader.open(path, SQLITE_OPEN_READWRITE, busy_timeout_ms);
            try {
                reader.exec("PRAGMA query_only=ON");
            } catch (...) {
                reader.close();
                throw;
            }
        }
        return reader;
    }

    void write_one(const record& rec) {
        switch (rec.kind) {
            case record_kind::job_return: {
                statement st(writer, k_insert_return);
                st.bind(1, rec.id.empty() ? compute_record_id(rec) : rec.id)
                    .bind(2, rec.jid)
                    .bind(3, rec.fun)
                    .bind(4, rec.minion);
                if (rec.success < 0)
                    st.bind_null(5);
                else
                    st.bind(5, static_cast<std::int64_t>(rec.success != 0));
                if (rec.retcode)
                    st.bind(6, *rec.retcode);
                else
                    st.bind_null(6);
                st.bind(7, rec.payload).bind(8, rec.ts_us);
                st.run();
                return;
            }
            case record_kind::event: {
                statement st(writer, k_insert_event);
                st.bind(1, rec.id.empty() ? compute_record_id(rec) : rec.id)
                    .bind(2, rec.tag)
                    .bind(3, rec.payload)
                    .bind(4, rec.minion)
                    .bind(5, rec.ts_us);
                st.run();
                return;
            }
            case record_kind::job_load: {
                statement st(writer, k_save_load);
                st.bind(1, rec.jid).bind(2, rec.payload).bind(3, rec.ts_us);
                st.run();
                return;
            }
            case record_kind::job_minions: {
                statement st(writer, k_save_minions);
                st.bind(1, rec.jid).bind(2, rec.payload).bind(3, rec.ts_us);
                st.run();
                return;
            }
            case record_kind::job_endtime: {
                statement st(writer, k_save_endtime);
                st.bind(1, rec.jid).bind(2, rec.payload).bind(3, rec.ts_us);
                st.run();
                return;
            }
        }
        throw sqlite_failure(SQLITE_MISMATCH,
                             "sqlite: unknown record kind " +
                                 std::to_string(static_cast<int>(rec.kind)));
    }

    // The batch again, one savepoint per record: records that fail with a drop-class error
    // are left out (counted), any other failure abandons the whole transaction.
    write_result write_each(std::span<const record> batch) {
        write_result res;
        try {
            writer.exec("BEGIN IMMEDIATE");
            for (const auto& rec : batch) {
                writer.exec("SAVEPOINT fastret_record");
                try {
                    write_one(rec);
                } catch (const sqlite_failure& e) {
                    if (classify(e.code) != write_status::drop) throw;
                    writer.exec("ROLLBACK TO fastret_record");
                    if (res.dropped++ == 0) res.error = e.what();
                }
                writer.exec("RELEASE fastret_record");
            }
            writer.exec("COMMIT");
        } catch (const sqlite_failure& e) {
            rollback();
            return {classify(e.code), e.what(), 0};
        }
        return res;
    }

    void rollback() noexcept {
        if (writer.db() && !sqlite3_get_autocommit(writer.db()))
            sqlite3_exec(writer.db(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
};

std::string sqlite_schema_sql() {
    std::string out;
    for (const char* sql : k_schema) out.append(sql).append(";\n");
    return out;
}

sqlite_store::sqlite_store(const std::filesystem::path& path, int busy_timeout_ms,
                           bool synchronous_full)
    : impl_(std::make_unique<impl>()) {
    impl_->path = path;
    impl_->busy_timeout_ms = busy_timeout_ms < 0 ? 0 : busy_timeout_ms;
    // Created owner-only before SQLite opens it (an empty file is an empty database): SQLite
    // gives the -wal and -shm files the database file's mode, and job returns are not for
    // other local users whatever Salt's umask is.
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) ::close(fd);
    impl_->open_writer(synchronous_full);
}

sqlite_store::~sqlite_store() = default;

const std::filesystem::path& sqlite_store::path() const noexcept { return impl_->path; }

write_result sqlite_store::write(std::span<const record> batch) noexcept {
    try {
        std::lock_guard lock(impl_->write_mu);
        if (!impl_->writer.is_open())
            return {write_status::fatal, "sqlite: store is closed (" + impl_->path.string() + ")", 0};
        try {
            impl_->writer.exec("BEGIN IMMEDIATE");
            for (const auto& rec : batch) impl_->write_one(rec);
            impl_->writer.exec("COMMIT");
            return write_result::success();
        } catch (const sqlite_failure& e) {
            impl_->rollback();
            auto status = classify(e.code);
            if (status != write_status::drop || batch.size() == 1) return {status, e.what(), 0};
        } catch (const std::bad_alloc&) {
            impl_->rollback();
            return {write_status::retry, "sqlite: out of memory", 0};
        }
        // One record cannot be stored: write the batch again record by record, each under a
        // savepoint, so that only the records at fault are left out.
        return impl_->write_each(batch);
    } catch (...) {
        // Only reachable if building the error message itself failed.
        return {write_status::retry, "sqlite: write failed", 0};
    }
}

std::optional<std::string> sqlite_store::get_load(const std::string& jid) {
    std::lock_guard lock(impl_->read_mu);
    statement st(impl_->read_conn(), k_get_load);
    st.bind(1, jid);
    if (!st.step()) return std::nullopt;
    return st.text(0);
}

std::optional<std::string> sqlite_store::get_minions_of(const std::string& jid) {
    std::lock_guard lock(impl_->read_mu);
    statement st(impl_->read_conn(), k_get_minions);
    st.bind(1, jid);
    if (!st.step() || st.is_null(0)) return std::nullopt;
    return st.text(0);
}

std::vector<std::pair<std::string, std::string>> sqlite_store::get_returns(const std::string& jid) {
    std::lock_guard lock(impl_->read_mu);
    statement st(impl_->read_conn(), k_get_returns);
    st.bind(1, jid);
    return pairs(st);
}

std::vector<std::pair<std::string, std::string>> sqlite_store::get_jobs(std::size_t limit,
                                                                        bool skip_find_job) {
    std::lock_guard lock(impl_->read_mu);
    statement st(impl_->read_conn(), k_get_jobs);
    st.bind(1, static_cast<std::int64_t>(skip_find_job ? 1 : 0));
    st.bind(2, limit == 0 || limit > static_cast<std::size_t>(INT64_MAX)
                   ? std::int64_t{-1}
                   : static_cast<std::int64_t>(limit));
    return pairs(st);
}

std::vector<std::string> sqlite_store::get_minion_ids() {
    std::lock_guard lock(impl_->read_mu);
    statement st(impl_->read_conn(), k_get_minion_ids);
    std::vector<std::string> out;
    while (st.step()) out.push_back(st.text(0));
    return out;
}

std::vector<std::pair<std::string, std::string>> sqlite_store::get_fun(const std::string& fun) {
    std::lock_guard lock(impl_->read_mu);
    statement st(impl_->read_conn(), k_get_fun);
    st.bind(1, fun);
    return pairs(st);
}

std::optional<std::string> sqlite_store::get_endtime(const std::string& jid) {
    std::lock_guard lock(impl_->read_mu);
    statement st(impl_->read_conn(), k_get_endtime);
    st.bind(1, jid);
    if (!st.step() || st.is_null(0)) return std::nullopt;
    return st.text(0);
}

std::uint64_t sqlite_store::clean_old_jobs(std::int64_t cutoff_us) {
    std::lock_guard lock(impl_->write_mu);
    auto& w = impl_->writer;
    if (!w.is_open())
        throw std::runtime_error("sqlite: store is closed (" + impl_->path.string() + ")");
    std::uint64_t deleted = 0;
    w.exec("BEGIN IMMEDIATE");
    try {
        for (const char* sql : k_clean) {
            statement st(w, sql);
            st.bind(1, cutoff_us);
            st.run();
            deleted += static_cast<std::uint64_t>(sqlite3_changes64(w.db()));
        }
        w.exec("COMMIT");
    } catch (...) {
        impl_->rollback();
        throw;
    }
    return deleted;
}

std::vector<std::pair<std::string, std::string>> sqlite_store::get_events(
    const std::string& tag_glob, std::size_t limit) {
    std::lock_guard lock(impl_->read_mu);
    statement st(impl_->read_conn(), k_get_events);
    st.bind(1, tag_glob);
    st.bind(2, limit == 0 || limit > static_cast<std::size_t>(INT64_MAX)
                   ? std::int64_t{-1}
                   : static_cast<std::int64_t>(limit));
    return pairs(st);
}

std::uint64_t sqlite_store::count(const std::string& table) {
    const char* sql = nullptr;
    for (const auto& [name, query] : k_count)
        if (name == table) sql = query;
    if (!sql) throw std::invalid_argument("sqlite: unknown table for count()");
    std::lock_guard lock(impl_->read_mu);
    statement st(impl_->read_conn(), sql);
    if (!st.step()) return 0;
    return static_cast<std::uint64_t>(st.int64(0));
}

}  // namespace fastret
