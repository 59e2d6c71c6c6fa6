// Tests of the PostgreSQL job cache / event store and the postgres sink, against the throwaway
// server that ctest's postgres_server fixture starts (tests/fixtures/postgres_server.py): it
// finds the server through FASTRET_TEST_POSTGRES (the path of the fixture's info.json).
//
// ctest runs the test cases in parallel processes: each case works in a database of its own
// (created with a random name by the superuser, dropped with everything in it at the end).
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fastret/config.hpp"
#include "fastret/job_store.hpp"
#include "fastret/pg_store.hpp"
#include "fastret/record.hpp"
#include "fastret/sink.hpp"
#include "fastret/sqlite_store.hpp"
#include "job_store_conformance.hpp"
#include "server_fixture.hpp"
#include "sinks/postgres_sink.hpp"

using namespace fastret;
using namespace fastret::store_test;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// ---- the server ----------------------------------------------------------------------------

struct server_info {
    std::string host, hostname, port, socket_dir, superuser, superuser_password, user, password,
        dbname, cert_user, ca, other_ca, client_cert, client_key;
};

const server_info& server() {
    static const server_info info = [] {
        auto j = server_test::fixture_info("postgres");
        server_info s;
        s.host = j["host"];
        s.hostname = j["hostname"];
        s.port = j["port"];
        s.socket_dir = j["socket_dir"];
        s.superuser = j["superuser"];
        s.superuser_password = j["superuser_password"];
        s.user = j["user"];
        s.password = j["password"];
        s.dbname = j["dbname"];
        s.cert_user = j["cert_user"];
        s.ca = j["ca"];
        s.other_ca = j["other_ca"];
        s.client_cert = j["client_cert"];
        s.client_key = j["client_key"];
        if (s.port.empty() || s.superuser.empty())
            throw std::runtime_error("FASTRET_TEST_POSTGRES: not the fixture's info.json");
        return s;
    }();
    return info;
}

// A superuser connection over the Unix socket, for setting up and looking behind the store.
class admin {
public:
    explicit admin(const std::string& db = "postgres") {
        const auto& s = server();
        const char* keys[] = {"host", "port", "user", "password", "dbname", "application_name",
                              nullptr};
        const char* vals[] = {s.socket_dir.c_str(), s.port.c_str(), s.superuser.c_str(),
                              s.superuser_password.c_str(), db.c_str(), "fastret_test_admin",
                              nullptr};
        c_ = PQconnectdbParams(keys, vals, 0);
        INFO(PQerrorMessage(c_));
        REQUIRE(PQstatus(c_) == CONNECTION_OK);
        PQsetNoticeProcessor(c_, [](void*, const char*) {}, nullptr);
    }
    ~admin() { PQfinish(c_); }
    admin(const admin&) = delete;
    admin& operator=(const admin&) = delete;

    // Runs SQL (several statements allowed); true on success, the error in last_error().
    bool try_exec(const std::string& sql) {
        PGresult* r = PQexec(c_, sql.c_str());
        auto st = PQresultStatus(r);
        bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
        last_error_ = ok ? "" : PQresultErrorMessage(r);
        PQclear(r);
        return ok;
    }
    void exec(const std::string& sql) {
        bool ok = try_exec(sql);
        INFO(sql << "\n" << last_error_);
        REQUIRE(ok);
    }
    // First column of the first row as text ("<null>" for NULL, "<none>" without a row).
    std::string scalar(const std::string& sql, const std::vector<std::string>& params = {}) {
        std::vector<const char*> vals;
        for (const auto& p : params) vals.push_back(p.c_str());
        PGresult* r = PQexecParams(c_, sql.c_str(), static_cast<int>(vals.size()), nullptr,
                                   vals.data(), nullptr, nullptr, 0);
        auto st = PQresultStatus(r);
        std::string err = PQresultErrorMessage(r);
        std::string out = "<none>";
        if (st == PGRES_TUPLES_OK && PQntuples(r) > 0)
            out = PQgetisnull(r, 0, 0) ? "<null>" : std::string(PQgetvalue(r, 0, 0), PQgetlength(r, 0, 0));
        PQclear(r);
        INFO(sql << "\n" << err);
        REQUIRE(st == PGRES_TUPLES_OK);
        return out;
    }
    // Every row's first column, one line each.
    std::string lines(const std::string& sql) {
        PGresult* r = PQexec(c_, sql.c_str());
        std::string out;
        for (int i = 0; i < PQntuples(r); ++i) out += std::string(PQgetvalue(r, i, 0)) + "\n";
        INFO(sql << "\n" << PQresultErrorMessage(r));
        CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
        PQclear(r);
        return out;
    }
    const std::string& last_error() const { return last_error_; }

private:
    PGconn* c_ = nullptr;
    std::string last_error_;
};

// A database of the test's own, owned by the test user; dropped at the end.
struct test_db {
    std::string name = "fastret_t_" + server_test::random_suffix();
    explicit test_db(const std::string& owner = server().user) {
        admin().exec("CREATE DATABASE " + name + " OWNER \"" + owner + "\"");
    }
    ~test_db() {
        admin a;
        a.try_exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)");
    }
    test_db(const test_db&) = delete;
    test_db& operator=(const test_db&) = delete;

    // TCP to 127.0.0.1 with verified TLS, as the test user.
    pg_store_config config() const {
        const auto& s = server();
        pg_store_config c;
        c.host = s.host;
        c.port = s.port;
        c.dbname = name;
        c.user = s.user;
        c.password = s.password;
        c.sslmode = "verify-full";
        c.sslrootcert = s.ca;
        c.connect_timeout_ms = 5000;
        c.statement_timeout_ms = 10000;
        return c;
    }
    admin db_admin() const { return admin(name); }
};

// A fake peer on 127.0.0.1 for fault injection: it listens; `answer` (if any) is run on each
// accepted connection in the listener's thread.
class fake_server {
public:
    explicit fake_server(std::function<void(int)> answer) : answer_(std::move(answer)) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        REQUIRE(::listen(fd_, 16) == 0);
        socklen_t len = sizeof a;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        if (answer_)
            thread_ = std::thread([this] {
                for (;;) {
                    int c = ::accept(fd_, nullptr, nullptr);
                    if (c < 0 || stop_) {
                        if (c >= 0) ::close(c);
                        return;
                    }
                    answer_(c);
                    ::close(c);
                }
            });
    }
    ~fake_server() {
        stop_ = true;
        ::shutdown(fd_, SHUT_RDWR);
        if (thread_.joinable()) thread_.join();
        ::close(fd_);
    }
    std::string port() const { return std::to_string(port_); }

private:
    std::function<void(int)> answer_;
    int fd_ = -1;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// JSON as jsonb prints it (what reads return): the server normalizes.
std::string jsonb(const std::string& json) {
    return admin().scalar("SELECT $1::jsonb::text", {json});
}

// 2026-11-27 08:15:52 UTC in Unix microseconds: a realistic record time.
constexpr std::int64_t k_t0 = 1795767352000000LL;

// A database of its own for the conformance cases.
class pg_env final : public store_env {
public:
    std::unique_ptr<job_store> open() override { return std::make_unique<pg_store>(db_.config()); }
    std::string json(const std::string& text) override { return jsonb(text); }
    bool writers_may_deadlock() const override { return true; }

private:
    test_db db_;
};

}  // namespace

FASTRET_JOB_STORE_CONFORMANCE("pg_store", "[postgres]", std::make_unique<pg_env>())

// ---- schema ----------------------------------------------------------------------------------

