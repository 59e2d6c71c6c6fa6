// Write paths for a batch of events or returns into PostgreSQL, measured against a plain COPY
// of the same rows (the physical reference). This is how pg_store's write path was chosen.
//
//   python3 tests/fixtures/postgres_server.py start /tmp/pgbench [--durable]
//   g++ -O2 -std=c++20 bench/pg_write_paths.cpp -o /tmp/pg_write_paths $(pkg-config --cflags --libs libpq)
//
// With -DFASTRET_BENCH_STORE -Icpp/include -L<build>/cpp -lfastret -Wl,-rpath,<build>/cpp it
// also measures pg_store::write itself (records in, committed rows out) on the real schema.
//   /tmp/pg_write_paths /tmp/pgbench/info.json [batches] [batch_size] [payload_bytes] [rounds] [only]
//
// Every variant writes the same rows in batches, one transaction per batch, into a fresh copy
// of the schema's table (same columns, same indexes), starting from an empty table. Rows/s is
// batches * batch_size / wall time, client encoding included.
#include <libpq-fe.h>

#ifdef FASTRET_BENCH_STORE
#include "fastret/pg_store.hpp"
#endif

#include <arpa/inet.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct row {
    std::string record_id, tag, data, master, jid, minion, fun;
    std::int64_t ts_us;
};

std::string json_field(const std::string& json, const std::string& key) {
    auto k = "\"" + key + "\"";
    auto p = json.find(k);
    if (p == std::string::npos) return {};
    p = json.find(':', p) + 1;
    while (json[p] == ' ') ++p;
    if (json[p] == '"') {
        auto e = json.find('"', p + 1);
        return json.substr(p + 1, e - p - 1);
    }
    auto e = json.find_first_of(",}", p);
    return json.substr(p, e - p);
}

[[noreturn]] void die(PGconn* c, const char* what) {
    std::fprintf(stderr, "%s: %s\n", what, c ? PQerrorMessage(c) : "");
    std::exit(1);
}

void exec(PGconn* c, const std::string& sql) {
    PGresult* r = PQexec(c, sql.c_str());
    auto st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        std::fprintf(stderr, "%s\n%s", sql.c_str(), PQresultErrorMessage(r));
        std::exit(1);
    }
    PQclear(r);
}

void check(PGconn* c, PGresult* r, const char* what) {
    auto st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        std::fprintf(stderr, "%s: %s", what, PQresultErrorMessage(r));
        std::exit(1);
    }
    PQclear(r);
    (void)c;
}

// ---- encodings -----------------------------------------------------------------------------

constexpr std::int64_t k_pg_epoch_us = 946684800000000LL;  // 2000-01-01 in Unix microseconds

void put32(std::string& out, std::uint32_t v) {
    v = htonl(v);
    out.append(reinterpret_cast<const char*>(&v), 4);
}
void put16(std::string& out, std::uint16_t v) {
    v = htons(v);
    out.append(reinterpret_cast<const char*>(&v), 2);
}
void put64(std::string& out, std::int64_t v) {
    put32(out, static_cast<std::uint32_t>(static_cast<std::uint64_t>(v) >> 32));
    put32(out, static_cast<std::uint32_t>(v));
}

