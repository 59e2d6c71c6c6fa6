// mysql_write: the mysql store's write path against MariaDB's own bulk path (LOAD DATA).
//
// A benchmark, not a test. Against a server started by tests/fixtures/mysql_server.py it writes
// the same batches of events (default 2000 events of about 500 B per batch) three ways, each
// into its own salt_events table, and prints rows/s:
//   fastret        mysql_store::write() as configured by default (bulk_events): the batch's
//                  events as one prepared INSERT ... ON DUPLICATE KEY UPDATE with an array of
//                  parameter sets (COM_STMT_BULK_EXECUTE), in a transaction (idempotent);
//   fastret_insert mysql_store::write() with bulk_events off: one multi-statement round trip
//                  per batch, multi-row INSERT ... ON DUPLICATE KEY UPDATE, in a transaction;
//   load_data      LOAD DATA LOCAL INFILE streamed from memory, in a transaction, nothing
//                  checked (the physical reference).
// Rounds alternate the three, and the median of the rounds is printed.
//
// Build (after building the project in /tmp/b-mysql) and run:
//   g++ -O2 -std=c++20 -I cpp/include $(pkg-config --cflags libmariadb) bench/mysql_write.cpp
//       -L/tmp/b-mysql/cpp -Wl,-rpath,/tmp/b-mysql/cpp -lfastret $(pkg-config --libs libmariadb)
//       -lfmt -o /tmp/mysql_write
//   python3 tests/fixtures/mysql_server.py start /tmp/bench-mysql
//   /tmp/mysql_write /tmp/bench-mysql/info.json [batches=20] [batch_size=2000] [rounds=3]
#include <mysql.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastret/mysql_store.hpp"
#include "fastret/record.hpp"

using namespace fastret;
using clock_type = std::chrono::steady_clock;