TEST_CASE("pg_store creates the schema, and the DDL runs again without change", "[postgres]") {
    test_db db;
    {
        pg_store store(db.config());
        CHECK(store.count("jids") == 0);
        CHECK(store.count("salt_returns") == 0);
        CHECK(store.count("salt_events") == 0);
        write_ok(store, {ret("20261127081552123456", "m1", "test.ping", k_t0, "true")});
    }
    auto a = db.db_admin();
    for (const char* name :
         {"jids", "salt_returns", "salt_events", "jids_archive", "salt_returns_archive",
          "salt_events_archive", "seq_salt_events_id", "idx_jids_jid_c", "idx_jids_alter_time",
          "idx_salt_returns_record_id", "idx_salt_returns_id", "idx_salt_returns_jid",
          "idx_salt_returns_fun_id_time", "idx_salt_returns_alter_time",
          "idx_salt_events_time_record_id", "idx_salt_events_tag"}) {
        INFO(name);
        CHECK(a.scalar("SELECT to_regclass($1) IS NOT NULL", {name}) == "t");
    }
    CHECK(a.scalar("SELECT indisunique FROM pg_index WHERE indexrelid = "
                   "'idx_salt_events_time_record_id'::regclass") == "t");
    CHECK(a.scalar("SELECT pg_get_indexdef('idx_salt_events_time_record_id'::regclass)")
              .find("(alter_time, record_id)") != std::string::npos);
    CHECK(a.scalar("SELECT data_type FROM information_schema.columns WHERE table_name = 'jids' "
                   "AND column_name = 'load'") == "jsonb");
    const std::string columns_before = a.scalar(
        "SELECT string_agg(table_name || '.' || column_name || ':' || data_type, ',' ORDER BY "
        "table_name, ordinal_position) FROM information_schema.columns WHERE table_schema = "
        "'public'");
    const std::string indexes_before =
        a.scalar("SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE "
                 "schemaname = 'public'");

    // The DDL (what `fastret schema postgres` prints) twice more, then a store opens again.
    for (int i = 0; i < 2; ++i)
        for (const auto& stmt : postgres_schema_statements()) a.exec(stmt);
    CHECK(a.scalar("SELECT string_agg(table_name || '.' || column_name || ':' || data_type, ',' "
                   "ORDER BY table_name, ordinal_position) FROM information_schema.columns "
                   "WHERE table_schema = 'public'") == columns_before);
    CHECK(a.scalar("SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE "
                   "schemaname = 'public'") == indexes_before);
    pg_store again(db.config());
    CHECK(again.count("salt_returns") == 1);
}

TEST_CASE("postgres_schema gives the DDL with a writer and a reader role", "[postgres]") {
    test_db db(server().superuser);
    const std::string suffix = server_test::random_suffix();
    const std::string writer = "fastret_w_" + suffix, reader = "fastret_r_" + suffix;
    const std::string ddl = postgres_schema(writer, reader);
    CHECK_THAT(ddl, Catch::Contains("CREATE TABLE IF NOT EXISTS salt_returns"));
    CHECK_THAT(ddl, Catch::Contains("\"" + writer + "\""));

    struct drop_roles {
        std::string w, r, db;
        ~drop_roles() {
            admin a;
            a.try_exec("DROP DATABASE IF EXISTS " + db + " WITH (FORCE)");
            a.try_exec("DROP ROLE IF EXISTS \"" + w + "\"");
            a.try_exec("DROP ROLE IF EXISTS \"" + r + "\"");
        }
    } cleanup{writer, reader, db.name};

    {
        // Applied by fastret (as an administrator, over TLS), then the printed text by psql's
        // route: idempotent, roles included.
        auto as_admin = db.config();
        as_admin.user = server().superuser;
        as_admin.password = server().superuser_password;
        as_admin.create_schema = false;
        pg_store::apply_schema(as_admin, writer, reader);
        auto a = db.db_admin();
        a.exec(ddl);
        // A user without the privilege is refused, fatally, with the reason.
        try {
            pg_store::apply_schema(db.config(), writer, reader);
            FAIL("a plain user applied the schema");
        } catch (const store_error& e) {
            CHECK(e.status == write_status::fatal);
            CHECK_THAT(e.what(), Catch::Contains("permission denied"));
        }
        const std::string pw = "pw-" + server_test::random_suffix();
        a.exec("ALTER ROLE \"" + writer + "\" PASSWORD '" + pw + "'");
        a.exec("ALTER ROLE \"" + reader + "\" PASSWORD '" + pw + "'");

        auto cfg = db.config();
        cfg.user = writer;
        cfg.password = pw;
        cfg.create_schema = false;
        pg_store w(cfg);
        const std::string jid = "20261127081552123456";
        write_ok(w, {load(jid, load_json("test.ping"), k_t0), minions(jid, R"(["m1"])", k_t0),
                     endtime(jid, R"("2026")", k_t0), ret(jid, "m1", "test.ping", k_t0, "true"),
                     event("salt/x", "{}", k_t0)});
        write_ok(w, {load(jid, load_json("test.ping"), k_t0), minions(jid, R"(["m2"])", k_t0)});
        CHECK(w.get_minions_of(jid) == jsonb(R"(["m1","m2"])"));
        CHECK(w.clean_old_jobs(k_t0 + 1) == 3);

        cfg.user = reader;
        pg_store r(cfg);
        CHECK(r.count("jids") == 0);
        auto res = r.write(std::vector<record>{ret(jid, "m1", "test.ping", k_t0, "true")});
        CHECK(res.status == write_status::fatal);
        CHECK_THAT(res.error, Catch::Contains("permission denied"));
        CHECK_THAT(res.error, Catch::Contains("42501"));
        CHECK_THROWS_AS(r.clean_old_jobs(k_t0), store_error);

        // The writer may not change the schema.
        CHECK(a.scalar("SELECT has_table_privilege($1, 'jids', 'TRUNCATE')", {writer}) == "f");
        CHECK(a.scalar("SELECT has_column_privilege($1, 'jids', 'jid', 'UPDATE')", {writer}) == "f");
        CHECK(a.scalar("SELECT has_column_privilege($1, 'jids', 'minions', 'UPDATE')", {writer}) ==
              "t");
        CHECK(a.scalar("SELECT has_table_privilege($1, 'salt_events', 'UPDATE')", {writer}) == "f");
    }

    for (const auto& bad : {std::string("Writer"), std::string("a-b"), std::string("x\"; DROP"),
                            std::string(""), std::string("1abc"), std::string(64, 'a')}) {
        INFO(bad);
        CHECK_THROWS_AS(postgres_schema(bad, "fastret_reader"), config_error);
        CHECK_THROWS_AS(postgres_schema("fastret_writer", bad), config_error);
    }
    CHECK_THROWS_AS(postgres_schema("same", "same"), config_error);
    CHECK(job_store_schema("postgres", "fastret_writer", "fastret_reader") ==
          postgres_schema("fastret_writer", "fastret_reader"));
}

