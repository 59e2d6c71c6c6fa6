// The MariaDB job cache and event store (see fastret/mysql_store.hpp).
//
// One connection per store object, guarded by a mutex. Values reach the server only as string
// literals made by mysql_real_escape_string() (which knows the connection's character set and
// SQL mode) or as numbers and timestamps formatted here; identifiers are constants of this
// file or validated role names. The write path sends a whole batch as one multi-statement
// text (START TRANSACTION; INSERT ...; COMMIT) so that a batch costs one round trip. Events,
// the bulk of the traffic, go as one prepared INSERT with an array of parameter sets
// (COM_STMT_BULK_EXECUTE, bulk_events) in the same transaction: the server neither parses
// nor unescapes the values, which makes it cheaper for the server than its own LOAD DATA,
// and strict mode and ON DUPLICATE KEY UPDATE keep their meaning. See bench/mysql_write.cpp.
//
// autocommit stays on: every write opens its own transaction explicitly, and a read is a
// single autocommitted statement, so no read snapshot or metadata lock outlives a call (with
// autocommit off, the first SELECT would open a transaction that blocks DDL and shows stale
// rows to the next read until someone commits).
#include "fastret/mysql_store.hpp"

#include <errmsg.h>
#include <fmt/format.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <ctime>
#include <exception>
#include <fstream>
#include <mutex>
#include <numeric>
#include <string_view>