namespace {

std::map<std::string, std::string> read_info(const char* path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error(std::string("cannot read ") + path);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    std::map<std::string, std::string> out;
    std::size_t i = 0;
    while ((i = text.find('"', i)) != std::string::npos) {
        std::size_t k_end = text.find('"', i + 1);
        std::string key = text.substr(i + 1, k_end - i - 1);
        std::size_t colon = text.find(':', k_end);
        std::size_t v = text.find_first_not_of(" \t", colon + 1);
        if (text[v] == '"') {
            std::size_t v_end = text.find('"', v + 1);
            out[key] = text.substr(v + 1, v_end - v - 1);
            i = v_end + 1;
        } else {
            std::size_t v_end = text.find_first_of(",}\n", v);
            out[key] = text.substr(v, v_end - v);
            i = v_end;
        }
    }
    return out;
}

struct conn {
    MYSQL* m;
    conn(const std::map<std::string, std::string>& info, const std::string& db) {
        m = mysql_init(nullptr);
        unsigned protocol = MYSQL_PROTOCOL_TCP;
        mysql_options(m, MYSQL_OPT_PROTOCOL, &protocol);
        mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
        unsigned local = 1;  // read as an unsigned int
        mysql_options(m, MYSQL_OPT_LOCAL_INFILE, &local);
        // The same TLS as the store (verified against the fixture's CA), so that both paths
        // pay for encryption.
        mysql_options(m, MYSQL_OPT_SSL_CA, info.at("ca").c_str());
        if (!mysql_real_connect(m, "127.0.0.1", info.at("superuser").c_str(),
                                info.at("superuser_password").c_str(),
                                db.empty() ? nullptr : db.c_str(), std::stoi(info.at("port")),
                                nullptr, CLIENT_MULTI_STATEMENTS))
            throw std::runtime_error(mysql_error(m));
        exec("SET SESSION time_zone = '+00:00'");
    }
    ~conn() { mysql_close(m); }
    void exec(const std::string& sql) {
        if (mysql_real_query(m, sql.data(), sql.size()) != 0)
            throw std::runtime_error(std::string(mysql_error(m)) + " in " + sql.substr(0, 200));
        for (;;) {
            if (MYSQL_RES* r = mysql_store_result(m)) mysql_free_result(r);
            int next = mysql_next_result(m);
            if (next == -1) return;
            if (next > 0) throw std::runtime_error(mysql_error(m));
        }
    }
};

// LOAD DATA LOCAL reads the "file" from this buffer.
struct infile {
    const std::string* data;
    std::size_t pos;
};
int infile_init(void** ptr, const char*, void* userdata) {
    auto* src = static_cast<const std::string*>(userdata);
    *ptr = new infile{src, 0};
    return 0;
}
int infile_read(void* ptr, char* buf, unsigned int len) {
    auto* f = static_cast<infile*>(ptr);
    std::size_t n = std::min<std::size_t>(len, f->data->size() - f->pos);
    std::memcpy(buf, f->data->data() + f->pos, n);
    f->pos += n;
    return static_cast<int>(n);
}
void infile_end(void* ptr) { delete static_cast<infile*>(ptr); }
int infile_error(void*, char* msg, unsigned int len) {
    std::snprintf(msg, len, "infile error");
    return 1;
}

// LOAD DATA's default text format: tab-separated, \t \n \\ escaped.
void append_field(std::string& out, std::string_view s) {
    for (char c : s) {
        switch (c) {
            case '\t':
                out += "\\t";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\0':
                out += "\\0";
                break;
            default:
                out += c;
        }
    }
}

std::string tsv(const std::vector<record>& batch) {
    std::string out;
    out.reserve(batch.size() * 600);
    char ts[64];
    for (const auto& r : batch) {
        append_field(out, r.tag);
        out += '\t';
        append_field(out, r.payload);
        out += '\t';
        std::time_t secs = r.ts_us / 1000000;
        std::tm tm{};
        gmtime_r(&secs, &tm);
        std::snprintf(ts, sizeof ts, "%04d-%02d-%02d %02d:%02d:%02d.%06lld", tm.tm_year + 1900,
                      tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                      static_cast<long long>(r.ts_us % 1000000));
        out += ts;
        out += '\t';
        append_field(out, r.minion);
        out += '\t';
        out += r.id;
        out += '\n';
    }
    return out;
}

std::vector<std::vector<record>> make_batches(int batches, int size) {
    std::vector<std::vector<record>> out(batches);
    std::int64_t ts = 1'800'000'000'000'000;
    for (int b = 0; b < batches; ++b) {
        for (int i = 0; i < size; ++i) {
            record r;
            r.kind = record_kind::event;
            const std::string jid = "2027011508000" + std::to_string(1000000 + b * size + i);
            const std::string minion = "web" + std::to_string(i % 200) + ".example.com";
            r.tag = "salt/job/" + jid + "/ret/" + minion;
            r.minion = "master1";
            r.ts_us = ts++;
            r.payload =
                R"({"cmd":"_return","id":")" + minion +
                R"(","success":true,"return":{"pkg_|-nginx_|-nginx_|-installed":{"result":true,"comment":"All specified packages are already installed","name":"nginx","changes":{},"start_time":"08:00:00.111111","duration":12.345,"__sls__":"web.nginx","__run_num__":0,"__id__":"nginx"}},"retcode":0,"jid":")" +
                jid +
                R"(","fun":"state.apply","fun_args":[],"out":"highstate","_stamp":"2027-01-15T08:00:00.123456"})";
            r.id = compute_record_id(r);
            out[b].push_back(std::move(r));
        }
    }
    return out;
}