TEST_CASE("pg_store upgrades a stock pgjsonb database in place", "[postgres]") {
    test_db db;
    auto a = db.db_admin();
    // pgjsonb's documented DDL, as its users ran it.
    a.exec(R"(
        CREATE TABLE jids (jid varchar(255) NOT NULL primary key, load jsonb NOT NULL);
        CREATE INDEX idx_jids_jsonb on jids USING gin (load) WITH (fastupdate=on);
        CREATE TABLE salt_returns (
          fun varchar(50) NOT NULL, jid varchar(255) NOT NULL, return jsonb NOT NULL,
          id varchar(255) NOT NULL, success varchar(10) NOT NULL, full_ret jsonb NOT NULL,
          alter_time TIMESTAMP WITH TIME ZONE DEFAULT NOW());
        CREATE INDEX idx_salt_returns_id ON salt_returns (id);
        CREATE INDEX idx_salt_returns_jid ON salt_returns (jid);
        CREATE INDEX idx_salt_returns_fun ON salt_returns (fun);
        CREATE INDEX idx_salt_returns_return ON salt_returns USING gin (return) with (fastupdate=on);
        CREATE INDEX idx_salt_returns_full_ret ON salt_returns USING gin (full_ret) with (fastupdate=on);
        CREATE SEQUENCE seq_salt_events_id;
        CREATE TABLE salt_events (
            id BIGINT NOT NULL UNIQUE DEFAULT nextval('seq_salt_events_id'),
            tag varchar(255) NOT NULL, data jsonb NOT NULL,
            alter_time TIMESTAMP WITH TIME ZONE DEFAULT NOW(), master_id varchar(255) NOT NULL);
        CREATE INDEX idx_salt_events_tag on salt_events (tag);
        CREATE INDEX idx_salt_events_data ON salt_events USING gin (data) with (fastupdate=on);
        ALTER TABLE jids OWNER TO fastret; ALTER TABLE salt_returns OWNER TO fastret;
        ALTER TABLE salt_events OWNER TO fastret; ALTER SEQUENCE seq_salt_events_id OWNER TO fastret;
    )");
    // Rows the stock returner wrote (its own statements).
    a.exec(R"(
        INSERT INTO jids (jid, load) VALUES ('20261101000000000001', '{"fun":"test.ping","tgt":"*"}');
        INSERT INTO salt_returns (fun, jid, return, id, success, full_ret, alter_time)
          VALUES ('test.ping', '20261101000000000001', 'true', 'old1', true,
                  '{"id":"old1","fun":"test.ping","return":true}', to_timestamp(1790000000));
        INSERT INTO salt_events (tag, data, master_id, alter_time)
          VALUES ('salt/old', '{"n":0}', 'master0', to_timestamp(1790000000));
        CREATE TABLE jids_archive (LIKE jids); ALTER TABLE jids_archive OWNER TO fastret;
    )");

    pg_store store(db.config());
    const std::string jid = "20261127081552123456";
    const std::string full = R"({"id":"m1","fun":"state.apply","return":{"a":[1,2]},"retcode":0})";
    write_ok(store, {load(jid, load_json("state.apply"), k_t0),
                     ret(jid, "m1", "state.apply", k_t0 + 1, full),
                     ret(jid, "m2", "state.apply", k_t0 + 2, R"({"id":"m2","return":false})", 0, 2),
                     event("salt/job/" + jid + "/new", R"({"minions":["m1"]})", k_t0 + 3, "master1")});
    // Written twice: the stock rows (no record id) and fastret's (unique record id) coexist.
    write_ok(store, {ret(jid, "m1", "state.apply", k_t0 + 1, full)});

    CHECK(store.count("jids") == 2);
    CHECK(store.count("salt_returns") == 3);
    CHECK(store.count("salt_events") == 2);
    CHECK(store.get_load(jid) == jsonb(load_json("state.apply")));
    CHECK(store.get_load("20261101000000000001") == jsonb(R"({"fun":"test.ping","tgt":"*"})"));
    CHECK(store.get_returns("20261101000000000001") ==
          pair_list{{"old1", jsonb(R"({"id":"old1","fun":"test.ping","return":true})")}});
    CHECK(store.get_minion_ids() == std::vector<std::string>{"m1", "m2", "old1"});
    CHECK(store.get_fun("test.ping") == pair_list{{"old1", "test.ping"}});
    CHECK(store.get_jobs().size() == 2);

    // The stock columns hold what the stock returner would have put there.
    CHECK(a.scalar("SELECT \"return\"::text FROM salt_returns WHERE id = 'm1'") ==
          jsonb(R"({"a":[1,2]})"));
    CHECK(a.scalar("SELECT success FROM salt_returns WHERE id = 'm1'") == "true");
    CHECK(a.scalar("SELECT success FROM salt_returns WHERE id = 'm2'") == "false");
    CHECK(a.scalar("SELECT retcode FROM salt_returns WHERE id = 'm2'") == "2");
    CHECK(a.scalar("SELECT full_ret ->> 'id' FROM salt_returns WHERE id = 'm2'") == "m2");
    CHECK(a.scalar("SELECT (extract(epoch FROM alter_time) * 1000000)::bigint FROM salt_returns "
                   "WHERE id = 'm1'") == std::to_string(k_t0 + 1));
    CHECK(a.scalar("SELECT master_id FROM salt_events WHERE tag LIKE 'salt/job/%'") == "master1");
    CHECK(a.scalar("SELECT data ->> 'minions' FROM salt_events WHERE tag LIKE 'salt/job/%'") ==
          R"(["m1"])");
    CHECK(a.scalar("SELECT id > (SELECT id FROM salt_events WHERE tag = 'salt/old') FROM "
                   "salt_events WHERE tag LIKE 'salt/job/%'") == "t");
    // Existing jobs are dated by the upgrade, so retention counts from then.
    CHECK(a.scalar("SELECT alter_time IS NOT NULL FROM jids WHERE jid = '20261101000000000001'") == "t");

    // The stock returner keeps working on the upgraded tables.
    a.exec("INSERT INTO salt_returns (fun, jid, return, id, success, full_ret, alter_time) "
           "VALUES ('test.ping', 'x', 'true', 'stock', true, '{}', to_timestamp(1795767352))");
    a.exec("INSERT INTO salt_events (tag, data, master_id, alter_time) VALUES ('t', '{}', 'm', now())");
    a.exec("INSERT INTO jids (jid, load) VALUES ('y', '{}') ON CONFLICT (jid) DO UPDATE SET load = '{}'");
    // pgjsonb's archive tables (archive_to_table's LIKE of the stock tables) were upgraded too.
    CHECK(a.scalar("SELECT count(*) FROM information_schema.columns WHERE table_name = "
                   "'jids_archive' AND column_name IN ('minions', 'endtime', 'alter_time')") == "3");
}

// ---- columns and plans (the job_store contract itself: job_store_conformance.hpp) ---------