namespace fastret {

namespace {

// ---- errors ------------------------------------------------------------------------------

bool contains_nocase(std::string_view text, std::string_view word) noexcept {
    return std::search(text.begin(), text.end(), word.begin(), word.end(), [](char a, char b) {
               return std::tolower(static_cast<unsigned char>(a)) ==
                      std::tolower(static_cast<unsigned char>(b));
           }) != text.end();
}

// Connector/C reports every TLS failure as 2026. The certificate or protocol problems need
// someone to act (a wrong CA, a name mismatch, an expired certificate, a server without TLS);
// an I/O failure during the handshake (reset, EOF, timeout) is the network and passes.
bool tls_failure_is_permanent(std::string_view message) noexcept {
    for (std::string_view word :
         {"certificate", "verif", "not support", "protocol", "cipher", "issuer", "expired",
          "self-signed", "self signed", "key", "passphrase", "no such file"})
        if (contains_nocase(message, word)) return true;
    return false;
}

// The one place where MariaDB error numbers become sink outcomes.
//  - retry: the connection or the server is in trouble for now (lost connection, server
//    shutting down or read-only during a failover, too many connections, lock wait timeout,
//    deadlock, disk full, out of memory), or a TLS handshake broke off;
//  - drop: this record can never be stored as it is (value too long or out of range, invalid
//    string for the character set, NULL in a NOT NULL column, a failed CHECK, a packet
//    larger than max_allowed_packet);
//  - fatal: nothing will work until someone acts: credentials or privileges refused, schema
//    or database missing, SQL the server does not understand (an older server), a TLS
//    certificate rejected. The sink stops and keeps its records in the spool. Unknown server
//    errors are fatal too: holding records is safer than dropping them or spinning.
write_status classify(unsigned code, std::string_view message) noexcept {
    switch (code) {
        case CR_SOCKET_CREATE_ERROR:        // 2001
        case CR_CONNECTION_ERROR:           // 2002
        case CR_CONN_HOST_ERROR:            // 2003
        case CR_IPSOCK_ERROR:               // 2004
        case CR_UNKNOWN_HOST:               // 2005 (DNS may be down; a typo shows in the error)
        case CR_SERVER_GONE_ERROR:          // 2006
        case CR_OUT_OF_MEMORY:              // 2008
        case CR_SERVER_HANDSHAKE_ERR:       // 2012
        case CR_SERVER_LOST:                // 2013
        case CR_COMMANDS_OUT_OF_SYNC:       // 2014 (a fresh connection cures it)
        case CR_MALFORMED_PACKET:           // 2027
        case CR_SERVER_LOST_EXTENDED:       // 2055
        case CR_ERR_NET_READ:               // 5013
        case CR_ERR_NET_WRITE:              // 5014
        case ER_CON_COUNT_ERROR:            // 1040 too many connections
        case ER_OUTOFMEMORY:                // 1037
        case ER_OUT_OF_SORTMEMORY:          // 1038
        case ER_OUT_OF_RESOURCES:           // 1041
        case ER_DISK_FULL:                  // 1021
        case ER_HANDSHAKE_ERROR:            // 1043
        case ER_SERVER_SHUTDOWN:            // 1053
        case ER_RECORD_FILE_FULL:           // 1114 table full (disk)
        case ER_ABORTING_CONNECTION:        // 1152
        case ER_NET_READ_ERROR:             // 1158
        case ER_NET_READ_INTERRUPTED:       // 1159
        case ER_NET_ERROR_ON_WRITE:         // 1160
        case ER_NET_WRITE_INTERRUPTED:      // 1161
        case ER_ERROR_DURING_COMMIT:        // 1180
        case ER_ERROR_DURING_ROLLBACK:      // 1181
        case ER_NEW_ABORTING_CONNECTION:    // 1184
        case ER_TOO_MANY_USER_CONNECTIONS:  // 1203
        case ER_LOCK_WAIT_TIMEOUT:          // 1205
        case ER_LOCK_TABLE_FULL:            // 1206
        case ER_LOCK_DEADLOCK:              // 1213
        case ER_OPTION_PREVENTS_STATEMENT:  // 1290 --read-only (a replica being promoted)
        case ER_QUERY_INTERRUPTED:          // 1317
        case ER_CONNECTION_KILLED:          // 1927
        case ER_STATEMENT_TIMEOUT:          // 1969 max_statement_time
        case 4031:                          // ER_CLIENT_INTERACTION_TIMEOUT (idle too long)
            return write_status::retry;
        case CR_SSL_CONNECTION_ERROR:  // 2026
            return tls_failure_is_permanent(message) ? write_status::fatal : write_status::retry;
        case ER_BAD_NULL_ERROR:                   // 1048
        case ER_DUP_ENTRY:                        // 1062
        case ER_NET_PACKET_TOO_LARGE:             // 1153
        case ER_WARN_DATA_OUT_OF_RANGE:           // 1264
        case WARN_DATA_TRUNCATED:                 // 1265
        case ER_TRUNCATED_WRONG_VALUE:            // 1292
        case ER_INVALID_CHARACTER_STRING:         // 1300
        case ER_WARN_ALLOWED_PACKET_OVERFLOWED:   // 1301
        case ER_TRUNCATED_WRONG_VALUE_FOR_FIELD:  // 1366 incorrect string value
        case ER_ILLEGAL_VALUE_FOR_TYPE:           // 1367
        case ER_DATA_TOO_LONG:                    // 1406
        case ER_NO_REFERENCED_ROW_2:              // 1452
        case 3140:                                // MySQL's ER_INVALID_JSON_TEXT
        case ER_CONSTRAINT_FAILED:                // 4025 (MariaDB's JSON columns are CHECKs)
            return write_status::drop;
        default:
            // 1044/1045/1142/1143/1227 privileges, 1049 database, 1054 column, 1064 syntax,
            // 1129/1130 host blocked/not allowed, 1146 table, 2059/5010 auth plugin, ...
            return write_status::fatal;
    }
}

// Errors after which the connection cannot be used again: it is closed, the next call opens
// a new one.
bool connection_lost(unsigned code) noexcept {
    if ((code >= CR_MIN_ERROR && code <= CR_MAX_ERROR) || code == CR_ERR_NET_READ ||
        code == CR_ERR_NET_WRITE)
        return true;
    switch (code) {
        case ER_SERVER_SHUTDOWN:
        case ER_ABORTING_CONNECTION:
        case ER_NET_PACKET_TOO_LARGE:
        case ER_NET_READ_ERROR:
        case ER_NET_READ_INTERRUPTED:
        case ER_NET_ERROR_ON_WRITE:
        case ER_NET_WRITE_INTERRUPTED:
        case ER_NEW_ABORTING_CONNECTION:
        case ER_CONNECTION_KILLED:
        case 4031:
            return true;
        default:
            return false;
    }
}

bool privilege_error(unsigned code) noexcept {
    switch (code) {
        case ER_DBACCESS_DENIED_ERROR:         // 1044
        case ER_ACCESS_DENIED_ERROR:           // 1045
        case ER_TABLEACCESS_DENIED_ERROR:      // 1142
        case ER_COLUMNACCESS_DENIED_ERROR:     // 1143
        case ER_SPECIFIC_ACCESS_DENIED_ERROR:  // 1227
        case ER_PROCACCESS_DENIED_ERROR:       // 1370
            return true;
        default:
            return false;
    }
}

// A failed statement or connect: the server's (or the client library's) number and message.
struct mysql_failure : store_error {
    unsigned code;
    mysql_failure(unsigned c, const std::string& msg)
        : store_error(classify(c, msg), msg), code(c) {}
    mysql_failure(write_status s, const std::string& msg) : store_error(s, msg), code(0) {}
};

// ---- schema ------------------------------------------------------------------------------

constexpr std::string_view k_charset = "utf8mb4";
constexpr std::string_view k_collation = "utf8mb4_nopad_bin";
constexpr std::string_view k_record_id_type = "CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NULL";

struct column_def {
    std::string_view name;
    std::string_view type;
    bool stock;  // a column of saltext-mysql's schema (present in a stock table)
};

struct index_def {
    std::string_view name;
    std::string_view columns;
    bool unique;
};

// A conditional change to a stock column: `condition` is an SQL test on the column's
// information_schema.COLUMNS row (alias c) that says the column still needs `change`.
struct upgrade_def {
    std::string_view column;
    std::string_view condition;
    std::string_view change;
};

struct table_def {
    std::string_view name;
    std::string_view primary_key;  // empty: none
    std::vector<column_def> columns;
    std::vector<index_def> indexes;  // fastret's; all are checked by the schema probe
    std::vector<upgrade_def> upgrades;
};

const std::vector<table_def>& tables() {
    // Stock types are kept (MEDIUMTEXT payloads, VARCHAR(255) ids and tags), except that
    // salt_returns.fun grows from VARCHAR(50) to 255: a longer function name would otherwise
    // make its return impossible to store. alter_time is the record's creation time with
    // microseconds: newest-first reads and the event key need them.
    static const std::vector<table_def> defs = {
        {"jids",
         "",
         {
             {"jid", "VARCHAR(255) NOT NULL", true},
             {"load", "MEDIUMTEXT NOT NULL", true},
             {"minions", "MEDIUMTEXT NULL", false},
             {"endtime", "TEXT NULL", false},
             // A row made by a minion list or an end time before the load has the load '{}'
             // and 0 here; the stock rows that an upgrade finds all have a load.
             {"has_load", "TINYINT(1) NOT NULL DEFAULT 1", false},
             {"fun", "VARCHAR(255) NULL", false},
             {"tgt", "MEDIUMTEXT NULL", false},
             {"tgt_type", "VARCHAR(64) NULL", false},
             {"user", "VARCHAR(255) NULL", false},
             {"alter_time", "TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)", false},
         },
         {{"jid", "`jid`", true}, {"alter_time", "`alter_time`", false}},
         {}},
        {"salt_returns",
         "",
         {
             {"fun", "VARCHAR(255) NOT NULL", true},
             {"jid", "VARCHAR(255) NOT NULL", true},
             {"return", "MEDIUMTEXT NOT NULL", true},
             {"id", "VARCHAR(255) NOT NULL", true},
             {"success", "VARCHAR(10) NOT NULL", true},
             {"full_ret", "MEDIUMTEXT NOT NULL", true},
             {"alter_time", "TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)", true},
             {"record_id", k_record_id_type, false},
             {"retcode", "BIGINT NULL", false},
         },
         // No primary key: InnoDB then clusters rows by an internal row id, so inserts append
         // (a record id is a hash: clustering by it would scatter every insert).
         {{"id", "`id`", false},
          {"jid", "`jid`", false},
          {"record_id", "`record_id`", true},
          {"fun_id", "`fun`, `id`", false},
          {"alter_time", "`alter_time`", false}},
         {{"fun", "c.CHARACTER_MAXIMUM_LENGTH < 255", "MODIFY `fun` VARCHAR(255) NOT NULL"}}},
        {"salt_events",
         "`id`",
         {
             {"id", "BIGINT NOT NULL AUTO_INCREMENT", true},
             {"tag", "VARCHAR(255) NOT NULL", true},
             {"data", "MEDIUMTEXT NOT NULL", true},
             {"alter_time", "TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)", true},
             {"master_id", "VARCHAR(255) NOT NULL", true},
             {"record_id", k_record_id_type, false},
         },
         // Keyed by (time, record id): a re-delivery carries the record's creation time, so it
         // hits the same key; and since times grow, the key's inserts append.
         {{"tag", "`tag`", false}, {"alter_time_record_id", "`alter_time`, `record_id`", true}},
         {}},
    };
    return defs;
}

constexpr std::array<std::string_view, 3> k_table_names = {"jids", "salt_returns", "salt_events"};

// The archive tables: same shape, filled by clean_old_jobs when `archive` is set.
std::string archive_name(std::string_view table) { return std::string(table) + "_archive"; }

// Statements for one table `name` shaped like `t` (a base table or its archive).
void table_ddl(const table_def& t, const std::string& name, bool archive,
               std::vector<std::string>& out) {
    if (archive) {
        out.push_back(fmt::format("CREATE TABLE IF NOT EXISTS `{}` LIKE `{}`", name, t.name));
    } else {
        std::string sql = fmt::format("CREATE TABLE IF NOT EXISTS `{}` (", name);
        for (const auto& c : t.columns) sql += fmt::format("`{}` {}, ", c.name, c.type);
        if (!t.primary_key.empty()) sql += fmt::format("PRIMARY KEY ({}), ", t.primary_key);
        for (std::size_t i = 0; i < t.indexes.size(); ++i) {
            const auto& ix = t.indexes[i];
            sql += fmt::format("{}KEY `{}` ({}){}", ix.unique ? "UNIQUE " : "", ix.name, ix.columns,
                               i + 1 < t.indexes.size() ? ", " : "");
        }
        sql += fmt::format(") ENGINE=InnoDB DEFAULT CHARSET={} COLLATE={}", k_charset, k_collation);
        out.push_back(std::move(sql));
    }

    // A table made by the stock returner (utf8mb3, TIMESTAMP without fractions, fun(50)) is
    // converted once, in one ALTER (one rebuild); the statement is built from what
    // information_schema says, so it does nothing on a table already converted.
    std::string changes = fmt::format(
        "IF(t.TABLE_COLLATION <> '{0}', 'CONVERT TO CHARACTER SET {1} COLLATE {0}', NULL), "
        "(SELECT IF(MAX(c.DATETIME_PRECISION) < 6, 'MODIFY `alter_time` TIMESTAMP(6) NULL "
        "DEFAULT CURRENT_TIMESTAMP(6)', NULL) FROM information_schema.COLUMNS c WHERE "
        "c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME AND c.COLUMN_NAME = "
        "'alter_time')",
        k_collation, k_charset);
    for (const auto& u : t.upgrades)
        changes += fmt::format(
            ", (SELECT IF(MAX({}), '{}', NULL) FROM information_schema.COLUMNS c WHERE "
            "c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME AND c.COLUMN_NAME "
            "= '{}')",
            u.condition, u.change, u.column);
    out.push_back(fmt::format(
        "SET @fastret_ddl = (SELECT CONCAT('ALTER TABLE `{0}` ', NULLIF(CONCAT_WS(', ', {1}), "
        "'')) FROM information_schema.TABLES t WHERE t.TABLE_SCHEMA = DATABASE() AND "
        "t.TABLE_NAME = '{0}')",
        name, changes));
    out.push_back("SET @fastret_ddl = COALESCE(@fastret_ddl, 'DO 0')");
    out.push_back("PREPARE fastret_ddl FROM @fastret_ddl");
    out.push_back("EXECUTE fastret_ddl");
    out.push_back("DEALLOCATE PREPARE fastret_ddl");

    std::string add = fmt::format("ALTER TABLE `{}`", name);
    bool any = false;
    for (const auto& c : t.columns) {
        if (c.stock) continue;
        add += fmt::format("{} ADD COLUMN IF NOT EXISTS `{}` {}", any ? "," : "", c.name, c.type);
        any = true;
    }
    if (any) out.push_back(std::move(add));
    for (const auto& ix : t.indexes)
        out.push_back(fmt::format("CREATE {}INDEX IF NOT EXISTS `{}` ON `{}` ({})",
                                  ix.unique ? "UNIQUE " : "", ix.name, name, ix.columns));
}

// The summary columns of a job row, from its load (a load that is not JSON leaves them NULL;
// JSON_VALID first, so that no JSON function ever sees invalid text).
#define FASTRET_LOAD_FIELD(path, width)                                                    \
    "IF(JSON_VALID(`load`), LEFT(JSON_UNQUOTE(JSON_EXTRACT(`load`, '$." path "')), " width \
    "), NULL)"
constexpr const char* k_load_fun = FASTRET_LOAD_FIELD("fun", "255");
constexpr const char* k_load_tgt = FASTRET_LOAD_FIELD("tgt", "16777215");
constexpr const char* k_load_tgt_type = FASTRET_LOAD_FIELD("tgt_type", "64");
constexpr const char* k_load_user = FASTRET_LOAD_FIELD("user", "255");

// The table statements (what a store applies on open).
std::vector<std::string> schema_statements() {
    std::vector<std::string> out;
    for (const auto& t : tables()) table_ddl(t, std::string(t.name), false, out);
    for (const auto& t : tables()) table_ddl(t, archive_name(t.name), true, out);
    // Job rows of the stock returner get their summary columns once (fun serves
    // get_jobs(skip_find_job)).
    for (const auto& name : {std::string("jids"), archive_name("jids")})
        out.push_back(fmt::format(
            "UPDATE `{}` SET `fun` = {}, `tgt` = {}, `tgt_type` = {}, `user` = {} WHERE `fun` IS "
            "NULL AND `tgt_type` IS NULL AND `has_load` = 1 AND JSON_VALID(`load`)",
            name, k_load_fun, k_load_tgt, k_load_tgt_type, k_load_user));
    return out;
}

// One query that tells whether everything schema_statements() makes is there.
std::string schema_probe_sql(std::size_t& columns, std::size_t& indexes, std::size_t& tables_n) {
    std::string col_list, ix_list, table_list;
    columns = indexes = tables_n = 0;
    auto add = [](std::string& list, std::string_view item) {
        if (!list.empty()) list += ", ";
        list += '\'';
        list += item;
        list += '\'';
    };
    for (const auto& t : tables()) {
        for (const auto& name : {std::string(t.name), archive_name(t.name)}) {
            add(table_list, name);
            ++tables_n;
            for (const auto& c : t.columns) {
                add(col_list, name + "." + std::string(c.name));
                ++columns;
            }
            for (const auto& ix : t.indexes) {
                add(ix_list, name + "." + std::string(ix.name));
                ++indexes;
            }
        }
    }
    return fmt::format(
        "SELECT (SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
        "AND CONCAT(TABLE_NAME, '.', COLUMN_NAME) IN ({0})), "
        "(SELECT COUNT(DISTINCT TABLE_NAME, INDEX_NAME) FROM information_schema.STATISTICS WHERE "
        "TABLE_SCHEMA = DATABASE() AND CONCAT(TABLE_NAME, '.', INDEX_NAME) IN ({1})), "
        "(SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND "
        "TABLE_NAME IN ({2}) AND TABLE_COLLATION = '{3}'), "
        "(SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND "
        "TABLE_NAME IN ({2}) AND COLUMN_NAME = 'alter_time' AND DATETIME_PRECISION = 6)",
        col_list, ix_list, table_list, k_collation);
}

bool plain_identifier(const std::string& s) noexcept {
    if (s.empty() || s.size() > 64) return false;
    if (!(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
    for (char c : s)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
    return true;
}

void check_role(const std::string& role, std::string_view what) {
    std::string lower;
    for (char c : role) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!plain_identifier(role) || lower == "none" || lower == "public")
        throw config_error(fmt::format(
            "mysql schema: {} role name '{}' is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*, "
            "at most 64 characters, not NONE or PUBLIC)",
            what, role.size() > 64 ? role.substr(0, 64) + "..." : role));
}

// ---- values --------------------------------------------------------------------------------

// TIMESTAMP's range (1970-01-01 00:00:01 .. 2038-01-19 03:14:07.999999 UTC): a time outside
// it is stored as its nearest end instead of making the record impossible to store.
constexpr std::int64_t k_min_ts_us = 1'000'000;
constexpr std::int64_t k_max_ts_us = 2'147'483'647'999'999;

// YYYY-MM-DD hh:mm:ss.ffffff in UTC (the session's time zone is +00:00): always this long, as
// the year stays within TIMESTAMP's range.
constexpr std::size_t k_timestamp_len = 26;
void format_timestamp(char* out, std::int64_t ts_us) {
    ts_us = std::clamp(ts_us, k_min_ts_us, k_max_ts_us);
    std::time_t secs = static_cast<std::time_t>(ts_us / 1'000'000);
    std::tm tm{};
    ::gmtime_r(&secs, &tm);
    fmt::format_to_n(out, k_timestamp_len, "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts_us % 1'000'000);
}

// The same as a string literal.
void append_timestamp(std::string& out, std::int64_t ts_us) {
    char text[k_timestamp_len];
    format_timestamp(text, ts_us);
    out += '\'';
    out.append(text, k_timestamp_len);
    out += '\'';
}

// The smallest string greater than every string that starts with `prefix`, in code point
// order: the last code point incremented (surrogates skipped; one past U+10FFFF carries into
// the code point before). Empty when there is none.
std::string successor(std::string_view prefix) {
    std::vector<char32_t> cps;
    for (std::size_t i = 0; i < prefix.size();) {
        auto c = static_cast<unsigned char>(prefix[i]);
        int n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        char32_t cp = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
        for (int k = 1; k < n && i + k < prefix.size(); ++k)
            cp = (cp << 6) | (static_cast<unsigned char>(prefix[i + k]) & 0x3F);
        cps.push_back(cp);
        i += n;
    }
    while (!cps.empty()) {
        char32_t next = cps.back() + 1;
        if (next == 0xD800) next = 0xE000;
        if (next <= 0x10FFFF) {
            cps.back() = next;
            break;
        }
        cps.pop_back();
    }
    std::string out;
    for (char32_t cp : cps) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }
    return out;
}

// A LIKE pattern (escape character `\`) for a shell-style glob.
std::string glob_to_like(std::string_view glob) {
    std::string out;
    out.reserve(glob.size() + 8);
    for (char c : glob) {
        switch (c) {
            case '*':
                out += '%';
                break;
            case '?':
                out += '_';
                break;
            case '%':
            case '_':
            case '\\':
                out += '\\';
                out += c;
                break;
            default:
                out += c;
        }
    }
    return out;
}

std::once_flag g_library_once;

unsigned whole_seconds(unsigned ms) noexcept { return ms == 0 ? 1 : (ms + 999) / 1000; }

// ---- connection ----------------------------------------------------------------------------

using row = std::vector<std::optional<std::string>>;

class connection {
public:
    connection() = default;
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection() { close(); }

    bool is_open() const noexcept { return mysql_ != nullptr && pid_ == ::getpid(); }

    void close() noexcept {
        // A forked child must not send QUIT on the socket it shares with its parent: its copy
        // of the handle is abandoned instead (a few kilobytes, once per fork).
        if (mysql_ && pid_ == ::getpid()) {
            if (stmt_) mysql_stmt_close(stmt_);
            mysql_close(mysql_);
        }
        mysql_ = nullptr;
        stmt_ = nullptr;
        stmt_sql_.clear();
    }

    // Connects and sets up the session. Throws mysql_failure; the connection stays closed.
    void open(const mysql_config& c, const std::string& where) {
        close();
        where_ = where;
        std::call_once(g_library_once, [] { mysql_library_init(0, nullptr, nullptr); });
        mysql_ = mysql_init(nullptr);
        if (!mysql_) throw mysql_failure(write_status::retry, "mysql: out of memory " + where_);
        pid_ = ::getpid();
        try {
            configure(c);
            if (!mysql_real_connect(mysql_, c.unix_socket.empty() ? c.host.c_str() : "localhost",
                                    c.user.c_str(), c.password.c_str(), c.db.c_str(),
                                    c.unix_socket.empty() ? c.port : 0,
                                    c.unix_socket.empty() ? nullptr : c.unix_socket.c_str(),
                                    CLIENT_MULTI_STATEMENTS))
                fail_connect(c);
            if (c.ssl_mode != mysql_ssl_mode::disabled && !mysql_get_ssl_cipher(mysql_))
                // Connector/C falls back to plain text when it does not verify the server and
                // the server offers no TLS: refused here, as ssl_mode promises TLS.
                throw mysql_failure(
                    write_status::fatal,
                    fmt::format("mysql: the server does not offer TLS {}; set ssl_mode: disabled "
                                "to connect without it (only over a trusted network)",
                                where_));
            // One round trip: the session's rules and what the write path needs to know. The
            // lock wait ends before the client's read timeout, so that a blocked write comes
            // back as a lock wait timeout (retry, connection kept), not as a lost connection.
            auto rows = query(fmt::format(
                "SET SESSION time_zone = '+00:00', SESSION sql_mode = "
                "'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
                "NO_ENGINE_SUBSTITUTION', SESSION innodb_lock_wait_timeout = {}; "
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED; "
                "SELECT @@max_allowed_packet",
                std::max(1u, whole_seconds(c.read_timeout_ms) / 2)));
            max_packet_ = rows.empty() || !rows[0][0] ? 1024 * 1024 : std::stoull(*rows[0][0]);
            unsigned long caps = 0, ext_caps = 0;
            mariadb_get_infov(mysql_, MARIADB_CONNECTION_SERVER_CAPABILITIES, &caps);
            mariadb_get_infov(mysql_, MARIADB_CONNECTION_EXTENDED_SERVER_CAPABILITIES, &ext_caps);
            bulk_ = (caps & CLIENT_MYSQL) == 0 &&
                    (ext_caps & (MARIADB_CLIENT_STMT_BULK_OPERATIONS >> 32)) != 0;
        } catch (...) {
            close();
            throw;
        }
    }

    MYSQL* get() const noexcept { return mysql_; }
    std::uint64_t max_packet() const noexcept { return max_packet_; }
    const std::string& where() const noexcept { return where_; }

    // Throws the connection's last error. A lost connection is closed.
    [[noreturn]] void fail(std::string_view what) {
        unsigned code = mysql_ ? mysql_errno(mysql_) : CR_SERVER_GONE_ERROR;
        std::string msg = fmt::format("mysql: {}: {} (error {}) {}", what,
                                      mysql_ ? mysql_error(mysql_) : "not connected", code, where_);
        if (connection_lost(code)) close();
        throw mysql_failure(code, msg);
    }

    // Runs SQL (one or more statements), discarding results; the server stops at the first
    // failing statement, which is thrown.
    void run(std::string_view sql, std::string_view what) {
        if (!is_open()) throw not_connected();
        if (mysql_real_query(mysql_, sql.data(), sql.size()) != 0) fail(what);
        for (;;) {
            if (MYSQL_RES* res = mysql_store_result(mysql_))
                mysql_free_result(res);
            else if (mysql_field_count(mysql_) != 0)
                fail(what);
            last_affected_ = mysql_affected_rows(mysql_);
            int next = mysql_next_result(mysql_);
            if (next == -1) return;
            if (next > 0) fail(what);
        }
    }

    // Rows affected by the last statement of the last run().
    std::uint64_t affected() const noexcept {
        return last_affected_ == static_cast<my_ulonglong>(-1) ? 0 : last_affected_;
    }

    // The rows of the last result set of SQL.
    std::vector<row> query(std::string_view sql, std::string_view what = "query") {
        if (!is_open()) throw not_connected();
        if (mysql_real_query(mysql_, sql.data(), sql.size()) != 0) fail(what);
        std::vector<row> out;
        for (;;) {
            MYSQL_RES* res = mysql_store_result(mysql_);
            if (res) {
                out.clear();
                const unsigned n = mysql_num_fields(res);
                while (MYSQL_ROW r = mysql_fetch_row(res)) {
                    const unsigned long* len = mysql_fetch_lengths(res);
                    row values(n);
                    for (unsigned i = 0; i < n; ++i)
                        if (r[i]) values[i].emplace(r[i], len[i]);
                    out.push_back(std::move(values));
                }
                mysql_free_result(res);
            } else if (mysql_field_count(mysql_) != 0) {
                fail(what);
            }
            int next = mysql_next_result(mysql_);
            if (next == -1) return out;
            if (next > 0) fail(what);
        }
    }

    // Appends s as a quoted string literal.
    void quote(std::string& out, std::string_view s) const {
        const std::size_t at = out.size();
        out.resize(at + 2 * s.size() + 3);
        out[at] = '\'';
        unsigned long n = mysql_real_escape_string(mysql_, out.data() + at + 1, s.data(),
                                                   static_cast<unsigned long>(s.size()));
        out[at + 1 + n] = '\'';
        out.resize(at + n + 2);
    }
    std::string quoted(std::string_view s) const {
        std::string out;
        quote(out, s);
        return out;
    }

    // True if the server takes an array of parameter sets in one COM_STMT_BULK_EXECUTE
    // (MariaDB 10.2 and later; not MySQL), known from the handshake, and no prepare failed on
    // this connection.
    bool bulk_supported() const noexcept { return bulk_; }
    void bulk_unusable() noexcept { bulk_ = false; }

    // `sql` prepared on this connection: once, then reused until the connection closes.
    MYSQL_STMT* prepared(std::string_view sql, std::string_view what) {
        if (!is_open()) throw not_connected();
        if (stmt_ && stmt_sql_ == sql) return stmt_;
        if (stmt_) mysql_stmt_close(stmt_);
        stmt_sql_.clear();
        stmt_ = mysql_stmt_init(mysql_);
        if (!stmt_) throw mysql_failure(write_status::retry, "mysql: out of memory " + where_);
        if (mysql_stmt_prepare(stmt_, sql.data(), sql.size()) != 0) fail_stmt(what);
        stmt_sql_ = sql;
        return stmt_;
    }

    // Runs the prepared statement once for each of `rows` parameter sets, bound column-wise
    // in `bind`: one packet, one reply.
    void execute_array(MYSQL_BIND* bind, unsigned rows, std::string_view what) {
        if (mysql_stmt_attr_set(stmt_, STMT_ATTR_ARRAY_SIZE, &rows) != 0 ||
            mysql_stmt_bind_param(stmt_, bind) != 0 || mysql_stmt_execute(stmt_) != 0)
            fail_stmt(what);
        last_affected_ = mysql_stmt_affected_rows(stmt_);
    }

private:
    // Throws the prepared statement's last error. A lost connection is closed.
    [[noreturn]] void fail_stmt(std::string_view what) {
        unsigned code = mysql_stmt_errno(stmt_);
        std::string msg = fmt::format("mysql: {}: {} (error {}) {}", what, mysql_stmt_error(stmt_),
                                      code, where_);
        if (connection_lost(code)) {
            close();
        } else if (stmt_sql_.empty()) {
            mysql_stmt_close(stmt_);  // the prepare failed: not kept
            stmt_ = nullptr;
        }
        throw mysql_failure(code, msg);
    }

    mysql_failure not_connected() const {
        return mysql_failure(CR_SERVER_GONE_ERROR, "mysql: not connected " + where_);
    }

    void configure(const mysql_config& c) {
        unsigned connect_s = whole_seconds(c.connect_timeout_ms);
        unsigned read_s = whole_seconds(c.read_timeout_ms);
        unsigned write_s = whole_seconds(c.write_timeout_ms);
        mysql_options(mysql_, MYSQL_OPT_CONNECT_TIMEOUT, &connect_s);
        mysql_options(mysql_, MYSQL_OPT_READ_TIMEOUT, &read_s);
        mysql_options(mysql_, MYSQL_OPT_WRITE_TIMEOUT, &write_s);
        mysql_options(mysql_, MYSQL_SET_CHARSET_NAME, "utf8mb4");
        // "localhost" would silently mean the default unix socket: the protocol is explicit.
        unsigned protocol = c.unix_socket.empty() ? MYSQL_PROTOCOL_TCP : MYSQL_PROTOCOL_SOCKET;
        mysql_options(mysql_, MYSQL_OPT_PROTOCOL, &protocol);
        // Reading a large return back must not be limited on this side (the server limits).
        unsigned long max_packet = 1024UL * 1024 * 1024;
        mysql_options(mysql_, MYSQL_OPT_MAX_ALLOWED_PACKET, &max_packet);
        // A server may ask the client for any local file (LOAD DATA LOCAL): never. (The
        // option is read as an unsigned int.)
        unsigned local_infile = 0;
        mysql_options(mysql_, MYSQL_OPT_LOCAL_INFILE, &local_infile);

        const bool tls = c.ssl_mode != mysql_ssl_mode::disabled;
        const bool verified = c.ssl_mode == mysql_ssl_mode::verify_ca ||
                              c.ssl_mode == mysql_ssl_mode::verify_identity;
        my_bool enforce = tls ? 1 : 0;
        mysql_options(mysql_, MYSQL_OPT_SSL_ENFORCE, &enforce);
        if (tls) {
            if (!c.ssl_ca.empty()) mysql_options(mysql_, MYSQL_OPT_SSL_CA, c.ssl_ca.c_str());
            if (!c.ssl_cert.empty()) mysql_options(mysql_, MYSQL_OPT_SSL_CERT, c.ssl_cert.c_str());
            if (!c.ssl_key.empty()) mysql_options(mysql_, MYSQL_OPT_SSL_KEY, c.ssl_key.c_str());
            // Connector/C checks the chain whenever a CA is given; the name only with this.
            my_bool verify_name = c.ssl_mode == mysql_ssl_mode::verify_identity ? 1 : 0;
            mysql_options(mysql_, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify_name);
            mysql_options(mysql_, MARIADB_OPT_TLS_VERSION, "TLSv1.2,TLSv1.3");
        }
        // Without an authenticated server, a password must never be sent as clear text (a
        // server in the middle could ask for mysql_clear_password or dialog).
        if (!verified)
            mysql_options(mysql_, MARIADB_OPT_RESTRICTED_AUTH,
                          "mysql_native_password,client_ed25519,caching_sha2_password,"
                          "sha256_password,auth_gssapi_client");
    }

    [[noreturn]] void fail_connect(const mysql_config& c) {
        unsigned code = mysql_errno(mysql_);
        std::string server_msg = mysql_error(mysql_);
        std::string hint;
        if (code == CR_SSL_CONNECTION_ERROR) {
            if (contains_nocase(server_msg, "not support"))
                hint =
                    "; set ssl_mode: disabled to connect without TLS (only over a trusted "
                    "network)";
            else if (tls_failure_is_permanent(server_msg))
                hint = c.ssl_ca.empty()
                           ? "; set ssl_ca to the CA that signed the server's certificate"
                           : fmt::format(
                                 "; check that ssl_ca ({}) signed the server's "
                                 "certificate and that host matches its name",
                                 c.ssl_ca);
        } else if (code == ER_BAD_DB_ERROR) {
            hint = "; create the database first (CREATE DATABASE ... CHARACTER SET utf8mb4)";
        }
        std::string msg = fmt::format("mysql: cannot connect {}: {} (error {}){}", where_,
                                      server_msg, code, hint);
        close();
        throw mysql_failure(code, msg);
    }

    MYSQL* mysql_ = nullptr;
    pid_t pid_ = 0;
    std::uint64_t max_packet_ = 0;
    my_ulonglong last_affected_ = 0;
    std::string where_;
    bool bulk_ = false;
    MYSQL_STMT* stmt_ = nullptr;
    std::string stmt_sql_;  // what stmt_ was prepared from (empty: not prepared)
};

// ---- write path ----------------------------------------------------------------------------

// What goes into one table per batch: the statement's head, tail and one row's text.
struct table_writer {
    const char* head;
    const char* tail;
    void (*append_row)(const connection&, std::string&, const record&);
};

void append_return_row(const connection& c, std::string& out, const record& r) {
    // Columns: full_ret, return, fun, jid, id, success, alter_time, record_id, retcode. The
    // `return` expression reads full_ret, set earlier in the same row, so the payload crosses
    // the wire once.
    out += '(';
    c.quote(out, r.payload);
    out +=
        ",IF(JSON_VALID(`full_ret`),COALESCE(JSON_EXTRACT(`full_ret`,'$.return'),'null'),"
        "'null'),";
    c.quote(out, r.fun);
    out += ',';
    c.quote(out, r.jid);
    out += ',';
    c.quote(out, r.minion);
    // The stock returner stores Python's bool through MySQLdb: '1' or '0' (unknown: False).
    out += r.success == 1 ? ",'1'," : ",'0',";
    append_timestamp(out, r.ts_us);
    out += ',';
    c.quote(out, r.id.empty() ? compute_record_id(r) : r.id);
    if (r.retcode)
        fmt::format_to(std::back_inserter(out), ",{})", *r.retcode);
    else
        out += ",NULL)";
}

void append_event_row(const connection& c, std::string& out, const record& r) {
    out += '(';
    c.quote(out, r.tag);
    out += ',';
    c.quote(out, r.payload);
    out += ',';
    append_timestamp(out, r.ts_us);
    out += ',';
    c.quote(out, r.minion);
    out += ',';
    c.quote(out, r.id.empty() ? compute_record_id(r) : r.id);
    out += ')';
}

void append_load_row(const connection& c, std::string& out, const record& r) {
    out += '(';
    c.quote(out, r.jid);
    out += ',';
    c.quote(out, r.payload);
    fmt::format_to(std::back_inserter(out), ",1,{},{},{},{},", k_load_fun, k_load_tgt,
                   k_load_tgt_type, k_load_user);
    append_timestamp(out, r.ts_us);
    out += ')';
}

// A job row, created as a placeholder (no load yet) if absent.
void append_job_row(const connection& c, std::string& out, const record& r) {
    out += '(';
    c.quote(out, r.jid);
    out += ",'{}',0,";
    append_timestamp(out, r.ts_us);
    out += ')';
}

void append_minions_row(const connection& c, std::string& out, const record& r) {
    out += '(';
    c.quote(out, r.jid);
    out += ",'{}',0,";
    c.quote(out, r.payload);
    out += ')';
}

void append_endtime_row(const connection& c, std::string& out, const record& r) {
    // The payload is a JSON string: its text value is stored (a non-JSON payload verbatim).
    std::string p = c.quoted(r.payload);
    out += '(';
    c.quote(out, r.jid);
    fmt::format_to(std::back_inserter(out),
                   ",'{{}}',0,IF(JSON_VALID({0}),JSON_UNQUOTE(JSON_EXTRACT({0},'$')),{0}),", p);
    append_timestamp(out, r.ts_us);
    out += ')';
}

// A no-op update: an existing row (a re-delivery) is left as it is, and, unlike INSERT
// IGNORE, a value that does not fit is still an error.
const table_writer k_returns = {
    "INSERT INTO `salt_returns` (`full_ret`,`return`,`fun`,`jid`,`id`,`success`,`alter_time`,"
    "`record_id`,`retcode`) VALUES ",
    " ON DUPLICATE KEY UPDATE `record_id` = `record_id`", &append_return_row};

const table_writer k_events = {
    "INSERT INTO `salt_events` (`tag`,`data`,`alter_time`,`master_id`,`record_id`) VALUES ",
    " ON DUPLICATE KEY UPDATE `id` = `id`", &append_event_row};

// The bulk path for events: the same statement, one parameter set per event.
constexpr std::string_view k_events_insert =
    "INSERT INTO `salt_events` (`tag`,`data`,`alter_time`,`master_id`,`record_id`) "
    "VALUES (?,?,?,?,?) ON DUPLICATE KEY UPDATE `id` = `id`";
constexpr unsigned k_event_params = 5;

// Bytes an event takes in a bulk request (values with their length prefixes and type bytes).
std::size_t bulk_event_size(const record& r) noexcept {
    return r.tag.size() + r.payload.size() + r.minion.size() +
           std::max<std::size_t>(r.id.size(), 32) + k_timestamp_len + k_event_params * 10;
}

// Insert-if-absent: a placeholder row (has_load = 0) gets the load, a real load is never
// overwritten. Assignments run left to right, so has_load changes last.
const table_writer k_loads = {
    "INSERT INTO `jids` (`jid`,`load`,`has_load`,`fun`,`tgt`,`tgt_type`,`user`,`alter_time`) "
    "VALUES ",
    " ON DUPLICATE KEY UPDATE `fun` = IF(`has_load`, `fun`, VALUES(`fun`)),"
    " `tgt` = IF(`has_load`, `tgt`, VALUES(`tgt`)),"
    " `tgt_type` = IF(`has_load`, `tgt_type`, VALUES(`tgt_type`)),"
    " `user` = IF(`has_load`, `user`, VALUES(`user`)),"
    " `alter_time` = IF(`has_load`, `alter_time`, VALUES(`alter_time`)),"
    " `load` = IF(`has_load`, `load`, VALUES(`load`)), `has_load` = 1",
    &append_load_row};

const table_writer k_jobs = {"INSERT INTO `jids` (`jid`,`load`,`has_load`,`alter_time`) VALUES ",
                             " ON DUPLICATE KEY UPDATE `jid` = `jid`", &append_job_row};

// Runs after k_jobs for the same records, so every row exists and the update always applies:
// the stored list and the new one (if it is a JSON array) are merged, then reduced to their
// string elements, distinct and sorted by code point. MariaDB allows no subquery over
// VALUES(), hence the two assignments (the second sees the first's result).
#define FASTRET_JSON_ARRAY_OR_EMPTY(x) \
    "IF(JSON_VALID(" x "), IF(JSON_TYPE(" x ") = 'ARRAY', " x ", '[]'), '[]')"
const table_writer k_minions = {
    "INSERT INTO `jids` (`jid`,`load`,`has_load`,`minions`) VALUES ",
    " ON DUPLICATE KEY UPDATE `minions` = JSON_MERGE_PRESERVE("
    FASTRET_JSON_ARRAY_OR_EMPTY("`minions`") ", " FASTRET_JSON_ARRAY_OR_EMPTY("VALUES(`minions`)") "),"
    " `minions` = (SELECT COALESCE(JSON_ARRAYAGG(DISTINCT m.v ORDER BY m.v), '[]') FROM"
    " JSON_TABLE(`jids`.`minions`, '$[*]' COLUMNS (v TEXT CHARACTER SET utf8mb4 COLLATE"
    " utf8mb4_nopad_bin PATH '$', j JSON PATH '$')) m WHERE JSON_TYPE(m.j) = 'STRING')",
    &append_minions_row};

const table_writer k_endtimes = {
    "INSERT INTO `jids` (`jid`,`load`,`has_load`,`endtime`,`alter_time`) VALUES ",
    " ON DUPLICATE KEY UPDATE `endtime` = VALUES(`endtime`)", &append_endtime_row};

// Room left in a packet for the statement separators and the transaction's own statements.
constexpr std::size_t k_packet_slack = 4096;

// Builds the statements for `recs`, each under `limit` bytes: rows are added to the current
// multi-row INSERT until the next one would pass the limit. A row that alone passes it can
// never be sent (the server closes the connection on a larger packet): it is left out.
struct statement_builder {
    const connection& conn;
    std::size_t limit;
    std::vector<std::string>& out;
    std::size_t dropped = 0;
    std::string first_error;

    void add(const table_writer& w, std::span<const record* const> recs) {
        std::string stmt;
        std::string row_text;
        const std::size_t fixed = std::strlen(w.head) + std::strlen(w.tail);
        for (const record* r : recs) {
            row_text.clear();
            w.append_row(conn, row_text, *r);
            if (fixed + row_text.size() > limit) {
                if (dropped++ == 0)
                    first_error = fmt::format(
                        "mysql: a {} record of {} bytes (as SQL) exceeds the server's "
                        "max_allowed_packet ({} bytes) and was left out {}",
                        to_string(r->kind), row_text.size(), limit + k_packet_slack, conn.where());
                continue;
            }
            if (!stmt.empty() && stmt.size() + 1 + row_text.size() + std::strlen(w.tail) > limit) {
                stmt += w.tail;
                out.push_back(std::move(stmt));
                stmt.clear();
            }
            if (stmt.empty()) {
                stmt.reserve(std::min(limit, recs.size() * (row_text.size() + 8) + fixed));
                stmt += w.head;
            } else {
                stmt += ',';
            }
            stmt += row_text;
        }
        if (!stmt.empty()) {
            stmt += w.tail;
            out.push_back(std::move(stmt));
        }
    }
};

}  // namespace

// ---- schema text ---------------------------------------------------------------------------

std::string mysql_schema(const std::string& writer_role, const std::string& reader_role) {
    check_role(writer_role, "writer");
    check_role(reader_role, "reader");
    if (writer_role == reader_role)
        throw config_error("mysql schema: the writer and reader roles must differ");
    std::string out =
        "-- fastret job store for MariaDB 10.6+, compatible with saltext-mysql's schema.\n"
        "-- Run in the target database (mariadb salt < this.sql). Idempotent: it creates what is\n"
        "-- missing, converts stock tables to utf8mb4 / TIMESTAMP(6) once and adds fastret's\n"
        "-- columns and indexes.\n";
    for (const auto& stmt : schema_statements()) out.append(stmt).append(";\n");
    const std::string& w = writer_role;
    const std::string& r = reader_role;
    out += fmt::format(
        "-- Roles. Grant them to accounts and make them default, e.g.:\n"
        "--   GRANT `{0}` TO 'salt'@'%'; SET DEFAULT ROLE `{0}` FOR 'salt'@'%';\n"
        "--   GRANT `{1}` TO 'analyst'@'%'; SET DEFAULT ROLE `{1}` FOR 'analyst'@'%';\n"
        "CREATE ROLE IF NOT EXISTS `{0}`;\n"
        "CREATE ROLE IF NOT EXISTS `{1}`;\n",
        w, r);
    // MariaDB asks for UPDATE on every column an INSERT ... ON DUPLICATE KEY UPDATE names,
    // not only on the columns it assigns: the writer's upserts need UPDATE on the tables.
    // What it cannot do is change the schema, touch other tables, or delete archived rows.
    out += fmt::format(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON `jids` TO `{0}`;\n"
        "GRANT SELECT, INSERT, UPDATE, DELETE ON `salt_returns` TO `{0}`;\n"
        "GRANT SELECT, INSERT, UPDATE, DELETE ON `salt_events` TO `{0}`;\n"
        "GRANT SELECT, INSERT, UPDATE ON `jids_archive` TO `{0}`;\n"
        "GRANT SELECT, INSERT, UPDATE ON `salt_returns_archive` TO `{0}`;\n"
        "GRANT SELECT, INSERT, UPDATE ON `salt_events_archive` TO `{0}`;\n",
        w);
    for (auto table : k_table_names) {
        out += fmt::format("GRANT SELECT ON `{}` TO `{}`;\n", table, r);
        out += fmt::format("GRANT SELECT ON `{}` TO `{}`;\n", archive_name(table), r);
    }
    return out;
}

// ---- the store -----------------------------------------------------------------------------

struct mysql_store::impl {
    mysql_config config;
    std::string where;  // "user@host:port/db", for messages
    std::mutex mu;
    connection conn;
    std::string packet;              // reused: the write path's SQL text
    std::uint64_t bulk_batches = 0;  // batches whose events went by send_events()
    // send_events()'s column arrays, reused.
    std::array<std::vector<const char*>, k_event_params> values;
    std::array<std::vector<unsigned long>, k_event_params> lengths;
    std::vector<char> times;
    std::vector<std::string> ids;