// CPU seconds used so far by this process and by the server (its pid from info.json; 0 when
// it cannot be read), so that a busy machine shows in the rates but not in the CPU per row.
double own_cpu() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}
double server_cpu(const std::string& pid) {
    std::ifstream in("/proc/" + pid + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::size_t close = stat.rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream rest(stat.substr(close + 2));
    std::string field;
    unsigned long long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
        if (i == 14) utime = std::stoull(field);
        if (i == 15) stime = std::stoull(field);
    }
    return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

struct cpu_mark {
    double own, server;
};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s INFO_JSON [batches] [batch_size] [rounds]\n", argv[0]);
        return 2;
    }
    const auto info = read_info(argv[1]);
    const int batches = argc > 2 ? std::atoi(argv[2]) : 20;
    const int size = argc > 3 ? std::atoi(argv[3]) : 2000;
    const int rounds = argc > 4 ? std::atoi(argv[4]) : 3;
    const std::string db = "ft_bench_write";
    const auto data = make_batches(batches, size);
    std::size_t payload_bytes = 0;
    for (const auto& r : data[0]) payload_bytes += r.payload.size() + r.tag.size();
    std::printf("%d batches x %d events, %.0f B of tag+data per event, %d rounds\n", batches, size,
                static_cast<double>(payload_bytes) / size, rounds);

    conn admin(info, "");
    admin.exec("DROP DATABASE IF EXISTS `" + db + "`; CREATE DATABASE `" + db +
               "` CHARACTER SET utf8mb4");
    const std::string db_insert = db + "_insert";
    admin.exec("DROP DATABASE IF EXISTS `" + db_insert + "`; CREATE DATABASE `" + db_insert +
               "` CHARACTER SET utf8mb4");
    mysql_config cfg;
    cfg.host = "127.0.0.1";
    cfg.port = static_cast<unsigned>(std::stoi(info.at("port")));
    cfg.db = db;
    cfg.user = info.at("superuser");
    cfg.password = info.at("superuser_password");
    cfg.ssl_ca = info.at("ca");
    mysql_store store(cfg);
    mysql_config cfg_insert = cfg;
    cfg_insert.db = db_insert;
    cfg_insert.bulk_events = false;
    mysql_store store_insert(cfg_insert);
    conn ld(info, db);
    ld.exec("CREATE TABLE IF NOT EXISTS salt_events_ld LIKE salt_events");

    const std::string pid = info.count("pid") ? info.at("pid") : "0";
    const double total = static_cast<double>(batches) * size;
    // CPU microseconds per row of the client and the server, summed over the rounds.
    std::map<std::string, cpu_mark> cpu;
    auto account = [&](const std::string& name, cpu_mark m0) {
        cpu[name].own += (own_cpu() - m0.own) / total * 1e6;
        cpu[name].server += (server_cpu(pid) - m0.server) / total * 1e6;
    };
    auto time_store = [&](mysql_store& s, const std::string& name) {
        const cpu_mark m0{own_cpu(), server_cpu(pid)};
        auto t0 = clock_type::now();
        for (const auto& b : data) {
            auto res = s.write(b);
            if (res.status != write_status::ok || res.dropped)
                throw std::runtime_error("fastret write failed: " + res.error);
        }
        const double dt = std::chrono::duration<double>(clock_type::now() - t0).count();
        account(name, m0);
        return dt;
    };
    std::vector<double> r_fastret, r_insert, r_load;
    for (int round = 0; round < rounds; ++round) {
        ld.exec("TRUNCATE salt_events; TRUNCATE salt_events_ld; TRUNCATE `" + db_insert +
                "`.salt_events");
        r_fastret.push_back(total / time_store(store, "fastret"));
        r_insert.push_back(total / time_store(store_insert, "fastret_insert"));

        const cpu_mark m0{own_cpu(), server_cpu(pid)};
        auto t0 = clock_type::now();
        for (const auto& b : data) {
            // Includes formatting the rows, as fastret's time includes building its text.
            std::string file = tsv(b);
            mysql_set_local_infile_handler(ld.m, infile_init, infile_read, infile_end, infile_error,
                                           &file);
            ld.exec(
                "START TRANSACTION; LOAD DATA LOCAL INFILE 'batch' INTO TABLE salt_events_ld "
                "CHARACTER SET utf8mb4 (tag, data, alter_time, master_id, record_id); COMMIT");
        }
        r_load.push_back(total / std::chrono::duration<double>(clock_type::now() - t0).count());
        account("load_data", m0);

        std::printf(
            "round %d: fastret %.0f rows/s, fastret_insert %.0f rows/s, load_data %.0f rows/s\n",
            round + 1, r_fastret.back(), r_insert.back(), r_load.back());
    }
    const double f = median(r_fastret), i = median(r_insert), l = median(r_load);
    std::printf(
        "median: fastret %.0f rows/s, fastret_insert %.0f rows/s, load_data %.0f rows/s; "
        "fastret = %.2fx load_data, %.2fx fastret_insert\n",
        f, i, l, f / l, f / i);
    for (const auto& [name, c] : cpu)
        std::printf("CPU per row (mean of rounds): %-15s client %.2f us, server %.2f us\n",
                    name.c_str(), c.own / rounds, c.server / rounds);
    // A re-delivery of every batch: nothing is added.
    const double t = time_store(store, "re-delivery");
    std::printf("re-delivery of all batches: %.0f rows/s, rows %llu (expected %.0f)\n", total / t,
                static_cast<unsigned long long>(store.count("salt_events")), total);
    admin.exec("DROP DATABASE `" + db_insert + "`");
    admin.exec("DROP DATABASE `" + db + "`");
    return f >= 0.5 * l ? 0 : 1;
}