TEST_CASE("pg_store columns hold what the stock returner writes", "[postgres]") {
    test_db db;
    pg_store store(db.config());
    auto a = db.db_admin();

    SECTION("success and retcode as the stock returner writes them; retcode NULL when unknown") {
        auto r = ret("20261127081552123457", "m2", "cmd.run", k_t0 + 5, R"({"return":"x"})", -1,
                     std::nullopt);
        write_ok(store, {ret("20261127081552123456", "m1", "test.ping", k_t0, "true"), r});
        CHECK(a.scalar("SELECT success FROM salt_returns WHERE id = 'm2'") == "false");
        CHECK(a.scalar("SELECT retcode FROM salt_returns WHERE id = 'm2'") == "<null>");
        CHECK(a.scalar("SELECT success FROM salt_returns WHERE id = 'm1'") == "true");
        CHECK(a.scalar("SELECT retcode FROM salt_returns WHERE id = 'm1'") == "0");
        CHECK(a.scalar("SELECT record_id FROM salt_returns WHERE id = 'm2'") == r.id);
        CHECK(a.scalar("SELECT \"return\"::text FROM salt_returns WHERE id = 'm2'") == "\"x\"");
        // A full_ret without "return" (or not an object) still fills the NOT NULL column.
        CHECK(a.scalar("SELECT \"return\"::text FROM salt_returns WHERE id = 'm1'") == "null");
        CHECK(a.scalar("SELECT (extract(epoch FROM alter_time) * 1000000)::bigint FROM "
                       "salt_returns WHERE id = 'm2'") == std::to_string(k_t0 + 5));
    }
    SECTION("a record without an id gets its computed id") {
        record r = ret("20261127081552123458", "m3", "test.ping", k_t0, "true");
        std::string expected = r.id;
        r.id.clear();
        record e = event("salt/no-id", "{}", k_t0 + 9);
        std::string eid = e.id;
        e.id.clear();
        write_ok(store, {r, e});
        CHECK(a.scalar("SELECT record_id FROM salt_returns WHERE id = 'm3'") == expected);
        CHECK(a.scalar("SELECT record_id FROM salt_events WHERE tag = 'salt/no-id'") == eid);
    }
    SECTION("jids.alter_time is the load's time, or the time of the record creating the row") {
        const std::string jid = "20261127081552123456";
        write_ok(store, {load(jid, load_json("state.apply", "web*"), k_t0)});
        CHECK(a.scalar("SELECT (extract(epoch FROM alter_time) * 1000000)::bigint FROM jids") ==
              std::to_string(k_t0));
        const std::string j2 = "20261127081552999999";
        write_ok(store, {minions(j2, R"(["m1"])", k_t0 + 300), load(j2, load_json("cmd.run"), k_t0 + 302)});
        CHECK(a.scalar("SELECT (extract(epoch FROM alter_time) * 1000000)::bigint FROM jids "
                       "WHERE jid = $1", {j2}) == std::to_string(k_t0 + 302));
    }
    SECTION("a load that is not JSON cannot be stored in jsonb: dropped") {
        auto res = store.write(std::vector<record>{load("20261127081552888888", "not json {")});
        CHECK(res.status == write_status::drop);
        CHECK_THAT(res.error, Catch::Contains("22P02"));
        CHECK_THAT(res.error, !Catch::Contains("not json {"));
        CHECK(store.count("jids") == 0);
    }
    SECTION("events: master id; hostile text decoded in the jsonb columns") {
        const std::string payload =
            R"({"u":"Grüße ✓ 😀","b":"back\\slash \\\" \\u00e9"})";
        write_ok(store, {event("salt/job/2/new", R"({"n":4})", 40, "master2"),
                         ret("j", "m1", "f", 10, payload),
                         load("j", R"({"fun":"')--","user":"Robert'); DROP TABLE jids;--"})")});
        CHECK(a.scalar("SELECT master_id FROM salt_events WHERE tag = 'salt/job/2/new'") == "master2");
        CHECK(a.scalar("SELECT load ->> 'user' FROM jids") == "Robert'); DROP TABLE jids;--");
        CHECK(a.scalar("SELECT full_ret ->> 'u' FROM salt_returns") == "Grüße ✓ 😀");
        CHECK(a.scalar("SELECT full_ret ->> 'b' FROM salt_returns") == "back\\slash \\\" \\u00e9");
    }
}

TEST_CASE("pg_store get_jobs pages by the byte-order index on jid", "[postgres]") {
    test_db db;
    pg_store store(db.config());
    write_ok(store, {load("20261127081552000001", load_json("test.ping"))});
    // Paging is served by the byte-order index on jid (newest first), not a sort of all jobs.
    auto a = db.db_admin();
    a.exec("SET enable_seqscan = off");
    CHECK_THAT(a.lines("EXPLAIN SELECT jid, load FROM jids WHERE NOT jsonb_typeof(load) = 'null'"
                       " AND (NOT false OR load ->> 'fun' IS DISTINCT FROM 'saltutil.find_job')"
                       " ORDER BY jid COLLATE \"C\" DESC LIMIT 10"),
               Catch::Contains("Index Scan Backward using idx_jids_jid_c"));
}

TEST_CASE("pg_store clean_old_jobs deletes or archives", "[postgres]") {
    test_db db;
    SECTION("deleted") {
        pg_store store(db.config());
        write_ok(store, clean_old_jobs_batch());
        CHECK(store.clean_old_jobs(k_clean_cutoff) == k_cleaned_rows);
        check_cleaned(store);
        auto a = db.db_admin();
        CHECK(a.scalar("SELECT count(*) FROM salt_returns_archive") == "0");
    }
    SECTION("archived: moved with every column in the same transaction") {
        auto cfg = db.config();
        cfg.archive = true;
        pg_store store(cfg);
        write_ok(store, clean_old_jobs_batch());
        auto a = db.db_admin();
        const std::string old_event_id = a.scalar("SELECT id FROM salt_events WHERE tag = 'salt/old'");
        CHECK(store.clean_old_jobs(k_clean_cutoff) == k_cleaned_rows);
        check_cleaned(store);
        CHECK(a.scalar("SELECT count(*) FROM jids_archive") == "1");
        CHECK(a.scalar("SELECT minions::text FROM jids_archive WHERE jid = $1", {k_old_jid}) ==
              R"(["m1", "m2"])");
        CHECK(a.scalar("SELECT load ->> 'fun' FROM jids_archive") == "test.ping");
        CHECK(a.scalar("SELECT count(*) FROM salt_returns_archive") == "3");
        CHECK(a.scalar("SELECT count(*) FROM salt_returns_archive WHERE record_id IS NULL OR "
                       "success <> 'true' OR retcode <> 0") == "0");
        CHECK(a.scalar("SELECT id FROM salt_events_archive WHERE tag = 'salt/old'") == old_event_id);
        // Archived rows are gone from the live tables: archiving again moves nothing.
        CHECK(store.clean_old_jobs(k_clean_cutoff) == 0);
    }
}

TEST_CASE("pg_store gives the same answers as sqlite_store for the same writes", "[postgres]") {
    test_db db;
    pg_store pg(db.config());
    const auto dir = fs::temp_directory_path() / ("fastret_pg_parity_" + server_test::random_suffix());
    fs::create_directories(dir);
    struct rm {
        fs::path p;
        ~rm() {
            std::error_code ec;
            fs::remove_all(p, ec);
        }
    } cleanup{dir};
    sqlite_store lite(dir / "cache.sqlite");

    std::vector<std::vector<record>> batches;
    for (int b = 0; b < 6; ++b) {
        std::vector<record> batch;
        for (int j = 0; j < 5; ++j) {
            const std::string jid = "2026112708155200" + std::to_string(b * 5 + j) + (j == 4 ? "_1" : "");
            const std::string fun = j % 3 == 0 ? "saltutil.find_job" : j % 3 == 1 ? "test.ping" : "state.apply";
            if (j != 2) batch.push_back(load(jid, load_json(fun), k_t0 + b * 100 + j));
            batch.push_back(minions(jid, "[\"m" + std::to_string(j) + "\",\"m" + std::to_string(b) + "\"]", k_t0 + b * 100));
            for (int m = 0; m < 3; ++m)
                batch.push_back(ret(jid, "m" + std::to_string((b + m) % 4), fun,
                                    k_t0 + b * 100 + j * 10 + m,
                                    "{\"return\":" + std::to_string(b * m) + ",\"b\":\"x\\\"y\"}"));
            if (j == 1) batch.push_back(endtime(jid, "\"end " + std::to_string(b) + "\"", k_t0 + b * 100 + 50));
            batch.push_back(event("salt/job/" + jid + "/ret/m" + std::to_string(j), "{\"j\":" + std::to_string(j) + "}", k_t0 + b * 100 + j));
        }
        batches.push_back(batch);
    }
    for (const auto& b : batches) {
        write_ok(pg, b);
        write_ok(lite, b);
    }
    write_ok(pg, batches[2]);  // re-delivery
    write_ok(lite, batches[2]);

    auto norm = [](pair_list l) {
        for (auto& [k, v] : l) v = jsonb(v);
        return l;
    };
    for (const char* t : {"jids", "salt_returns", "salt_events"}) CHECK(pg.count(t) == lite.count(t));
    for (std::size_t limit : {0, 1, 7, 100})
        for (bool skip : {false, true}) {
            INFO(limit << " " << skip);
            CHECK(pg.get_jobs(limit, skip) == norm(lite.get_jobs(limit, skip)));
        }
    CHECK(pg.get_minion_ids() == lite.get_minion_ids());
    for (const char* fun : {"test.ping", "state.apply", "saltutil.find_job", "none"})
        CHECK(pg.get_fun(fun) == lite.get_fun(fun));
    for (int i = 0; i < 30; ++i) {
        const std::string jid = "2026112708155200" + std::to_string(i) + (i % 5 == 4 ? "_1" : "");
        INFO(jid);
        CHECK(pg.get_returns(jid) == norm(lite.get_returns(jid)));
        auto pl = pg.get_load(jid), ll = lite.get_load(jid);
        CHECK(pl.has_value() == ll.has_value());
        if (pl && ll) CHECK(*pl == jsonb(*ll));
        auto pm = pg.get_minions_of(jid), lm = lite.get_minions_of(jid);
        CHECK(pm.has_value() == lm.has_value());
        if (pm && lm) CHECK(*pm == jsonb(*lm));
        CHECK(pg.get_endtime(jid) == lite.get_endtime(jid));
    }
    for (const char* glob : {"*", "salt/job/*/ret/m1", "salt/job/2026112708155200?/ret/*"})
        for (std::size_t limit : {0, 3})
            CHECK(pg.get_events(glob, limit) == norm(lite.get_events(glob, limit)));
    CHECK(pg.clean_old_jobs(k_t0 + 250) == lite.clean_old_jobs(k_t0 + 250));
    for (const char* t : {"jids", "salt_returns", "salt_events"}) CHECK(pg.count(t) == lite.count(t));
}