    void connect() { conn.open(config, where); }

    bool schema_complete() {
        std::size_t columns = 0, indexes = 0, tables_n = 0;
        auto rows = conn.query(schema_probe_sql(columns, indexes, tables_n), "schema check");
        auto num = [&](std::size_t i) {
            return rows.empty() || !rows[0][i] ? 0ULL : std::stoull(*rows[0][i]);
        };
        return num(0) == columns && num(1) == indexes && num(2) == tables_n && num(3) == tables_n;
    }

    [[noreturn]] void schema_missing(const std::string& reason) {
        throw mysql_failure(
            write_status::fatal,
            fmt::format("mysql: schema missing or incomplete in database '{}' {}: {}; run "
                        "`fastret schema mysql --apply` as a user allowed to create tables "
                        "(or pipe `fastret schema mysql` into the mariadb client)",
                        config.db, where, reason));
    }

    void ensure_schema() {
        if (schema_complete()) return;
        if (!config.create_schema) schema_missing("create_schema is off");
        // One creator at a time (every process of a master opens a store at start); the lock
        // is per database and released by the server if this connection dies.
        const std::string lock_name = "fastret_schema_" + config.db.substr(0, 40);
        const unsigned wait_s = std::max(1u, whole_seconds(config.read_timeout_ms) - 1);
        auto got = conn.query(
            fmt::format("SELECT GET_LOCK({}, {})", conn.quoted(lock_name), wait_s), "schema lock");
        if (got.empty() || !got[0][0] || *got[0][0] != "1")
            throw mysql_failure(write_status::retry,
                                "mysql: another process is creating the schema " + where +
                                    " (lock not granted in time)");
        try {
            if (!schema_complete())
                for (const auto& stmt : schema_statements()) conn.run(stmt, "create schema");
        } catch (const mysql_failure& e) {
            if (conn.is_open()) {
                try {
                    conn.run(fmt::format("DO RELEASE_LOCK({})", conn.quoted(lock_name)), "unlock");
                } catch (...) {
                }
            }
            if (privilege_error(e.code))
                schema_missing(std::string("this user may not create it (") + e.what() + ")");
            throw;
        }
        conn.run(fmt::format("DO RELEASE_LOCK({})", conn.quoted(lock_name)), "unlock");
    }