std::string ts_text(std::int64_t us) {
    std::time_t s = us / 1000000;
    std::tm tm{};
    gmtime_r(&s, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02d %02d:%02d:%02d.%06lld+00", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<long long>(us % 1000000));
    return buf;
}

// Binary one-dimensional array (array_send's format) of n elements from `elem(i, out)`.
template <class F>
std::string bin_array(std::uint32_t elem_oid, std::size_t n, F elem) {
    std::string out;
    put32(out, 1);
    put32(out, 0);
    put32(out, elem_oid);
    put32(out, static_cast<std::uint32_t>(n));
    put32(out, 1);
    for (std::size_t i = 0; i < n; ++i) elem(i, out);
    return out;
}
void bin_text(std::string& out, const std::string& s) {
    put32(out, static_cast<std::uint32_t>(s.size()));
    out += s;
}
void bin_jsonb(std::string& out, const std::string& s) {
    put32(out, static_cast<std::uint32_t>(s.size() + 1));
    out += '\1';
    out += s;
}
void bin_ts(std::string& out, std::int64_t us) {
    put32(out, 8);
    put64(out, us - k_pg_epoch_us);
}

// Text array literal.
void text_elem(std::string& out, const std::string& s) {
    out += '"';
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    out += '"';
}

// COPY text-format field.
void copy_text(std::string& out, const std::string& s) {
    for (char c : s) {
        switch (c) {
            case '\\': out += "\\\\"; break;
            case '\t': out += "\\t"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            default: out += c;
        }
    }
}

// ---- data ----------------------------------------------------------------------------------

std::vector<row> make_rows(std::size_t n, std::size_t payload, std::int64_t base_ts,
                           std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<row> rows(n);
    for (std::size_t i = 0; i < n; ++i) {
        row& r = rows[i];
        char id[40];
        std::snprintf(id, sizeof id, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                      static_cast<unsigned long long>(rng()));
        r.record_id = id;
        r.jid = "2026112708155" + std::to_string(2000000 + i);
        r.minion = "minion" + std::to_string(i % 500);
        r.fun = "state.apply";
        r.tag = "salt/job/" + r.jid + "/ret/" + r.minion;
        r.master = "master1";
        r.ts_us = base_ts + static_cast<std::int64_t>(i);
        std::string d = "{\"cmd\":\"_return\",\"id\":\"" + r.minion + "\",\"jid\":\"" + r.jid +
                        "\",\"fun\":\"state.apply\",\"success\":true,\"retcode\":0,"
                        "\"fun_args\":[\"webserver\",{\"test\":false}],\"return\":{\"file_|-x\":"
                        "{\"comment\":\"";
        while (d.size() + 40 < payload) d += "line with \\\"quotes\\\" and \\\\ backslash ";
        d += "\",\"result\":true}},\"_stamp\":\"2026-11-27T08:15:52.123456\"}";
        r.data = d;
    }
    return rows;
}

// ---- schema --------------------------------------------------------------------------------

const char* k_events_ddl =
    "DROP TABLE IF EXISTS b_events; DROP SEQUENCE IF EXISTS b_seq;"
    "CREATE SEQUENCE b_seq;"
    "CREATE TABLE b_events (id bigint NOT NULL DEFAULT nextval('b_seq') PRIMARY KEY,"
    " tag varchar(255) NOT NULL, data jsonb NOT NULL, alter_time timestamptz DEFAULT now(),"
    " master_id varchar(255) NOT NULL, record_id text);"
    "CREATE UNIQUE INDEX b_events_time_record ON b_events (alter_time, record_id);"
    "CREATE INDEX b_events_tag ON b_events (tag);";

const char* k_returns_ddl =
    "DROP TABLE IF EXISTS b_returns;"
    "CREATE TABLE b_returns (fun varchar(50) NOT NULL, jid varchar(255) NOT NULL,"
    " \"return\" jsonb NOT NULL, id varchar(255) NOT NULL, success varchar(10) NOT NULL,"
    " full_ret jsonb NOT NULL, alter_time timestamptz DEFAULT now(), record_id text,"
    " retcode bigint);"
    "CREATE UNIQUE INDEX b_returns_record ON b_returns (record_id);"
    "CREATE INDEX b_returns_id ON b_returns (id);"
    "CREATE INDEX b_returns_jid ON b_returns (jid);"
    "CREATE INDEX b_returns_fun_id_time ON b_returns (fun, id, alter_time);"
    "CREATE INDEX b_returns_time ON b_returns (alter_time);";

// ---- variants: events ------------------------------------------------------------------------

using writer = std::function<void(PGconn*, const std::vector<row>&)>;

// COPY ... FROM STDIN of `data` (already in the statement's format) in the open transaction.
void copy_in(PGconn* c, const char* copy_sql, const std::string& data) {
    PGresult* r = PQexec(c, copy_sql);
    if (PQresultStatus(r) != PGRES_COPY_IN) die(c, "copy");
    PQclear(r);
    if (PQputCopyData(c, data.data(), static_cast<int>(data.size())) != 1) die(c, "putcopy");
    if (PQputCopyEnd(c, nullptr) != 1) die(c, "copyend");
    check(c, PQgetResult(c), "copy result");
    while ((r = PQgetResult(c))) PQclear(r);
}

// COPY's binary format: header, per row the field count and `fields(buf, row)`, trailer.
template <class F>
std::string copy_binary(const std::vector<row>& rows, std::uint16_t n_fields, F fields) {
    std::string buf("PGCOPY\n\377\r\n\0", 11);
    put32(buf, 0);
    put32(buf, 0);
    for (const auto& x : rows) {
        put16(buf, n_fields);
        fields(buf, x);
    }
    put16(buf, 0xffff);
    return buf;
}

// tag, data, alter_time, master_id, record_id
void event_fields(std::string& buf, const row& x) {
    bin_text(buf, x.tag);
    bin_jsonb(buf, x.data);
    bin_ts(buf, x.ts_us);
    bin_text(buf, x.master);
    bin_text(buf, x.record_id);
}

// fun, jid, "return", id, success, full_ret, alter_time, record_id, retcode
void return_fields(std::string& buf, const row& x) {
    bin_text(buf, x.fun);
    bin_text(buf, x.jid);
    bin_jsonb(buf, "{\"file_|-x\":{\"result\":true}}");  // a client would have to split it
    bin_text(buf, x.minion);
    bin_text(buf, "true");
    bin_jsonb(buf, x.data);
    bin_ts(buf, x.ts_us);
    bin_text(buf, x.record_id);
    put32(buf, 8);
    put64(buf, 0);
}

// One transaction in pipeline mode: BEGIN, the prepared statement `name`, COMMIT.
void pipelined_transaction(PGconn* c, const char* name, int n_params, const char* const* vals,
                           const int* lens, const int* fmts) {
    if (PQenterPipelineMode(c) != 1) die(c, "pipeline");
    PQsendQueryParams(c, "BEGIN", 0, nullptr, nullptr, nullptr, nullptr, 0);
    PQsendQueryPrepared(c, name, n_params, vals, lens, fmts, 0);
    PQsendQueryParams(c, "COMMIT", 0, nullptr, nullptr, nullptr, nullptr, 0);
    PQpipelineSync(c);
    for (int i = 0; i < 3; ++i) {
        check(c, PQgetResult(c), "unnest");
        if (PQgetResult(c)) die(c, "expected null");
    }
    PGresult* s = PQgetResult(c);
    if (PQresultStatus(s) != PGRES_PIPELINE_SYNC) die(c, "sync");
    PQclear(s);
    PQexitPipelineMode(c);
}

void ev_copy_plain_bin(PGconn* c, const std::vector<row>& rows) {
    exec(c, "BEGIN");
    copy_in(c, "COPY b_events (tag, data, alter_time, master_id, record_id) FROM STDIN "
               "(FORMAT binary)", copy_binary(rows, 5, event_fields));
    exec(c, "COMMIT");
}

void ev_copy_plain_text(PGconn* c, const std::vector<row>& rows) {
    std::string buf;
    for (const auto& x : rows) {
        copy_text(buf, x.tag);
        buf += '\t';
        copy_text(buf, x.data);
        buf += '\t';
        buf += ts_text(x.ts_us);
        buf += '\t';
        copy_text(buf, x.master);
        buf += '\t';
        buf += x.record_id;
        buf += '\n';
    }
    exec(c, "BEGIN");
    copy_in(c, "COPY b_events (tag, data, alter_time, master_id, record_id) FROM STDIN", buf);
    exec(c, "COMMIT");
}

// (c) COPY (binary) into a temp table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING.
void ev_copy_temp(PGconn* c, const std::vector<row>& rows) {
    static PGconn* prepared = nullptr;
    if (prepared != c) {
        exec(c, "CREATE TEMP TABLE IF NOT EXISTS b_events_in (tag text, data jsonb, alter_time "
                "timestamptz, master_id text, record_id text) ON COMMIT DELETE ROWS");
        prepared = c;
    }
    exec(c, "BEGIN");
    copy_in(c, "COPY b_events_in (tag, data, alter_time, master_id, record_id) FROM "
               "STDIN (FORMAT binary)", copy_binary(rows, 5, event_fields));
    exec(c, "INSERT INTO b_events (tag, data, alter_time, master_id, record_id) SELECT tag, data, "
            "alter_time, master_id, record_id FROM b_events_in ON CONFLICT (alter_time, "
            "record_id) DO NOTHING; COMMIT");
}

// (a) multi-row INSERT with text parameters, in chunks of `chunk` rows (a prepared statement
// per chunk size; 0 = the whole batch in one unprepared statement), pipelined.
writer ev_values(std::size_t chunk, bool binary = false) {
    return [chunk, binary](PGconn* c, const std::vector<row>& rows) {
        std::size_t per = chunk ? chunk : rows.size();
        auto sql_for = [](std::size_t n) {
            std::string sql = "INSERT INTO b_events (tag, data, alter_time, master_id, record_id) VALUES ";
            for (std::size_t i = 0; i < n; ++i) {
                auto b = i * 5;
                sql += (i ? ",(" : "(");
                sql += "$" + std::to_string(b + 1) + ",$" + std::to_string(b + 2) + "::jsonb,$" +
                       std::to_string(b + 3) + "::timestamptz,$" + std::to_string(b + 4) + ",$" +
                       std::to_string(b + 5) + ")";
            }
            sql += " ON CONFLICT (alter_time, record_id) DO NOTHING";
            return sql;
        };
        static std::vector<std::string> prepared_names;
        static PGconn* prepared_on = nullptr;
        if (prepared_on != c) {
            prepared_names.clear();
            prepared_on = c;
        }
        if (PQenterPipelineMode(c) != 1) die(c, "pipeline");
        PQsendQueryParams(c, "BEGIN", 0, nullptr, nullptr, nullptr, nullptr, 0);
        std::vector<std::string> ts(rows.size()), js(rows.size());
        for (std::size_t i = 0; i < rows.size(); ++i) {
            if (binary) {
                put64(ts[i], rows[i].ts_us - k_pg_epoch_us);
                js[i] = '\1' + rows[i].data;
            } else {
                ts[i] = ts_text(rows[i].ts_us);
            }
        }
        std::size_t sent = 1;
        for (std::size_t off = 0; off < rows.size(); off += per) {
            std::size_t n = std::min(per, rows.size() - off);
            std::vector<const char*> vals;
            std::vector<int> lens, fmts;
            vals.reserve(n * 5);
            for (std::size_t i = off; i < off + n; ++i) {
                vals.push_back(rows[i].tag.c_str());
                vals.push_back(binary ? js[i].c_str() : rows[i].data.c_str());
                vals.push_back(ts[i].c_str());
                vals.push_back(rows[i].master.c_str());
                vals.push_back(rows[i].record_id.c_str());
                lens.insert(lens.end(), {int(rows[i].tag.size()), int(js[i].size()), 8,
                                         int(rows[i].master.size()), int(rows[i].record_id.size())});
                fmts.insert(fmts.end(), {1, 1, 1, 1, 1});
            }
            if (chunk) {
                std::string name = (binary ? "evb" : "ev") + std::to_string(n);
                bool have = false;
                for (auto& s : prepared_names) have |= s == name;
                if (!have) {
                    std::vector<Oid> types;
                    for (std::size_t i = 0; i < n; ++i) types.insert(types.end(), {25, 3802, 1184, 25, 25});
                    PQsendPrepare(c, name.c_str(), sql_for(n).c_str(), binary ? int(types.size()) : 0,
                                  binary ? types.data() : nullptr);
                    ++sent;
                    prepared_names.push_back(name);
                }
                PQsendQueryPrepared(c, name.c_str(), static_cast<int>(vals.size()), vals.data(),
                                    binary ? lens.data() : nullptr, binary ? fmts.data() : nullptr, 0);
            } else {
                auto sql = sql_for(n);
                PQsendQueryParams(c, sql.c_str(), static_cast<int>(vals.size()), nullptr,
                                  vals.data(), nullptr, nullptr, 0);
            }
            ++sent;
        }
        PQsendQueryParams(c, "COMMIT", 0, nullptr, nullptr, nullptr, nullptr, 0);
        ++sent;
        PQpipelineSync(c);
        for (std::size_t i = 0; i < sent; ++i) {
            check(c, PQgetResult(c), "values");
            PGresult* nul = PQgetResult(c);
            if (nul) die(c, "expected null");
        }
        PGresult* s = PQgetResult(c);
        if (PQresultStatus(s) != PGRES_PIPELINE_SYNC) die(c, "sync");
        PQclear(s);
        PQexitPipelineMode(c);
    };
}

// (b) INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING: binary or text arrays,
// one prepared statement whatever the batch size, BEGIN/INSERT/COMMIT pipelined.
writer ev_unnest(bool binary) {
    return [binary](PGconn* c, const std::vector<row>& rows) {
        static PGconn* prepared_on = nullptr;
        const char* sql =
            "INSERT INTO b_events (tag, data, alter_time, master_id, record_id)"
            " SELECT * FROM unnest($1::text[], $2::jsonb[], $3::timestamptz[], $4::text[], "
            "$5::text[]) ON CONFLICT (alter_time, record_id) DO NOTHING";
        std::string name = binary ? "evu_b" : "evu_t";
        if (prepared_on != c) {
            Oid types[5] = {1009, 3807, 1185, 1009, 1009};
            check(c, PQprepare(c, "evu_b", sql, 5, types), "prepare");
            check(c, PQprepare(c, "evu_t", sql, 5, types), "prepare");
            prepared_on = c;
        }
        std::string a[5];
        std::size_t n = rows.size();
        if (binary) {
            a[0] = bin_array(25, n, [&](std::size_t i, std::string& o) { bin_text(o, rows[i].tag); });
            a[1] = bin_array(3802, n, [&](std::size_t i, std::string& o) { bin_jsonb(o, rows[i].data); });
            a[2] = bin_array(1184, n, [&](std::size_t i, std::string& o) { bin_ts(o, rows[i].ts_us); });
            a[3] = bin_array(25, n, [&](std::size_t i, std::string& o) { bin_text(o, rows[i].master); });
            a[4] = bin_array(25, n, [&](std::size_t i, std::string& o) { bin_text(o, rows[i].record_id); });
        } else {
            for (auto& s : a) s = "{";
            for (std::size_t i = 0; i < n; ++i) {
                const char* sep = i ? "," : "";
                a[0] += sep; text_elem(a[0], rows[i].tag);
                a[1] += sep; text_elem(a[1], rows[i].data);
                a[2] += sep; a[2] += '"' + ts_text(rows[i].ts_us) + '"';
                a[3] += sep; text_elem(a[3], rows[i].master);
                a[4] += sep; text_elem(a[4], rows[i].record_id);
            }
            for (auto& s : a) s += "}";
        }
        const char* vals[5];
        int lens[5], fmts[5];
        for (int i = 0; i < 5; ++i) {
            vals[i] = a[i].c_str();
            lens[i] = static_cast<int>(a[i].size());
            fmts[i] = binary ? 1 : 0;
        }
        pipelined_transaction(c, name.c_str(), 5, vals, lens, fmts);
    };
}

// ---- variants: returns -----------------------------------------------------------------------

void ret_copy_plain_bin(PGconn* c, const std::vector<row>& rows) {
    exec(c, "BEGIN");
    copy_in(c, "COPY b_returns (fun, jid, \"return\", id, success, full_ret, alter_time,"
               " record_id, retcode) FROM STDIN (FORMAT binary)", copy_binary(rows, 9, return_fields));
    exec(c, "COMMIT");
}

writer ret_unnest() {
    return [](PGconn* c, const std::vector<row>& rows) {
        static PGconn* prepared_on = nullptr;
        const char* sql =
            "INSERT INTO b_returns (fun, jid, \"return\", id, success, full_ret, alter_time,"
            " record_id, retcode)"
            " SELECT u.fun, u.jid, coalesce(u.full_ret -> 'return', 'null'), u.id, u.success,"
            "  u.full_ret, u.alter_time, u.record_id, u.retcode"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[],"
            "  $6::timestamptz[], $7::text[], $8::int8[])"
            "  AS u(fun, jid, id, success, full_ret, alter_time, record_id, retcode)"
            " ON CONFLICT (record_id) DO NOTHING";
        if (prepared_on != c) {
            Oid types[8] = {1009, 1009, 1009, 1009, 3807, 1185, 1009, 1016};
            check(c, PQprepare(c, "retu", sql, 8, types), "prepare");
            prepared_on = c;
        }
        std::size_t n = rows.size();
        std::string a[8];
        a[0] = bin_array(25, n, [&](std::size_t i, std::string& o) { bin_text(o, rows[i].fun); });
        a[1] = bin_array(25, n, [&](std::size_t i, std::string& o) { bin_text(o, rows[i].jid); });
        a[2] = bin_array(25, n, [&](std::size_t i, std::string& o) { bin_text(o, rows[i].minion); });
        a[3] = bin_array(25, n, [&](std::size_t, std::string& o) { bin_text(o, "true"); });
        a[4] = bin_array(3802, n, [&](std::size_t i, std::string& o) { bin_jsonb(o, rows[i].data); });
        a[5] = bin_array(1184, n, [&](std::size_t i, std::string& o) { bin_ts(o, rows[i].ts_us); });
        a[6] = bin_array(25, n, [&](std::size_t i, std::string& o) { bin_text(o, rows[i].record_id); });
        a[7] = bin_array(20, n, [&](std::size_t, std::string& o) { put32(o, 8); put64(o, 0); });
        const char* vals[8];
        int lens[8], fmts[8];
        for (int i = 0; i < 8; ++i) {
            vals[i] = a[i].c_str();
            lens[i] = static_cast<int>(a[i].size());
            fmts[i] = 1;
        }
        pipelined_transaction(c, "retu", 8, vals, lens, fmts);
    };
}

#ifdef FASTRET_BENCH_STORE
// The shipped path: pg_store::write of the rows made records by `fill(record, row)`.
template <class F>
writer store_write(std::unique_ptr<fastret::pg_store>& store, F fill) {
    return [&store, fill](PGconn*, const std::vector<row>& rows) {
        std::vector<fastret::record> batch(rows.size());
        for (std::size_t i = 0; i < rows.size(); ++i) {
            fill(batch[i], rows[i]);
            batch[i].ts_us = rows[i].ts_us;
            batch[i].payload = rows[i].data;
            batch[i].id = rows[i].record_id;
        }
        auto res = store->write(batch);
        if (res.status != fastret::write_status::ok) {
            std::fprintf(stderr, "pg_store: %s\n", res.error.c_str());
            std::exit(1);
        }
    };
}

// Event records (salt_events, its real indexes).
writer store_events(std::unique_ptr<fastret::pg_store>& store) {
    return store_write(store, [](fastret::record& r, const row& x) {
        r.kind = fastret::record_kind::event;
        r.tag = x.tag;
        r.minion = x.master;
    });
}

// Return records (salt_returns, its real indexes).
writer store_returns(std::unique_ptr<fastret::pg_store>& store) {
    return store_write(store, [](fastret::record& r, const row& x) {
        r.kind = fastret::record_kind::job_return;
        r.jid = x.jid;
        r.minion = x.minion;
        r.fun = x.fun;
        r.success = 1;
        r.retcode = 0;
    });
}

void store_returns_copy(PGconn* c, const std::vector<row>& rows) {
    exec(c, "BEGIN");
    copy_in(c, "COPY salt_returns (fun, jid, \"return\", id, success, full_ret, "
               "alter_time, record_id, retcode) FROM STDIN (FORMAT binary)",
            copy_binary(rows, 9, return_fields));
    exec(c, "COMMIT");
}

void store_events_copy(PGconn* c, const std::vector<row>& rows) {
    exec(c, "BEGIN");
    copy_in(c, "COPY salt_events (tag, data, alter_time, master_id, record_id) FROM STDIN "
               "(FORMAT binary)", copy_binary(rows, 5, event_fields));
    exec(c, "COMMIT");
}
#endif

std::string read_file(const char* path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

double run(PGconn* c, const char* ddl, const writer& w, int batches, std::size_t batch_size,
           std::size_t payload, bool redeliver = false) {
    exec(c, ddl);
    exec(c, "CHECKPOINT");
    std::vector<std::vector<row>> data;
    for (int b = 0; b < batches; ++b)
        data.push_back(make_rows(batch_size, payload,
                                 1795000000000000LL + static_cast<std::int64_t>(b) * 1000000,
                                 static_cast<std::uint64_t>(b) + 1));
    auto t0 = std::chrono::steady_clock::now();
    for (const auto& d : data) w(c, d);
    if (redeliver)
        for (const auto& d : data) w(c, d);
    auto dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return static_cast<double>(batches) * static_cast<double>(batch_size) * (redeliver ? 2 : 1) / dt;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s info.json [batches] [batch_size] [payload_bytes] [rounds] [only]\n", argv[0]);
        return 2;
    }
    std::string info = read_file(argv[1]);
    int batches = argc > 2 ? std::atoi(argv[2]) : 20;
    std::size_t batch_size = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 2000;
    std::size_t payload = argc > 4 ? std::strtoul(argv[4], nullptr, 10) : 500;
    std::string port = json_field(info, "port");
    std::string pw = json_field(info, "superuser_password");
    std::string user = json_field(info, "superuser");  // CHECKPOINT between variants
    std::string db = json_field(info, "dbname");
    std::string ca = json_field(info, "ca");
    const char* kw[] = {"host", "port", "dbname", "user", "password", "sslmode", "sslrootcert", nullptr};
    const char* vals[] = {"127.0.0.1", port.c_str(), db.c_str(), user.c_str(), pw.c_str(),
                          "verify-full", ca.c_str(), nullptr};
    PGconn* c = PQconnectdbParams(kw, vals, 0);
    if (PQstatus(c) != CONNECTION_OK) die(c, "connect");
    std::printf("%d batches of %zu rows, payload ~%zu B, TLS (verify-full), server %s\n", batches,
                batch_size, payload, json_field(info, "version").c_str());
    struct variant {
        const char* name;
        const char* ddl;
        writer w;
    };
    std::vector<variant> vs = {
        {"events: plain COPY binary (reference, not idempotent)", k_events_ddl, ev_copy_plain_bin},
        {"events: plain COPY text (reference, not idempotent)", k_events_ddl, ev_copy_plain_text},
        {"events: (a) multi-row VALUES, 1 statement, text params", k_events_ddl, ev_values(0)},
        {"events: (a) multi-row VALUES, prepared chunks of 200", k_events_ddl, ev_values(200)},
        {"events: (a) multi-row VALUES, prepared chunks of 100, binary", k_events_ddl, ev_values(100, true)},
        {"events: (a) multi-row VALUES, prepared chunks of 200, binary", k_events_ddl, ev_values(200, true)},
        {"events: (a) multi-row VALUES, prepared chunks of 500, binary", k_events_ddl, ev_values(500, true)},
        {"events: (b) unnest, binary arrays", k_events_ddl, ev_unnest(true)},
        {"events: (b) unnest, text arrays", k_events_ddl, ev_unnest(false)},
        {"events: (c) COPY binary to temp + INSERT SELECT", k_events_ddl, ev_copy_temp},
        {"returns: plain COPY binary (reference)", k_returns_ddl, ret_copy_plain_bin},
        {"returns: (b) unnest, binary arrays", k_returns_ddl, ret_unnest()},
    };
#ifdef FASTRET_BENCH_STORE
    fastret::pg_store_config cfg;
    cfg.host = "127.0.0.1";
    cfg.port = port;
    cfg.dbname = db;
    cfg.user = user;
    cfg.password = pw;
    cfg.sslrootcert = ca;
    std::unique_ptr<fastret::pg_store> store = std::make_unique<fastret::pg_store>(cfg);
    const char* truncate = "TRUNCATE salt_events";
    vs.push_back({"salt_events: plain COPY binary (reference)", truncate, store_events_copy});
    vs.push_back({"salt_events: pg_store::write (the shipped path)", truncate, store_events(store)});
    const char* truncate_returns = "TRUNCATE salt_returns";
    vs.push_back({"salt_returns: plain COPY binary (reference)", truncate_returns, store_returns_copy});
    vs.push_back({"salt_returns: pg_store::write (the shipped path)", truncate_returns,
                  store_returns(store)});
#endif
    // Only the variants whose name contains this text (all without it).
    if (argc > 6) {
        std::string only = argv[6];
        std::vector<variant> kept;
        for (auto& v : vs)
            if (std::string(v.name).find(only) != std::string::npos) kept.push_back(v);
        vs = kept;
    }
    // Rounds interleave the variants, so that load from elsewhere on the machine hits them
    // alike. The median and the best round are reported: on a shared machine the best is the
    // closer estimate of what the path can do.
    const int rounds = argc > 5 ? std::atoi(argv[5]) : 5;
    std::vector<std::vector<double>> rates(vs.size());
    for (int round = 0; round < rounds; ++round)
        for (std::size_t i = 0; i < vs.size(); ++i)
            rates[i].push_back(run(c, vs[i].ddl, vs[i].w, batches, batch_size, payload));
    for (std::size_t i = 0; i < vs.size(); ++i) {
        auto r = rates[i];
        std::sort(r.begin(), r.end());
        std::printf("  %-58s %9.0f rows/s median, %9.0f best of %d\n", vs[i].name,
                    r[r.size() / 2], r.back(), rounds);
    }
    exec(c, "DROP TABLE IF EXISTS b_events; DROP TABLE IF EXISTS b_returns; DROP SEQUENCE IF EXISTS b_seq");
    PQfinish(c);
}