// ---- odd input ---------------------------------------------------------------------------------

TEST_CASE("pg_store stores NUL as the text \\u0000 (jsonb cannot hold it)", "[postgres]") {
    test_db db;
    pg_store store(db.config());
    const std::string jid = "20261127081552123456";
    // As fastret's encoder writes a string with a NUL in it, plus an escaped backslash
    // followed by "u0000", which is no NUL and stays as it is.
    const std::string payload = R"({"z":"a\u0000b","k\u0000":"\\u0000","n":[1,"\u0000"]})";
    const std::string tag_with_nul = std::string("salt/nul/") + '\0' + "end";
    const std::string minion_with_nul = std::string("m") + '\0' + "1";
    write_ok(store, {ret(jid, minion_with_nul, "test.ping", 10, payload), load(jid, payload),
                     event(tag_with_nul, payload, 10)});
    auto a = db.db_admin();
    CHECK(a.scalar("SELECT full_ret ->> 'z' FROM salt_returns") == "a\\u0000b");
    CHECK(a.scalar("SELECT full_ret ->> 'k\\u0000' FROM salt_returns") == "\\u0000");
    CHECK(a.scalar("SELECT full_ret -> 'n' ->> 1 FROM salt_returns") == "\\u0000");
    CHECK(a.scalar("SELECT id FROM salt_returns") == "m\\u00001");
    CHECK(a.scalar("SELECT tag FROM salt_events") == "salt/nul/\\u0000end");
    CHECK(a.scalar("SELECT load ->> 'z' FROM jids") == "a\\u0000b");
    CHECK(store.get_returns(jid) ==
          pair_list{{"m\\u00001", jsonb(R"({"z":"a\\u0000b","k\\u0000":"\\u0000","n":[1,"\\u0000"]})")}});
    // The same record again is still the same record.
    write_ok(store, {ret(jid, minion_with_nul, "test.ping", 10, payload), event(tag_with_nul, payload, 10)});
    CHECK(store.count("salt_returns") == 1);
    CHECK(store.count("salt_events") == 1);
}

TEST_CASE("pg_store stores a 5 MB return as jsonb", "[postgres]") {
    test_db db;
    pg_store store(db.config());
    std::string big = R"({"return":")";
    std::mt19937 rng(7);
    while (big.size() < 5 * 1024 * 1024) big += static_cast<char>('a' + rng() % 26);
    big += R"("})";
    const std::string jid = "20261127081552123456";
    write_ok(store, {ret(jid, "m1", "test.ping", 10, big)});
    auto returns = store.get_returns(jid);
    REQUIRE(returns.size() == 1);
    CHECK(returns[0].second.size() == big.size() + 1);  // jsonb prints `{"return": "..."}`
    auto a = db.db_admin();
    CHECK(a.scalar("SELECT length(\"return\" #>> '{}') FROM salt_returns WHERE id = 'm1'") ==
          std::to_string(big.size() - 13));
}

TEST_CASE("pg_store writes a batch larger than one statement carries in one transaction",
          "[postgres]") {
    test_db db;
    pg_store store(db.config());
    // 30 MB of returns and 30 MB of events: more than a bulk statement takes (16 MB), so each
    // kind goes in several statements of one transaction.
    const std::string six_mb = R"({"return":")" + std::string(6 << 20, 'x') + R"("})";
    std::vector<record> batch;
    for (int i = 0; i < 5; ++i) {
        batch.push_back(ret("20261127081552" + std::to_string(100000 + i), "m" + std::to_string(i),
                            "test.ping", k_t0 + i, six_mb));
        batch.push_back(event("salt/big/" + std::to_string(i), six_mb, k_t0 + i));
        batch.push_back(ret("20261127081552" + std::to_string(200000 + i), "s" + std::to_string(i),
                            "test.ping", k_t0 + i, "true"));
    }
    write_ok(store, batch);
    write_ok(store, batch);
    CHECK(store.count("salt_returns") == 10);
    CHECK(store.count("salt_events") == 5);
    auto a = db.db_admin();
    CHECK(a.scalar("SELECT count(*) FROM salt_returns WHERE length(\"return\" #>> '{}') = $1",
                   {std::to_string(6 << 20)}) == "5");
    // All or nothing: a failure in the last statement leaves nothing of the first ones.
    std::vector<record> doomed = batch;
    for (auto& r : doomed) {
        r.ts_us += 1000;
        r.id = compute_record_id(r) + "x";
    }
    auto cfg = db.config();
    cfg.statement_timeout_ms = 300;
    pg_store impatient(cfg);
    a.exec("BEGIN; LOCK TABLE salt_events IN ACCESS EXCLUSIVE MODE");
    CHECK(impatient.write(doomed).status == write_status::retry);
    a.exec("ROLLBACK");
    CHECK(store.count("salt_returns") == 10);
}