    void rollback() noexcept {
        if (!conn.is_open()) return;
        try {
            conn.run("ROLLBACK", "rollback");
        } catch (...) {
        }
    }

    // The statements of `recs` (grouped by table, in an order that makes every outcome the
    // same as writing the records one by one).
    // The most one statement (or one bulk request) may take: the server's packet limit less
    // room for separators and the transaction's own statements.
    std::size_t statement_limit() const noexcept {
        return conn.max_packet() > 2 * k_packet_slack ? conn.max_packet() - k_packet_slack
                                                      : k_packet_slack;
    }

    // With `bulk`, events are left to the caller in it (for send_events) instead of becoming
    // INSERT text; an event too large for a packet stays with the INSERTs, which leave it out
    // with the reason.
    statement_builder build(std::span<const record> recs, std::vector<std::string>& out,
                            std::vector<const record*>* bulk = nullptr) {
        const std::size_t limit = statement_limit();
        statement_builder b{conn, limit, out, 0, {}};
        std::vector<const record*> rets, events, loads, minions, endtimes;
        for (const auto& r : recs) {
            switch (r.kind) {
                case record_kind::job_return:
                    rets.push_back(&r);
                    break;
                case record_kind::event:
                    (bulk && bulk_event_size(r) <= limit ? *bulk : events).push_back(&r);
                    break;
                case record_kind::job_load:
                    loads.push_back(&r);
                    break;
                case record_kind::job_minions:
                    minions.push_back(&r);
                    break;
                case record_kind::job_endtime:
                    endtimes.push_back(&r);
                    break;
                default:
                    if (b.dropped++ == 0)
                        b.first_error = fmt::format("mysql: unknown record kind {} (left out)",
                                                    static_cast<int>(r.kind));
            }
        }
        // Job rows in key order, so that two writers upserting the same jids take their row
        // locks in the same order (a deadlock that remains is a retry); stable: a jid's
        // records keep their batch order (the first load wins, the last end time stays).
        auto by_jid = [](const record* a, const record* b) { return a->jid < b->jid; };
        std::stable_sort(loads.begin(), loads.end(), by_jid);
        std::stable_sort(minions.begin(), minions.end(), by_jid);
        std::stable_sort(endtimes.begin(), endtimes.end(), by_jid);
        b.add(k_returns, rets);
        b.add(k_events, events);
        b.add(k_loads, loads);
        b.add(k_jobs, minions);
        b.add(k_minions, minions);
        b.add(k_endtimes, endtimes);
        return b;
    }

    // Sends the statements in as few packets as max_allowed_packet allows, the first opening
    // the transaction and, with `commit`, the last committing it.
    void send(const std::vector<std::string>& stmts, bool commit = true) {
        const std::size_t limit = conn.max_packet() > 2 * k_packet_slack
                                      ? conn.max_packet() - k_packet_slack / 2
                                      : k_packet_slack;
        packet.clear();
        packet += "START TRANSACTION";
        for (const auto& s : stmts) {
            if (packet.size() + 1 + s.size() > limit) {
                conn.run(packet, "write");
                packet.clear();
            }
            if (!packet.empty()) packet += ';';
            packet += s;
        }
        if (commit) {
            if (packet.size() + 8 > limit) {
                conn.run(packet, "write");
                packet.clear();
            }
            if (!packet.empty()) packet += ';';
            packet += "COMMIT";
        }
        conn.run(packet, "write");
        // Kept for the next batch, unless one unusually large batch grew it.
        if (packet.capacity() > (std::size_t{8} << 20)) packet = std::string();
    }

    // True if the bulk statement is prepared (now or earlier on this connection). A server
    // that cannot prepare it (max_prepared_stmt_count reached, a proxy without the binary
    // protocol) gets INSERT text for as long as the connection lasts.
    bool bulk_ready() {
        if (!config.bulk_events || !conn.bulk_supported()) return false;
        try {
            conn.prepared(k_events_insert, "prepare");
            return true;
        } catch (const mysql_failure& e) {
            if (!conn.is_open()) throw;
            conn.bulk_unusable();
            return false;
        }
    }