TEST_CASE("pg_store leaves out only the records that cannot be stored", "[postgres]") {
    test_db db;
    pg_store store(db.config());
    const std::string long_jid(300, '7');
    std::vector<record> batch;
    for (int i = 0; i < 200; ++i)
        batch.push_back(ret("20261127081552" + std::to_string(100000 + i), "m" + std::to_string(i),
                            "test.ping", k_t0 + i, "true"));
    batch.push_back(load("20261127081552000001", load_json("test.ping")));
    batch.push_back(event("salt/ok", "{}", k_t0));
    // Bad ones, spread through the batch: a jid longer than the column, a payload that is not
    // JSON, a load for a jid that is too long.
    batch.insert(batch.begin() + 17, ret(long_jid, "bad1", "test.ping", k_t0, "true"));
    batch.insert(batch.begin() + 150, ret("20261127081552000002", "bad2", "test.ping", k_t0, "{nope"));
    batch.insert(batch.begin() + 60, load(long_jid, load_json("test.ping")));

    auto res = store.write(batch);
    CHECK(res.status == write_status::ok);
    CHECK(res.dropped == 3);
    CHECK_THAT(res.error, Catch::Contains("22001"));  // the first bad record's error
    CHECK(store.count("salt_returns") == 200);
    CHECK(store.count("salt_events") == 1);
    CHECK(store.count("jids") == 1);
    CHECK(store.get_load("20261127081552000001"));

    // Again: the good records are already there, the bad ones are left out again.
    res = store.write(batch);
    CHECK(res.status == write_status::ok);
    CHECK(res.dropped == 3);
    CHECK(store.count("salt_returns") == 200);

    SECTION("a batch of one bad record is dropped") {
        auto one = store.write(std::vector<record>{ret(long_jid, "m", "f", 1, "true")});
        CHECK(one.status == write_status::drop);
        CHECK(one.dropped == 0);
        CHECK_THAT(one.error, Catch::Contains("value too long"));
    }
    SECTION("the connection stays usable") {
        write_ok(store, {event("salt/after", "{}", k_t0 + 1)});
        CHECK(store.count("salt_events") == 2);
    }
}

// ---- connection, TLS, credentials ----------------------------------------------------------------

TEST_CASE("pg_store connects with verified TLS and refuses an unverified server", "[postgres]") {
    test_db db;
    const auto& s = server();
    auto tls_of_store = [&](const std::string& dbname) {
        return admin().scalar("SELECT bool_and(ssl)::text FROM pg_stat_ssl JOIN pg_stat_activity "
                              "USING (pid) WHERE datname = $1 AND application_name = 'fastret'",
                              {dbname});
    };

    SECTION("verify-full with the CA, by address and by name") {
        auto cfg = db.config();
        {
            pg_store store(cfg);
            write_ok(store, {event("salt/tls", "{}", 1)});
            CHECK(tls_of_store(db.name) == "true");
        }
        cfg.host = s.hostname;  // "localhost", as in the certificate
        pg_store by_name(cfg);
        CHECK(by_name.count("salt_events") == 1);
    }
    SECTION("a server certificate from another CA is fatal, with what to check") {
        auto cfg = db.config();
        cfg.sslrootcert = s.other_ca;
        auto e = open_refused<pg_store>(cfg, "connected to a server the CA did not sign");
        CHECK(e.status == write_status::fatal);
        CHECK_THAT(e.what(), Catch::Contains("server certificate verification failed") &&
                                 Catch::Contains("sslrootcert"));
    }
    SECTION("a certificate for another host name is fatal") {
        auto cfg = db.config();
        cfg.host = "elsewhere.invalid";
        cfg.dsn = "hostaddr=127.0.0.1";  // reach the server while verifying another name
        auto e = open_refused<pg_store>(cfg, "accepted a certificate for another name");
        CHECK(e.status == write_status::fatal);
        CHECK_THAT(e.what(), Catch::Contains("does not match"));
        cfg.sslmode = "verify-ca";  // the CA alone: accepted
        pg_store store(cfg);
        CHECK(store.count("jids") == 0);
    }
    SECTION("a revoked server certificate is refused with sslcrl; a missing CRL file is fatal") {
        // A CRL from the test CA that revokes the server's certificate.
        const auto dir = fs::temp_directory_path() / ("fastret_pg_crl_" + server_test::random_suffix());
        fs::create_directories(dir);
        struct rm {
            fs::path p;
            ~rm() {
                std::error_code ec;
                fs::remove_all(p, ec);
            }
        } cleanup{dir};
        const auto pki = fs::path(s.ca).parent_path();
        {
            std::ofstream(dir / "index.txt").close();
            std::ofstream(dir / "crlnumber") << "1000\n";
            std::ofstream conf(dir / "ca.conf");
            conf << "[ ca ]\ndefault_ca = c\n[ c ]\ndatabase = " << (dir / "index.txt").string()
                 << "\ncrlnumber = " << (dir / "crlnumber").string()
                 << "\ncertificate = " << s.ca << "\nprivate_key = " << (pki / "ca.key").string()
                 << "\ndefault_md = sha256\ndefault_crl_days = 30\n";
        }
        const std::string openssl = "openssl ca -config '" + (dir / "ca.conf").string() + "' ";
        REQUIRE(std::system((openssl + "-revoke '" + (pki / "server.crt").string() +
                             "' >/dev/null 2>&1").c_str()) == 0);
        REQUIRE(std::system((openssl + "-gencrl -out '" + (dir / "crl.pem").string() +
                             "' >/dev/null 2>&1").c_str()) == 0);
        auto cfg = db.config();
        cfg.sslcrl = (dir / "crl.pem").string();
        auto e = open_refused<pg_store>(cfg, "accepted a revoked server certificate");
        CHECK(e.status == write_status::fatal);
        CHECK_THAT(e.what(), Catch::Contains("certificate verify failed") &&
                                 Catch::Contains("sslcrl"));
        cfg.sslcrl = (dir / "no-such-crl.pem").string();
        auto missing = open_refused<pg_store>(cfg, "went on without the CRL it was given");
        CHECK(missing.status == write_status::fatal);
        CHECK_THAT(missing.what(), Catch::Contains("no-such-crl.pem"));
    }
    SECTION("verify-full without a CA file says to set sslrootcert") {
        auto cfg = db.config();
        cfg.sslrootcert = "/nonexistent/fastret/ca.crt";
        auto e = open_refused<pg_store>(cfg, "verified without a CA");
        CHECK(e.status == write_status::fatal);
        CHECK_THAT(e.what(), Catch::Contains("set sslrootcert"));
    }
    SECTION("a server without TLS is fatal and the message says to set sslmode") {
        // A peer that answers the TLS request with 'N' (no TLS), as a server with ssl=off.
        fake_server plain([](int c) {
            char buf[8];
            if (::recv(c, buf, sizeof buf, MSG_WAITALL) == 8) (void)!::send(c, "N", 1, 0);
            ::recv(c, buf, sizeof buf, 0);
        });
        auto cfg = db.config();
        cfg.port = plain.port();
        auto e = open_refused<pg_store>(cfg, "connected without TLS");
        CHECK(e.status == write_status::fatal);
        CHECK_THAT(e.what(), Catch::Contains("does not offer TLS") && Catch::Contains("sslmode"));
    }
    SECTION("mutual TLS: the client certificate is the credential") {
        auto cfg = db.config();
        cfg.user = s.cert_user;
        cfg.password.clear();
        cfg.sslcert = s.client_cert;
        cfg.sslkey = s.client_key;
        admin().exec("GRANT CONNECT ON DATABASE " + db.name + " TO \"" + s.cert_user + "\"");
        auto a = db.db_admin();
        a.exec("GRANT CREATE ON SCHEMA public TO \"" + s.cert_user + "\"");
        pg_store store(cfg);
        write_ok(store, {event("salt/mtls", "{}", 1)});
        CHECK(a.scalar("SELECT tableowner FROM pg_tables WHERE tablename = 'salt_events'") ==
              s.cert_user);
        a.exec("DROP OWNED BY \"" + s.cert_user + "\"");
    }
    SECTION("sslmode disable connects in clear text (the server's host line allows it)") {
        auto cfg = db.config();
        cfg.sslmode = "disable";
        pg_store store(cfg);
        CHECK(store.count("jids") == 0);
        CHECK(tls_of_store(db.name) == "false");
    }
    SECTION("a Unix socket directory as host") {
        auto cfg = db.config();
        cfg.host = s.socket_dir;  // sslmode stays verify-full: libpq uses no TLS on a socket
        pg_store store(cfg);
        write_ok(store, {event("salt/unix", "{}", 1)});
        CHECK(store.count("salt_events") == 1);
    }
}