    // Errors of a bulk execute that say the server cannot do it at all, not that a value is
    // wrong.
    static bool bulk_refused(unsigned code) noexcept {
        return code == ER_UNKNOWN_COM_ERROR || code == ER_UNSUPPORTED_PS ||
               code == ER_NOT_SUPPORTED_YET;
    }

    // `events` by the prepared INSERT with arrays of parameter sets, as few requests as
    // max_allowed_packet allows, inside the transaction the caller opened.
    void send_events(std::span<const record* const> events) {
        conn.prepared(k_events_insert, "write");
        const std::size_t limit = statement_limit();
        for (std::size_t begin = 0; begin < events.size();) {
            std::size_t end = begin, bytes = 0;
            while (end < events.size() &&
                   (end == begin || bytes + bulk_event_size(*events[end]) <= limit))
                bytes += bulk_event_size(*events[end++]);
            const std::size_t n = end - begin;
            for (auto& v : values) v.resize(n);
            for (auto& v : lengths) v.resize(n);
            times.resize(n * k_timestamp_len);
            ids.clear();
            ids.reserve(n);  // no reallocation: values[4] points into it
            for (std::size_t i = 0; i < n; ++i) {
                const record& r = *events[begin + i];
                char* time = times.data() + i * k_timestamp_len;
                format_timestamp(time, r.ts_us);
                const std::string* id = &r.id;
                if (r.id.empty()) id = &ids.emplace_back(compute_record_id(r));
                const std::string_view fields[k_event_params] = {
                    r.tag, r.payload, {time, k_timestamp_len}, r.minion, *id};
                for (unsigned c = 0; c < k_event_params; ++c) {
                    values[c][i] = fields[c].data();
                    lengths[c][i] = static_cast<unsigned long>(fields[c].size());
                }
            }
            MYSQL_BIND bind[k_event_params];
            std::memset(bind, 0, sizeof bind);
            for (unsigned c = 0; c < k_event_params; ++c) {
                bind[c].buffer_type = MYSQL_TYPE_STRING;
                bind[c].buffer = values[c].data();
                bind[c].length = lengths[c].data();
            }
            conn.execute_array(bind, static_cast<unsigned>(n), "write");
            begin = end;
        }
    }

    // The batch in one transaction; with `bulk`, its events by send_events().
    write_result send_batch(std::span<const record> batch, bool bulk) {
        std::vector<std::string> stmts;
        std::vector<const record*> events;
        statement_builder b = build(batch, stmts, bulk ? &events : nullptr);
        write_result res;
        res.dropped = b.dropped;
        res.error = std::move(b.first_error);
        if (events.empty()) {
            if (!stmts.empty()) send(stmts);
            return res;
        }
        send(stmts, false);  // opens the transaction
        send_events(events);
        conn.run("COMMIT", "write");
        ++bulk_batches;
        return res;
    }

    // The batch again, record by record, each under a savepoint: a record that fails with a
    // drop-class error is left out, any other failure abandons the transaction.
    write_result write_each(std::span<const record> batch) {
        write_result res;
        std::vector<std::string> stmts;
        std::vector<const record*> events;
        try {
            // The same path for an event as in a whole batch: an event that fits a bulk
            // request but not a packet as INSERT text (escaping can double it) is stored too.
            const bool bulk = bulk_ready();
            conn.run("START TRANSACTION", "write");
            for (const auto& rec : batch) {
                stmts.clear();
                events.clear();
                auto b = build(std::span<const record>(&rec, 1), stmts, bulk ? &events : nullptr);
                if (b.dropped) {
                    if (res.dropped++ == 0) res.error = b.first_error;
                    continue;
                }
                packet = "SAVEPOINT fastret_record";
                for (const auto& s : stmts) packet.append(";").append(s);
                try {
                    conn.run(packet, "write");
                    if (!events.empty()) send_events(events);
                } catch (const mysql_failure& e) {
                    if (e.status != write_status::drop || !conn.is_open()) throw;
                    conn.run("ROLLBACK TO SAVEPOINT fastret_record", "write");
                    if (res.dropped++ == 0) res.error = e.what();
                }
            }
            conn.run("COMMIT", "write");
        } catch (const mysql_failure& e) {
            rollback();
            return {e.status == write_status::drop ? write_status::retry : e.status, e.what(), 0};
        }
        return res;
    }

    write_result write(std::span<const record> batch) {
        if (!conn.is_open()) {
            try {
                connect();
            } catch (const mysql_failure& e) {
                return {e.status == write_status::ok ? write_status::retry : e.status, e.what(), 0};
            }
        }
        bool bulk = false;
        try {
            bulk = bulk_ready();
            return send_batch(batch, bulk);
        } catch (const mysql_failure& e) {
            rollback();
            // A connection lost on the way (whatever the error's class) is reopened by the
            // next write, which may well store the whole batch.
            if (!conn.is_open() && e.status == write_status::drop)
                return {write_status::retry, e.what(), 0};
            if (bulk && conn.is_open() && bulk_refused(e.code)) {
                // The server (or a proxy) announced bulk execute and then refused it: INSERT
                // text for as long as this connection lasts.
                conn.bulk_unusable();
                return write(batch);
            }
            if (e.status != write_status::drop || batch.size() == 1) return {e.status, e.what(), 0};
        }
        // One record cannot be stored: the batch again record by record, leaving out only the
        // records at fault.
        return write_each(batch);
    }

    // Runs a read (or a whole transaction); a connection found lost (idle timeout, server
    // restart) is reopened and `f` runs once more: reads are idempotent, and a transaction
    // that failed was rolled back.
    template <class F>
    auto with_retry(F&& f) {
        std::lock_guard lock(mu);
        for (int attempt = 0;; ++attempt) {
            const bool was_open = conn.is_open();
            if (!was_open) connect();
            try {
                return f();
            } catch (const mysql_failure& e) {
                if (attempt == 0 && was_open && connection_lost(e.code)) continue;
                throw;
            }
        }
    }

    std::optional<std::string> scalar(const std::string& sql) {
        auto rows = conn.query(sql);
        if (rows.empty() || !rows[0][0]) return std::nullopt;
        return std::move(*rows[0][0]);
    }