TEST_CASE("pg_store classifies connection failures", "[postgres]") {
    test_db db;
    SECTION("no server on the port: retry, within the connect timeout") {
        auto cfg = db.config();
        cfg.port = std::to_string(server_test::unused_loopback_port());
        cfg.connect_timeout_ms = 1000;
        auto t0 = std::chrono::steady_clock::now();
        auto e = open_refused<pg_store>(cfg, "connected to nothing");
        CHECK(e.status == write_status::retry);
        CHECK_THAT(e.what(), Catch::Contains("refused"));
        CHECK(std::chrono::steady_clock::now() - t0 < 1500ms);
    }
    SECTION("a peer that never answers: retry after the connect timeout") {
        fake_server silent(nullptr);  // listens, never accepts or answers
        auto cfg = db.config();
        cfg.port = silent.port();
        cfg.connect_timeout_ms = 700;
        auto t0 = std::chrono::steady_clock::now();
        auto e = open_refused<pg_store>(cfg, "connected to a silent peer");
        CHECK(e.status == write_status::retry);
        CHECK_THAT(e.what(), Catch::Contains("timed out"));
        auto took = std::chrono::steady_clock::now() - t0;
        CHECK(took >= 650ms);
        CHECK(took < 2000ms);
    }
    SECTION("a wrong password is fatal and never shown") {
        auto cfg = db.config();
        cfg.password = "Wr0ng-S3cret-Pa55";
        auto e = open_refused<pg_store>(cfg, "logged in with a wrong password");
        CHECK(e.status == write_status::fatal);
        CHECK_THAT(e.what(), Catch::Contains("password authentication failed"));
        CHECK_THAT(e.what(), !Catch::Contains("Wr0ng-S3cret-Pa55"));
    }
    SECTION("a missing database is fatal") {
        auto cfg = db.config();
        cfg.dbname = "fastret_no_such_db";
        auto e = open_refused<pg_store>(cfg, "connected to a missing database");
        CHECK(e.status == write_status::fatal);
        CHECK_THAT(e.what(), Catch::Contains("does not exist"));
    }
    SECTION("a malformed dsn is fatal and not quoted (it may hold the password)") {
        auto cfg = db.config();
        cfg.dsn = "host=127.0.0.1 password=Top Secr3t-Word";
        auto e = open_refused<pg_store>(cfg, "accepted a malformed dsn");
        CHECK(e.status == write_status::fatal);
        CHECK_THAT(e.what(), Catch::Contains("dsn"));
        CHECK_THAT(e.what(), !Catch::Contains("Secr3t") && !Catch::Contains("Top"));
    }
    SECTION("a dsn supplies what is not set, and its password is never shown") {
        const auto& s = server();
        pg_store_config cfg;
        cfg.dsn = "postgresql://" + s.user + ":" + s.password + "@127.0.0.1:" + s.port + "/" +
                  db.name + "?sslmode=verify-full&sslrootcert=" + s.ca;
        {
            pg_store store(cfg);
            write_ok(store, {event("salt/dsn", "{}", 1)});
        }
        cfg.dbname = "fastret_no_such_db";  // set: overrides the dsn's
        auto e = open_refused<pg_store>(cfg, "the dbname option did not override the dsn");
        CHECK_THAT(e.what(), Catch::Contains("fastret_no_such_db"));
        CHECK_THAT(e.what(), !Catch::Contains(s.password));
    }
}

TEST_CASE("pg_store reports a missing schema it may not create as fatal", "[postgres]") {
    SECTION("create_schema off") {
        test_db db;
        auto cfg = db.config();
        cfg.create_schema = false;
        auto e = open_refused<pg_store>(cfg, "opened without a schema");
        CHECK(e.status == write_status::fatal);
        CHECK_THAT(e.what(), Catch::Contains("fastret schema postgres --apply"));
        CHECK_THAT(e.what(), Catch::Contains("salt_events.record_id"));
    }
    SECTION("a user without the privilege to create it") {
        test_db db(server().superuser);  // public schema owned by the superuser's database
        auto e = open_refused<pg_store>(db.config(), "created a schema without the privilege");
        CHECK(e.status == write_status::fatal);
        CHECK_THAT(e.what(), Catch::Contains("schema missing: run `fastret schema postgres --apply`"));
        CHECK_THAT(e.what(), Catch::Contains("permission denied"));
        // Created by an administrator, the same user opens it.
        auto a = db.db_admin();
        for (const auto& stmt : postgres_schema_statements()) a.exec(stmt);
        a.exec("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO fastret;"
               "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO fastret");
        pg_store store(db.config());
        write_ok(store, {event("salt/x", "{}", 1)});
    }
    SECTION("a table dropped behind the store's back is fatal for the batch") {
        test_db db;
        pg_store store(db.config());
        db.db_admin().exec("DROP TABLE salt_events");
        auto res = store.write(std::vector<record>{ret("20261127081552123456", "m1", "f", 1, "true"),
                                                   event("salt/x", "{}", 1)});
        CHECK(res.status == write_status::fatal);
        CHECK_THAT(res.error, Catch::Contains("salt_events"));
        CHECK(store.count("salt_returns") == 0);  // rolled back
    }
    SECTION("several processes opening a new database at once all succeed") {
        for (int round = 0; round < 3; ++round) {
            test_db db;
            std::atomic<int> failures{0};
            std::vector<std::string> errors(8);
            std::vector<std::thread> threads;
            for (int i = 0; i < 8; ++i)
                threads.emplace_back([&, i] {
                    try {
                        pg_store store(db.config());
                        const std::string jid = "2026112708155200000" + std::to_string(i % 3);
                        auto res = store.write(std::vector<record>{
                            load(jid, load_json("test.ping")), minions(jid, "[\"m\"]"),
                            ret(jid, "m" + std::to_string(i), "test.ping", i, "true"),
                            event("salt/" + std::to_string(i), "{}", i)});
                        if (res.status != write_status::ok) {
                            errors[i] = res.error;
                            ++failures;
                        }
                    } catch (const std::exception& e) {
                        errors[i] = e.what();
                        ++failures;
                    }
                });
            for (auto& t : threads) t.join();
            INFO(errors[0] << errors[1] << errors[2] << errors[3] << errors[4] << errors[5]
                           << errors[6] << errors[7]);
            CHECK(failures == 0);
            pg_store store(db.config());
            CHECK(store.count("salt_events") == 8);
            CHECK(store.count("salt_returns") == 8);
            CHECK(store.count("jids") == 3);
        }
    }
}

// ---- faults during use ---------------------------------------------------------------------------

namespace {

// The server process of the store's session(s) in `dbname`.
std::vector<std::string> store_backends(const std::string& dbname) {
    std::vector<std::string> out;
    std::string list = admin().scalar(
        "SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_activity WHERE datname = $1 "
        "AND application_name = 'fastret'", {dbname});
    std::stringstream ss(list);
    for (std::string pid; std::getline(ss, pid, ',');) out.push_back(pid);
    return out;
}

}  // namespace