    std::vector<std::pair<std::string, std::string>> pairs(const std::string& sql) {
        std::vector<std::pair<std::string, std::string>> out;
        for (auto& r : conn.query(sql))
            out.emplace_back(r[0].value_or(std::string()), r[1].value_or(std::string()));
        return out;
    }
};

void apply_mysql_schema(const mysql_config& config, const std::string& writer_role,
                        const std::string& reader_role) {
    const std::string ddl = mysql_schema(writer_role, reader_role);
    connection conn;
    conn.open(config, fmt::format("({}@{}/{})", config.user,
                                  config.unix_socket.empty()
                                      ? fmt::format("{}:{}", config.host, config.port)
                                      : config.unix_socket,
                                  config.db));
    conn.run(ddl, "apply schema");
}

mysql_store::mysql_store(mysql_config config) : impl_(std::make_unique<impl>()) {
    if (config.ssl_mode == mysql_ssl_mode::verify_ca && config.ssl_ca.empty())
        throw store_error(write_status::fatal,
                          "mysql: ssl_mode verify_ca needs ssl_ca (the CA file to check the "
                          "server's certificate against)");
    if (config.ssl_cert.empty() != config.ssl_key.empty())
        throw store_error(write_status::fatal,
                          "mysql: ssl_cert and ssl_key go together (the client certificate and "
                          "its key)");
    for (const auto* path : {&config.ssl_ca, &config.ssl_cert, &config.ssl_key}) {
        if (path->empty()) continue;
        std::ifstream probe(*path);
        if (!probe)
            throw store_error(write_status::fatal,
                              fmt::format("mysql: cannot read TLS file '{}'", *path));
    }
    impl_->where =
        config.unix_socket.empty()
            ? fmt::format("({}@{}:{}/{})", config.user, config.host, config.port, config.db)
            : fmt::format("({}@{}/{})", config.user, config.unix_socket, config.db);
    impl_->config = std::move(config);
    std::lock_guard lock(impl_->mu);
    impl_->connect();
    impl_->ensure_schema();
}

mysql_store::~mysql_store() = default;

std::uint64_t mysql_store::max_packet() const noexcept {
    std::lock_guard lock(impl_->mu);
    return impl_->conn.max_packet();
}

std::uint64_t mysql_store::bulk_batches() const noexcept {
    std::lock_guard lock(impl_->mu);
    return impl_->bulk_batches;
}

write_result mysql_store::write(std::span<const record> batch) noexcept {
    try {
        std::lock_guard lock(impl_->mu);
        try {
            return impl_->write(batch);
        } catch (const std::bad_alloc&) {
            impl_->rollback();
            return {write_status::retry, "mysql: out of memory", 0};
        } catch (const std::exception& e) {
            impl_->rollback();
            return {write_status::retry, std::string("mysql: ") + e.what(), 0};
        }
    } catch (...) {
        // Only reachable if locking or building the error message itself failed.
        return {write_status::retry, "mysql: write failed", 0};
    }
}

std::optional<std::string> mysql_store::get_load(const std::string& jid) {
    return impl_->with_retry([&] {
        return impl_->scalar("SELECT `load` FROM `jids` WHERE `jid` = " + impl_->conn.quoted(jid) +
                             " AND `has_load` = 1");
    });
}

std::optional<std::string> mysql_store::get_minions_of(const std::string& jid) {
    return impl_->with_retry([&] {
        return impl_->scalar("SELECT `minions` FROM `jids` WHERE `jid` = " +
                             impl_->conn.quoted(jid));
    });
}

std::vector<std::pair<std::string, std::string>> mysql_store::get_returns(const std::string& jid) {
    return impl_->with_retry([&] {
        return impl_->pairs(
            "SELECT `id`, `full_ret` FROM (SELECT `id`, `full_ret`, ROW_NUMBER() OVER ("
            "PARTITION BY `id` ORDER BY `alter_time` DESC, `record_id` DESC) AS rn FROM "
            "`salt_returns` WHERE `jid` = " +
            impl_->conn.quoted(jid) + ") r WHERE rn = 1 ORDER BY `id`");
    });
}

std::vector<std::pair<std::string, std::string>> mysql_store::get_jobs(std::size_t limit,
                                                                       bool skip_find_job) {
    return impl_->with_retry([&] {
        std::string sql = "SELECT `jid`, `load` FROM `jids` WHERE `has_load` = 1";
        if (skip_find_job) sql += " AND NOT (`fun` <=> 'saltutil.find_job')";
        sql += " ORDER BY `jid` DESC";
        if (limit != 0) sql += fmt::format(" LIMIT {}", limit);
        return impl_->pairs(sql);
    });
}

std::vector<std::string> mysql_store::get_minion_ids() {
    return impl_->with_retry([&] {
        std::vector<std::string> out;
        for (auto& r : impl_->conn.query("SELECT DISTINCT `id` FROM `salt_returns` ORDER BY `id`"))
            if (r[0]) out.push_back(std::move(*r[0]));
        return out;
    });
}

std::vector<std::pair<std::string, std::string>> mysql_store::get_fun(const std::string& fun) {
    // Every row matched has this fun, so each minion's latest call of it is the pair itself.
    return impl_->with_retry([&] {
        return impl_->pairs("SELECT DISTINCT `id`, `fun` FROM `salt_returns` WHERE `fun` = " +
                            impl_->conn.quoted(fun) + " ORDER BY `id`");
    });
}

std::optional<std::string> mysql_store::get_endtime(const std::string& jid) {
    return impl_->with_retry([&] {
        return impl_->scalar("SELECT `endtime` FROM `jids` WHERE `jid` = " +
                             impl_->conn.quoted(jid));
    });
}

std::uint64_t mysql_store::clean_old_jobs(std::int64_t cutoff_us) {
    auto& c = impl_->conn;
    std::string cutoff;
    append_timestamp(cutoff, cutoff_us);
    // Returns of expiring jobs first (none is left without its job), then the jobs, the
    // events, and old returns whose job was never stored (or is gone already).
    const std::string expiring_jobs = "SELECT `jid` FROM `jids` WHERE `alter_time` < " + cutoff;
    const std::string returns_of_expiring = "`jid` IN (" + expiring_jobs + ")";
    const std::string stray_returns =
        "`alter_time` < " + cutoff +
        " AND NOT EXISTS (SELECT 1 FROM `jids` WHERE `jids`.`jid` = `salt_returns`.`jid`)";
    const std::string job_cols =
        "`jid`, `load`, `minions`, `endtime`, `has_load`, `fun`, `tgt`, `tgt_type`, `user`, "
        "`alter_time`";
    const std::string ret_cols =
        "`fun`, `jid`, `return`, `id`, `success`, `full_ret`, `alter_time`, `record_id`, "
        "`retcode`";
    // An archived event gets the archive's own id: ids copied from salt_events could meet
    // rows archived before (a table truncated or recreated starts its ids again) and, being
    // the key, would make the archive keep the old row instead of this one.
    const std::string event_cols = "`tag`, `data`, `alter_time`, `master_id`, `record_id`";
    return impl_->with_retry([&] {
        std::uint64_t deleted = 0;
        try {
            c.run("START TRANSACTION", "clean_old_jobs");
            if (impl_->config.archive) {
                // Moved rows meet an archived copy only when a record was re-delivered after an
                // earlier clean: the copy already there is kept.
                c.run(fmt::format("INSERT INTO `salt_returns_archive` ({0}) SELECT {0} FROM "
                                  "`salt_returns` WHERE {1} ON DUPLICATE KEY UPDATE "
                                  "`salt_returns_archive`.`record_id` = "
                                  "`salt_returns_archive`.`record_id`",
                                  ret_cols, returns_of_expiring),
                      "archive");
                c.run(fmt::format("INSERT INTO `salt_returns_archive` ({0}) SELECT {0} FROM "
                                  "`salt_returns` WHERE {1} ON DUPLICATE KEY UPDATE "
                                  "`salt_returns_archive`.`record_id` = "
                                  "`salt_returns_archive`.`record_id`",
                                  ret_cols, stray_returns),
                      "archive");
                c.run(
                    fmt::format("INSERT INTO `jids_archive` ({0}) SELECT {0} FROM `jids` WHERE "
                                "`alter_time` < {1} ON DUPLICATE KEY UPDATE `jids_archive`.`jid` = "
                                "`jids_archive`.`jid`",
                                job_cols, cutoff),
                    "archive");
                c.run(fmt::format("INSERT INTO `salt_events_archive` ({0}) SELECT {0} FROM "
                                  "`salt_events` WHERE `alter_time` < {1} ON DUPLICATE KEY UPDATE "
                                  "`salt_events_archive`.`id` = `salt_events_archive`.`id`",
                                  event_cols, cutoff),
                      "archive");
            }
            for (const std::string& sql :
                 {"DELETE FROM `salt_returns` WHERE " + returns_of_expiring,
                  "DELETE FROM `jids` WHERE `alter_time` < " + cutoff,
                  "DELETE FROM `salt_events` WHERE `alter_time` < " + cutoff,
                  "DELETE FROM `salt_returns` WHERE " + stray_returns}) {
                c.run(sql, "clean_old_jobs");
                deleted += c.affected();
            }
            c.run("COMMIT", "clean_old_jobs");
        } catch (...) {
            impl_->rollback();
            throw;
        }
        return deleted;
    });
}

std::vector<std::pair<std::string, std::string>> mysql_store::get_events(
    const std::string& tag_glob, std::size_t limit) {
    // MariaDB (10.11) computes the index range of `tag LIKE 'p%'` under a binary utf8mb4
    // collation with U+FFFF as the largest character, and so misses tags with a character
    // beyond the BMP (an emoji) after the prefix. The LIKE is therefore hidden from the range
    // optimizer (CONCAT), and the index range is given exactly: the glob's literal prefix and
    // the first string past every string starting with it.
    const std::string prefix = tag_glob.substr(0, tag_glob.find_first_of("*?"));
    return impl_->with_retry([&] {
        auto& c = impl_->conn;
        std::string sql = "SELECT `tag`, `data` FROM `salt_events` WHERE CONCAT(`tag`) LIKE " +
                          c.quoted(glob_to_like(tag_glob));
        if (!prefix.empty()) {
            sql += " AND `tag` >= " + c.quoted(prefix);
            const std::string past = successor(prefix);
            if (!past.empty()) sql += " AND `tag` < " + c.quoted(past);
        }
        sql += " ORDER BY `alter_time` DESC, `id` DESC";
        if (limit != 0) sql += fmt::format(" LIMIT {}", limit);
        return impl_->pairs(sql);
    });
}

std::uint64_t mysql_store::count(const std::string& table) {
    // The table name is looked up, never interpolated.
    static const std::array<std::pair<std::string_view, const char*>, 3> k_count = {{
        {"jids", "SELECT COUNT(*) FROM `jids`"},
        {"salt_returns", "SELECT COUNT(*) FROM `salt_returns`"},
        {"salt_events", "SELECT COUNT(*) FROM `salt_events`"},
    }};
    const char* sql = nullptr;
    for (const auto& [name, query] : k_count)
        if (name == table) sql = query;
    if (!sql) throw std::invalid_argument("mysql: unknown table for count()");
    return impl_->with_retry([&] {
        auto v = impl_->scalar(sql);
        return v ? std::stoull(*v) : 0ULL;
    });
}

}  // namespace fastret