TEST_CASE("pg_store survives its session being terminated between batches", "[postgres]") {
    test_db db;
    pg_store store(db.config());
    std::vector<record> a_batch, b_batch;
    for (int i = 0; i < 50; ++i) {
        a_batch.push_back(ret("20261127081552" + std::to_string(100000 + i), "m1", "f", k_t0 + i, "true"));
        b_batch.push_back(event("salt/b/" + std::to_string(i), "{}", k_t0 + i));
    }
    write_ok(store, a_batch);
    REQUIRE(store_backends(db.name).size() == 1);
    admin().exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" +
                 db.name + "' AND application_name = 'fastret'");
    for (int i = 0; i < 100 && !store_backends(db.name).empty(); ++i) std::this_thread::sleep_for(20ms);

    // The loss is noticed before the batch is sent (the server's FATAL and the end of the
    // stream wait on the idle socket): the store reconnects and the batch goes through.
    auto res = store.write(b_batch);
    INFO(res.error);
    CHECK(res.status == write_status::ok);
    write_ok(store, a_batch);  // re-delivered: no duplicates
    CHECK(store.count("salt_returns") == 50);
    CHECK(store.count("salt_events") == 50);

    // Reads reconnect too.
    admin().exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" +
                 db.name + "' AND application_name = 'fastret'");
    CHECK(store.count("salt_events") == 50);
}

TEST_CASE("pg_store retries a batch that waits for a lock past the statement timeout",
          "[postgres]") {
    test_db db;
    auto cfg = db.config();
    cfg.statement_timeout_ms = 300;
    pg_store store(cfg);
    auto a = db.db_admin();
    a.exec("BEGIN; LOCK TABLE salt_events IN ACCESS EXCLUSIVE MODE");
    auto t0 = std::chrono::steady_clock::now();
    auto res = store.write(std::vector<record>{ret("20261127081552123456", "m1", "f", 1, "true"),
                                               event("salt/locked", "{}", 1)});
    CHECK(res.status == write_status::retry);
    CHECK_THAT(res.error, Catch::Contains("57014"));
    CHECK(std::chrono::steady_clock::now() - t0 < 2000ms);
    a.exec("ROLLBACK");
    write_ok(store, {ret("20261127081552123456", "m1", "f", 1, "true"), event("salt/locked", "{}", 1)});
    CHECK(store.count("salt_returns") == 1);
    CHECK(store.count("salt_events") == 1);
}

TEST_CASE("pg_store gives up on a stalled server after the timeout, then recovers",
          "[postgres]") {
    if (::geteuid() != 0 && ::getuid() != 0) {
        WARN("not root: cannot stop the server's processes; stall test skipped");
        return;
    }
    test_db db;
    auto cfg = db.config();
    cfg.statement_timeout_ms = 500;
    pg_store store(cfg);
    write_ok(store, {event("salt/before", "{}", 1)});
    auto pids = store_backends(db.name);
    REQUIRE(pids.size() == 1);
    const pid_t backend = static_cast<pid_t>(std::stol(pids[0]));
    REQUIRE(::kill(backend, SIGSTOP) == 0);
    struct resume {
        pid_t p;
        ~resume() { ::kill(p, SIGCONT); }
    } guard{backend};

    auto t0 = std::chrono::steady_clock::now();
    auto res = store.write(std::vector<record>{event("salt/stalled", "{}", 2)});
    auto took = std::chrono::steady_clock::now() - t0;
    CHECK(res.status == write_status::retry);
    CHECK_THAT(res.error, Catch::Contains("no answer from the server"));
    CHECK(took >= 2000ms);  // statement_timeout_ms + the 2 s margin for the server's own cancel
    CHECK(took < 5000ms);
    ::kill(backend, SIGCONT);

    write_ok(store, {event("salt/stalled", "{}", 2)});
    CHECK(store.count("salt_events") == 2);
}

// ---- sink and registry -------------------------------------------------------------------------

TEST_CASE("postgres sink options, registry and delegation", "[postgres][sink]") {
    const auto& table = postgres_sink_options();
    std::map<std::string, option_spec> by_key;
    for (const auto& o : table) by_key[o.key] = o;
    for (const char* key : {"host", "port", "db", "user", "pass", "sslmode", "sslrootcert",
                            "sslcert", "sslkey", "sslcrl", "dsn", "connect_timeout_ms",
                            "statement_timeout_ms", "create_schema", "archive"})
        CHECK(by_key.count(key) == 1);
    CHECK(table.size() == 15);
    CHECK(by_key["pass"].secret);
    CHECK(std::count_if(table.begin(), table.end(), [](const option_spec& o) { return o.secret; }) == 1);
    CHECK(by_key["sslmode"].default_text == "verify-full");
    CHECK(by_key["port"].default_text == "5432");
    CHECK(by_key["db"].default_text == "salt");
    CHECK(by_key["user"].default_text == "salt");
    CHECK(by_key["connect_timeout_ms"].default_text == "3000");
    CHECK(by_key["create_schema"].default_text == "true");
    CHECK(by_key["archive"].default_text == "false");

    const auto* info = find_sink_type("postgres");
    REQUIRE(info);
    CHECK(info->open_store != nullptr);
    CHECK(info->schema != nullptr);

    CHECK_THROWS_AS(validate_sink_options("jobs", *info, config_map{{"sslmode", std::string("on")}}),
                    config_error);
    CHECK_THROWS_AS(validate_sink_options("jobs", *info, config_map{{"password", std::string("x")}}),
                    config_error);
    try {
        validate_sink_options("jobs", *info, config_map{{"pass", std::int64_t{12345}}});
        FAIL("accepted a number as password");
    } catch (const config_error& e) {
        CHECK_THAT(e.what(), !Catch::Contains("12345"));
    }

    // Options at their defaults leave the dsn's values alone; set ones override it.
    auto defaults = validate_sink_options("jobs", *info, config_map{});
    auto c0 = postgres_store_config(defaults);
    CHECK_FALSE(c0.host);
    CHECK_FALSE(c0.port);
    CHECK_FALSE(c0.sslmode);
    CHECK(c0.connect_timeout_ms == 3000);
    CHECK(c0.create_schema);
    auto set = validate_sink_options(
        "jobs", *info, config_map{{"host", std::string("db.example")}, {"port", std::int64_t{6432}},
                                  {"sslmode", std::string("require")}, {"archive", true}});
    auto c1 = postgres_store_config(set);
    CHECK(c1.host == "db.example");
    CHECK(c1.port == "6432");
    CHECK(c1.sslmode == "require");
    CHECK(c1.archive);

    test_db db;
    const auto& s = server();
    const config_map raw = {{"host", s.host},
                            {"port", static_cast<std::int64_t>(std::stoi(s.port))},
                            {"db", db.name},
                            {"user", s.user},
                            {"pass", s.password},
                            {"sslrootcert", s.ca}};
    options opts;
    auto sink = make_sink("jobs", "postgres", raw, &opts);
    CHECK(sink->type() == "postgres");
    std::vector<record> batch = {ret("20261127081552123456", "m1", "test.ping", 10, "true")};
    CHECK(sink->write(batch).status == write_status::ok);
    sink->close();
    CHECK(sink->write(batch).status == write_status::fatal);
    auto store = open_job_store("postgres", opts);
    CHECK(store->count("salt_returns") == 1);

    // The sink opens lazily: a server that is down is a retry, not an exception.
    config_map down = raw;
    down["port"] = static_cast<std::int64_t>(server_test::unused_loopback_port());
    down["connect_timeout_ms"] = std::int64_t{500};
    auto down_sink = make_sink("jobs", "postgres", down);
    auto r = down_sink->write(batch);
    CHECK(r.status == write_status::retry);
    config_map bad_pw = raw;
    bad_pw["pass"] = std::string("not-the-password-42");
    auto bad_sink = make_sink("jobs", "postgres", bad_pw);
    r = bad_sink->write(batch);
    CHECK(r.status == write_status::fatal);
    CHECK_THAT(r.error, !Catch::Contains("not-the-password-42"));
}
