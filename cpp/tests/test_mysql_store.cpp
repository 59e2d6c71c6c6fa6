// Tests of the MariaDB job store and the mysql sink, against the throwaway server that ctest's
// mysql_server fixture starts (tests/fixtures/mysql_server.py); FASTRET_TEST_MYSQL names its
// info.json. Every case works in its own database (random name, dropped at the end), so cases
// run in parallel processes.
#include <mysql.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fastret/config.hpp"
#include "fastret/job_store.hpp"
#include "fastret/mysql_store.hpp"
#include "fastret/record.hpp"
#include "fastret/sink.hpp"
#include "job_store_conformance.hpp"
#include "server_fixture.hpp"
#include "sinks/mysql_sink.hpp"

using namespace fastret;
using namespace fastret::store_test;

namespace {

// ---- the server --------------------------------------------------------------------------

const std::map<std::string, std::string>& server() {
    static const auto info = server_test::fixture_info("mysql");
    return info;
}

std::string info(const std::string& key) {
    auto it = server().find(key);
    if (it == server().end()) throw std::runtime_error("info.json has no " + key);
    return it->second;
}

unsigned server_port() { return static_cast<unsigned>(std::stoul(info("port"))); }

// A plain connection for setting up and looking behind the store's back.
struct raw_conn {
    MYSQL* m = nullptr;
    raw_conn(const std::string& user, const std::string& pass, const std::string& db = "") {
        m = mysql_init(nullptr);
        unsigned protocol = MYSQL_PROTOCOL_TCP;
        mysql_options(m, MYSQL_OPT_PROTOCOL, &protocol);
        mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
        unsigned timeout = 30;
        mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &timeout);
        if (!mysql_real_connect(m, "127.0.0.1", user.c_str(), pass.c_str(),
                                db.empty() ? nullptr : db.c_str(), server_port(), nullptr,
                                CLIENT_MULTI_STATEMENTS)) {
            std::string err = mysql_error(m);
            mysql_close(m);
            m = nullptr;
            throw std::runtime_error("test connection failed: " + err);
        }
    }
    ~raw_conn() {
        if (m) mysql_close(m);
    }
    raw_conn(const raw_conn&) = delete;
    raw_conn& operator=(const raw_conn&) = delete;

    // Runs SQL (several statements allowed); returns the error number (0: fine).
    unsigned try_exec(const std::string& sql) {
        if (mysql_real_query(m, sql.data(), sql.size()) != 0) return mysql_errno(m);
        for (;;) {
            if (MYSQL_RES* r = mysql_store_result(m)) mysql_free_result(r);
            int next = mysql_next_result(m);
            if (next == -1) return 0;
            if (next > 0) return mysql_errno(m);
        }
    }
    void exec(const std::string& sql) {
        unsigned rc = try_exec(sql);
        INFO(sql.substr(0, 300));
        INFO(mysql_error(m));
        REQUIRE(rc == 0);
    }
    // Rows of the last result ("<null>" for NULL).
    std::vector<std::vector<std::string>> rows(const std::string& sql) {
        INFO(sql.substr(0, 300));
        REQUIRE(mysql_real_query(m, sql.data(), sql.size()) == 0);
        std::vector<std::vector<std::string>> out;
        MYSQL_RES* res = mysql_store_result(m);
        REQUIRE(res);
        unsigned n = mysql_num_fields(res);
        while (MYSQL_ROW r = mysql_fetch_row(res)) {
            unsigned long* len = mysql_fetch_lengths(res);
            std::vector<std::string> v;
            for (unsigned i = 0; i < n; ++i)
                v.push_back(r[i] ? std::string(r[i], len[i]) : std::string("<null>"));
            out.push_back(std::move(v));
        }
        mysql_free_result(res);
        return out;
    }
    // First column of the first row ("<none>" without a row).
    std::string scalar(const std::string& sql) {
        auto r = rows(sql);
        return r.empty() ? std::string("<none>") : r[0][0];
    }
    std::string quote(const std::string& s) {
        std::string out(2 * s.size() + 1, '\0');
        out.resize(mysql_real_escape_string(m, out.data(), s.data(), s.size()));
        return "'" + out + "'";
    }
};

std::unique_ptr<raw_conn> admin(const std::string& db = "") {
    return std::make_unique<raw_conn>(info("superuser"), info("superuser_password"), db);
}

// A database of its own (the test user may use every ft_* database), dropped at the end.
struct test_db {
    std::string name = "ft_" + server_test::random_suffix();
    explicit test_db(const std::string& charset = "utf8mb4") {
        admin()->exec("CREATE DATABASE `" + name + "` CHARACTER SET " + charset);
    }
    ~test_db() {
        try {
            admin()->try_exec("DROP DATABASE IF EXISTS `" + name + "`");
        } catch (...) {
        }
    }
    std::unique_ptr<raw_conn> raw() const { return admin(name); }
};

// The store's configuration for the test user: verified TLS against the fixture's CA (the
// default ssl_mode), over TCP to 127.0.0.1 (in the server certificate's names).
mysql_config config_for(const test_db& db) {
    mysql_config c;
    c.host = info("host");
    c.port = server_port();
    c.db = db.name;
    c.user = info("user");
    c.password = info("password");
    c.ssl_ca = info("ca");
    c.connect_timeout_ms = 5000;
    c.read_timeout_ms = 20000;
    c.write_timeout_ms = 20000;
    return c;
}

// ---- helpers -------------------------------------------------------------------------

// The session ids of the test user's connections to `db`.
std::vector<std::string> connections_to(raw_conn& a, const std::string& db) {
    std::vector<std::string> ids;
    for (auto& r : a.rows("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = " +
                          a.quote(db) + " AND USER = " + a.quote(info("user"))))
        ids.push_back(r[0]);
    return ids;
}

// Roles are global to the server: unique names, dropped at the end.
struct test_roles {
    std::string writer = "fw_" + server_test::random_suffix();
    std::string reader = "fr_" + server_test::random_suffix();
    std::vector<std::string> users;
    ~test_roles() {
        try {
            auto a = admin();
            a->try_exec("DROP ROLE IF EXISTS `" + writer + "`");
            a->try_exec("DROP ROLE IF EXISTS `" + reader + "`");
            for (auto& u : users) a->try_exec("DROP USER IF EXISTS '" + u + "'@'%'");
        } catch (...) {
        }
    }
    // A user holding `role` as its default role.
    std::string user_with(const std::string& role, const std::string& password) {
        std::string u = "fu_" + server_test::random_suffix();
        users.push_back(u);
        auto a = admin();
        a->exec("CREATE USER '" + u + "'@'%' IDENTIFIED BY " + a->quote(password));
        a->exec("GRANT `" + role + "` TO '" + u + "'@'%'");
        a->exec("SET DEFAULT ROLE `" + role + "` FOR '" + u + "'@'%'");
        return u;
    }
};

// A database of its own for the conformance cases.
class mysql_env final : public store_env {
public:
    std::unique_ptr<job_store> open() override {
        return std::make_unique<mysql_store>(config_for(db_));
    }
    bool writers_may_deadlock() const override { return true; }

private:
    test_db db_;
};

}  // namespace

FASTRET_JOB_STORE_CONFORMANCE("mysql_store", "[mysql]", std::make_unique<mysql_env>())

// ---- schema ------------------------------------------------------------------------------

TEST_CASE("mysql_store creates the schema, utf8mb4 and TIMESTAMP(6), and reopens", "[mysql]") {
    test_db db;
    {
        mysql_store store(config_for(db));
        CHECK(store.count("jids") == 0);
        CHECK(store.count("salt_returns") == 0);
        CHECK(store.count("salt_events") == 0);
        CHECK(store.max_packet() == 16 * 1024 * 1024);
        write_ok(store, {ret("20261127081552123456", "m1", "test.ping", T0 + 10, "true")});
    }
    auto raw = db.raw();
    for (const char* t : {"jids", "salt_returns", "salt_events", "jids_archive",
                          "salt_returns_archive", "salt_events_archive"}) {
        INFO(t);
        CHECK(raw->scalar("SELECT TABLE_COLLATION FROM information_schema.TABLES WHERE "
                          "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '" +
                          std::string(t) + "'") == "utf8mb4_nopad_bin");
        CHECK(raw->scalar("SELECT DATETIME_PRECISION FROM information_schema.COLUMNS WHERE "
                          "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '" +
                          std::string(t) + "' AND COLUMN_NAME = 'alter_time'") == "6");
    }
    // The stock columns with their stock types, and the indexes reads rely on.
    CHECK(raw->scalar("SELECT GROUP_CONCAT(COLUMN_NAME, ':', COLUMN_TYPE ORDER BY "
                      "ORDINAL_POSITION) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
                      "DATABASE() AND TABLE_NAME = 'salt_returns'") ==
          "fun:varchar(255),jid:varchar(255),return:mediumtext,id:varchar(255),"
          "success:varchar(10),full_ret:mediumtext,alter_time:timestamp(6),record_id:char(32),"
          "retcode:bigint(20)");
    CHECK(raw->scalar("SELECT GROUP_CONCAT(DISTINCT INDEX_NAME ORDER BY INDEX_NAME) FROM "
                      "information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND "
                      "TABLE_NAME = 'salt_events'") == "alter_time_record_id,PRIMARY,tag");
    CHECK(raw->scalar("SELECT NON_UNIQUE FROM information_schema.STATISTICS WHERE TABLE_SCHEMA "
                      "= DATABASE() AND TABLE_NAME = 'salt_returns' AND INDEX_NAME = "
                      "'record_id'") == "0");
    // Reopening keeps the data (the schema is complete: nothing is created again).
    auto c = config_for(db);
    c.create_schema = false;
    mysql_store again(c);
    CHECK(again.count("salt_returns") == 1);
}

TEST_CASE("mysql_store without a schema and create_schema off is fatal", "[mysql]") {
    test_db db;
    auto c = config_for(db);
    c.create_schema = false;
    auto e = open_refused<mysql_store>(c, "opened without a schema");
    CHECK(e.status == write_status::fatal);
    CHECK_THAT(e.what(),
               Catch::Contains("fastret schema mysql --apply") && Catch::Contains(db.name));
}

TEST_CASE("mysql_schema DDL runs twice and roles give least privilege", "[mysql]") {
    test_db db;
    test_roles roles;
    const std::string ddl = mysql_schema(roles.writer, roles.reader);
    CHECK_THAT(ddl, Catch::Contains("CREATE TABLE IF NOT EXISTS `jids`") &&
                        Catch::Contains("CREATE ROLE IF NOT EXISTS `" + roles.writer + "`"));
    auto raw = db.raw();
    raw->exec(ddl);
    const std::string shape =
        "SELECT GROUP_CONCAT(TABLE_NAME, '.', COLUMN_NAME, ':', COLUMN_TYPE ORDER BY "
        "TABLE_NAME, ORDINAL_POSITION) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
        "DATABASE()";
    const std::string first = raw->scalar(shape);
    raw->exec(ddl);  // idempotent
    CHECK(raw->scalar(shape) == first);

    const std::string pw = "pw-" + server_test::random_suffix();
    auto config_as = [&](const std::string& user) {
        auto c = config_for(db);
        c.user = user;
        c.password = pw;
        c.create_schema = false;
        return c;
    };
    const std::string jid = "20261127081552123456";

    SECTION("the writer writes, reads and cleans") {
        mysql_store w(config_as(roles.user_with(roles.writer, pw)));
        write_ok(w, {load(jid, load_json("test.ping"), T0), minions(jid, R"(["m1"])", T0),
                     minions(jid, R"(["m2"])", T0), endtime(jid, R"("t")", T0),
                     ret(jid, "m1", "test.ping", T0, "true"), event("salt/x", "{}", T0)});
        // Re-delivery: the no-op updates need their column grants.
        write_ok(w, {load(jid, load_json("test.ping"), T0), ret(jid, "m1", "test.ping", T0, "true"),
                     event("salt/x", "{}", T0)});
        CHECK(w.get_minions_of(jid) == R"(["m1","m2"])");
        CHECK(w.count("salt_returns") == 1);
        auto c = config_as(roles.users.back());
        c.archive = true;
        mysql_store archiver(c);
        CHECK(archiver.clean_old_jobs(T0 + 1) == 3);
        CHECK(raw->scalar("SELECT COUNT(*) FROM salt_returns_archive") == "1");
        // It may not change the schema, nor touch another table.
        raw_conn as_writer(roles.users.back(), pw, db.name);
        CHECK(as_writer.try_exec("ALTER TABLE jids ADD COLUMN x INT") == 1142);
        CHECK(as_writer.try_exec("DROP TABLE salt_events") == 1142);
        CHECK(as_writer.try_exec("DELETE FROM salt_events_archive") == 1142);
        CHECK(as_writer.try_exec("SELECT * FROM mysql.user") == 1142);
    }
    SECTION("the reader reads and may not write") {
        {
            mysql_store admin_store(config_for(db));
            write_ok(admin_store, {load(jid, load_json("test.ping"))});
        }
        mysql_store r(config_as(roles.user_with(roles.reader, pw)));
        CHECK(r.get_load(jid) == load_json("test.ping"));
        auto res = r.write(std::vector<record>{ret(jid, "m1", "test.ping", T0, "true")});
        CHECK(res.status == write_status::fatal);
        CHECK_THAT(res.error, Catch::Contains("denied"));
        CHECK_THROWS_AS(r.clean_old_jobs(T0), store_error);
    }
    SECTION("a writer finding no schema says how to create it") {
        test_db empty;
        auto user = roles.user_with(roles.writer, pw);
        admin()->exec("GRANT SELECT, INSERT ON `" + empty.name + "`.* TO '" + user + "'@'%'");
        auto c = config_as(user);
        c.db = empty.name;
        c.create_schema = true;
        auto e = open_refused<mysql_store>(c, "opened without a schema");
        CHECK(e.status == write_status::fatal);
        CHECK_THAT(e.what(), Catch::Contains("fastret schema mysql --apply") &&
                                 Catch::Contains("denied"));
    }
}

TEST_CASE("mysql_schema rejects role names that are not plain identifiers", "[mysql]") {
    CHECK_THROWS_AS(mysql_schema("w`; DROP TABLE jids; --", "r"), config_error);
    CHECK_THROWS_AS(mysql_schema("w", "r r"), config_error);
    CHECK_THROWS_AS(mysql_schema("", "r"), config_error);
    CHECK_THROWS_AS(mysql_schema("1w", "r"), config_error);
    CHECK_THROWS_AS(mysql_schema("w", "PUBLIC"), config_error);
    CHECK_THROWS_AS(mysql_schema("same", "same"), config_error);
    CHECK_THROWS_AS(mysql_schema(std::string(65, 'w'), "r"), config_error);
    CHECK_NOTHROW(mysql_schema("fastret_writer", "fastret_reader"));
    CHECK(job_store_schema("mysql", "a", "b") == mysql_schema("a", "b"));
}

TEST_CASE("mysql_store upgrades a stock saltext-mysql database in place", "[mysql]") {
    test_db db("utf8");  // the stock documentation's CREATE DATABASE
    auto raw = db.raw();
    // saltext-mysql's schema, as its documentation gives it.
    raw->exec(R"(
        CREATE TABLE `jids` (
          `jid` varchar(255) NOT NULL,
          `load` mediumtext NOT NULL,
          UNIQUE KEY `jid` (`jid`)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8;
        CREATE TABLE `salt_returns` (
          `fun` varchar(50) NOT NULL,
          `jid` varchar(255) NOT NULL,
          `return` mediumtext NOT NULL,
          `id` varchar(255) NOT NULL,
          `success` varchar(10) NOT NULL,
          `full_ret` mediumtext NOT NULL,
          `alter_time` TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
          KEY `id` (`id`),
          KEY `jid` (`jid`),
          KEY `fun` (`fun`)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8;
        CREATE TABLE `salt_events` (
        `id` BIGINT NOT NULL AUTO_INCREMENT,
        `tag` varchar(255) NOT NULL,
        `data` mediumtext NOT NULL,
        `alter_time` TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        `master_id` varchar(255) NOT NULL,
        PRIMARY KEY (`id`),
        KEY `tag` (`tag`)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8;
    )");
    // The stock returner's archive tables, as its clean_old_jobs makes them; the archived event
    // has id 1, as the first live event will (archiving must not lose either).
    raw->exec(
        "create table if not exists jids_archive like jids; "
        "create table if not exists salt_returns_archive like salt_returns; "
        "create table if not exists salt_events_archive like salt_events; "
        "INSERT INTO salt_events_archive (tag, data, master_id) VALUES ('salt/ancient', "
        "'{}', 'master0')");
    // Rows as the stock returner writes them.
    const std::string old_jid = "20250101000000000001";
    const std::string old_find = "20250101000000000002";
    raw->exec(
        "INSERT INTO `jids` (`jid`, `load`) VALUES ('" + old_jid +
        R"(', '{"fun": "state.apply", "tgt": "web*", "tgt_type": "glob", "user": "root"}'), (')" +
        old_find + R"(', '{"fun": "saltutil.find_job", "tgt": "*"}'))");
    raw->exec(
        "INSERT INTO `salt_returns` (`fun`, `jid`, `return`, `id`, `success`, `full_ret`) "
        "VALUES ('state.apply', '" +
        old_jid + R"(', '{"a": 1}', 'web1', '1', '{"return": {"a": 1}, "id": "web1"}'))");
    raw->exec(
        R"(INSERT INTO `salt_events` (`tag`, `data`, `master_id`) VALUES ('salt/old', '{"x": 1}', 'master0'))");

    mysql_store store(config_for(db));
    // The stock rows are readable through fastret...
    CHECK(store.get_load(old_jid) ==
          R"({"fun": "state.apply", "tgt": "web*", "tgt_type": "glob", "user": "root"})");
    CHECK(store.get_returns(old_jid) ==
          pair_list{{"web1", R"({"return": {"a": 1}, "id": "web1"})"}});
    CHECK(store.get_events("salt/old", 0) == pair_list{{"salt/old", R"({"x": 1})"}});
    // ...and their summary columns were filled, so find_job filtering covers them.
    auto jobs = store.get_jobs(0, true);
    REQUIRE(jobs.size() == 1);
    CHECK(jobs[0].first == old_jid);
    CHECK(store.get_jobs(0, false).size() == 2);

    // New writes fill the stock columns as the stock returner would.
    const std::string jid = "20261127081552123456";
    const std::string full =
        R"({"return":{"pkg":"installed ✓ 😀"},"retcode":0,"success":true,"jid":"20261127081552123456","fun":"state.apply","id":"web2"})";
    write_ok(store, {load(jid, load_json("state.apply", "web*")),
                     ret(jid, "web2", "state.apply", T0 + 5, full, 1, 0),
                     ret(jid, "web3", "state.apply", T0 + 6, R"({"return":false})", 0, 2),
                     event("salt/job/" + jid + "/new", R"({"emoji":"😀"})", T0 + 7, "master1")});
    CHECK(raw->scalar("SELECT `return` FROM salt_returns WHERE id = 'web2'") ==
          R"({"pkg": "installed ✓ 😀"})");
    CHECK(raw->scalar("SELECT `full_ret` FROM salt_returns WHERE id = 'web2'") == full);
    CHECK(raw->scalar("SELECT `success` FROM salt_returns WHERE id = 'web2'") == "1");
    CHECK(raw->scalar("SELECT `success` FROM salt_returns WHERE id = 'web3'") == "0");
    CHECK(raw->scalar("SELECT `retcode` FROM salt_returns WHERE id = 'web3'") == "2");
    CHECK(raw->scalar("SELECT `fun` FROM salt_returns WHERE id = 'web2'") == "state.apply");
    CHECK(raw->scalar("SELECT `master_id` FROM salt_events WHERE tag LIKE 'salt/job/%'") ==
          "master1");
    CHECK(raw->scalar("SELECT `data` FROM salt_events WHERE tag LIKE 'salt/job/%'") ==
          R"({"emoji":"😀"})");
    // The stock returner's own queries still work (get_jids_filter, get_fun, get_jid).
    CHECK(raw->rows("SELECT * FROM (SELECT DISTINCT `jid` ,`load` FROM `jids` WHERE `load` NOT "
                    "LIKE '%\"fun\": \"saltutil.find_job\"%' ORDER BY `jid` DESC limit 10) `tmp` "
                    "ORDER BY `jid`")
              .size() == 2);
    CHECK_FALSE(raw->rows("SELECT s.id,s.jid, s.full_ret FROM `salt_returns` s JOIN ( SELECT "
                          "MAX(`jid`) as jid from `salt_returns` GROUP BY fun, id) max ON s.jid = "
                          "max.jid WHERE s.fun = 'state.apply'")
                    .empty());
    // Opening again finds the schema complete; the DDL over it changes nothing.
    const std::string shape =
        "SELECT GROUP_CONCAT(TABLE_NAME, '.', COLUMN_NAME, ':', COLUMN_TYPE ORDER BY "
        "TABLE_NAME, ORDINAL_POSITION) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
        "DATABASE()";
    const std::string before = raw->scalar(shape);
    test_roles roles;
    raw->exec(mysql_schema(roles.writer, roles.reader));
    CHECK(raw->scalar(shape) == before);
    auto c = config_for(db);
    c.create_schema = false;
    c.archive = true;
    mysql_store again(c);
    CHECK(again.count("salt_returns") == 3);
    // Archiving into the upgraded stock archive tables: everything before 2030 goes.
    CHECK(again.clean_old_jobs(1'900'000'000'000'000) == 8);  // 3 jobs, 3 returns, 2 events
    CHECK(raw->scalar("SELECT COUNT(*) FROM salt_events_archive") == "3");
    CHECK(raw->scalar("SELECT COUNT(*) FROM jids_archive WHERE has_load = 1") == "3");
    CHECK(raw->scalar("SELECT `return` FROM salt_returns_archive WHERE id = 'web2'") ==
          R"({"pkg": "installed ✓ 😀"})");
}

TEST_CASE("mysql_store schema creation by concurrent openers", "[mysql]") {
    test_db db;
    std::mutex mu;
    std::vector<std::string> failures;
    const auto config = config_for(db);
    std::vector<std::thread> threads;
    for (int i = 0; i < 3; ++i)
        threads.emplace_back([&] {
            std::string failure;
            try {
                mysql_store s(config);
                auto res = s.write(std::vector<record>{ret("1", "m", "f", T0, "true")});
                if (res.status != write_status::ok) failure = res.error;
            } catch (const std::exception& e) {
                failure = e.what();
            }
            if (!failure.empty()) {
                std::lock_guard lock(mu);
                failures.push_back(failure);
            }
        });
    for (auto& t : threads) t.join();
    CHECK(failures == std::vector<std::string>{});
    mysql_store s(config_for(db));
    CHECK(s.count("salt_returns") == 1);
}

// ---- columns (the job_store contract itself: job_store_conformance.hpp) --------------------

TEST_CASE("mysql_store columns hold the stock values, times in UTC microseconds", "[mysql]") {
    test_db db;
    mysql_store store(config_for(db));
    auto raw = db.raw();
    raw->exec("SET time_zone = '+00:00'");

    SECTION("stock columns, record id and microsecond UTC time") {
        auto r = ret("20261127081552123457", "m2", "cmd.run", T0 + 123456, R"({"return":"x"})", -1,
                     std::nullopt);
        write_ok(store, {ret("20261127081552123456", "m1", "test.ping", T0 + 10, "true"),
                         event("salt/job/20261127081552123456/new", R"({"a":1})", T0 + 11), r});
        CHECK(raw->scalar("SELECT success FROM salt_returns WHERE id = 'm2'") == "0");
        CHECK(raw->scalar("SELECT retcode FROM salt_returns WHERE id = 'm2'") == "<null>");
        CHECK(raw->scalar("SELECT `return` FROM salt_returns WHERE id = 'm2'") == R"("x")");
        CHECK(raw->scalar("SELECT success FROM salt_returns WHERE id = 'm1'") == "1");
        CHECK(raw->scalar("SELECT retcode FROM salt_returns WHERE id = 'm1'") == "0");
        // A payload without a "return" member (or not JSON) gives JSON null there.
        CHECK(raw->scalar("SELECT `return` FROM salt_returns WHERE id = 'm1'") == "null");
        CHECK(raw->scalar("SELECT record_id FROM salt_returns WHERE id = 'm2'") == r.id);
        CHECK(raw->scalar("SELECT alter_time FROM salt_returns WHERE id = 'm2'") ==
              "2027-01-15 08:00:00.123456");
        CHECK(raw->scalar("SELECT alter_time FROM salt_events") == "2027-01-15 08:00:00.000011");
    }
    SECTION("a record without an id gets its computed id") {
        record r = ret("20261127081552123458", "m3", "test.ping", T0 + 13, "true");
        std::string expected = r.id;
        r.id.clear();
        write_ok(store, {r});
        CHECK(raw->scalar("SELECT record_id FROM salt_returns WHERE id = 'm3'") == expected);
    }
    SECTION("times outside TIMESTAMP's range are stored at its ends") {
        write_ok(store, {ret("j-early", "m", "f", 5, "1"),
                         ret("j-late", "m", "f", 4'102'444'800'000'000, "1")});
        CHECK(raw->scalar("SELECT alter_time FROM salt_returns WHERE jid = 'j-early'") ==
              "1970-01-01 00:00:01.000000");
        CHECK(raw->scalar("SELECT alter_time FROM salt_returns WHERE jid = 'j-late'") ==
              "2038-01-19 03:14:07.999999");
    }
    SECTION("the load's summary columns; a load that is not JSON is stored verbatim") {
        const std::string jid = "20261127081552123456";
        write_ok(store, {load(jid, load_json("state.apply", "web*"), T0 + 100)});
        CHECK(raw->scalar("SELECT fun FROM jids WHERE jid = '" + jid + "'") == "state.apply");
        CHECK(raw->scalar("SELECT tgt FROM jids WHERE jid = '" + jid + "'") == "web*");
        CHECK(raw->scalar("SELECT tgt_type FROM jids WHERE jid = '" + jid + "'") == "glob");
        CHECK(raw->scalar("SELECT user FROM jids WHERE jid = '" + jid + "'") == "root");
        CHECK(raw->scalar("SELECT alter_time FROM jids WHERE jid = '" + jid + "'") ==
              "2027-01-15 08:00:00.000100");

        const std::string j2 = "20261127081552999999";
        write_ok(store, {minions(j2, R"(["m1"])", T0 + 300), load(j2, load_json("cmd.run"), T0 + 302)});
        CHECK(raw->scalar("SELECT fun FROM jids WHERE jid = '" + j2 + "'") == "cmd.run");
        CHECK(raw->scalar("SELECT alter_time FROM jids WHERE jid = '" + j2 + "'") ==
              "2027-01-15 08:00:00.000302");

        const std::string j3 = "20261127081552888888";
        write_ok(store, {load(j3, "not json {")});
        CHECK(store.get_load(j3) == "not json {");
        CHECK(raw->scalar("SELECT fun FROM jids WHERE jid = '" + j3 + "'") == "<null>");
        // A minion list that is not JSON adds nothing.
        write_ok(store, {minions(j3, R"(["m1"])"), minions(j3, "not json")});
        CHECK(store.get_minions_of(j3) == R"(["m1"])");
    }
    SECTION("events' master id; hostile text in the stock columns") {
        write_ok(store, {event("salt/job/2/new", R"({"n":4})", T0 + 40, "master2"),
                         ret("j", "m1", "f", T0, R"({"b":"\\'","return":"\\"})"),
                         load("j", R"({"fun":"')--","user":"Robert'); DROP TABLE jids;--"})")});
        CHECK(raw->scalar("SELECT master_id FROM salt_events WHERE tag = 'salt/job/2/new'") ==
              "master2");
        CHECK(raw->scalar("SELECT user FROM jids") == "Robert'); DROP TABLE jids;--");
        CHECK(raw->scalar("SELECT `return` FROM salt_returns") == R"("\\")");
    }
    SECTION("a NUL byte in a value and \\u0000 in JSON survive") {
        const std::string nul_minion = std::string("nul\0byte", 8);
        const std::string payload = R"({"z":"\u0000"})";
        write_ok(store, {ret("j-nul", nul_minion, "f", T0, payload)});
        CHECK(store.get_returns("j-nul") == pair_list{{nul_minion, payload}});
    }
    SECTION("a 5 MB return fills the stock `return` column") {
        const std::string big = R"({"return":")" + std::string(5 << 20, 'x') + R"("})";
        write_ok(store, {ret("j-big", "m1", "test.ping", T0, big)});
        CHECK(raw->scalar("SELECT LENGTH(`return`) > 5000000 FROM salt_returns WHERE id = 'm1'") ==
              "1");
    }
}

TEST_CASE("mysql_store clean_old_jobs deletes or archives", "[mysql]") {
    test_db db;
    const auto batch = clean_old_jobs_batch();
    SECTION("deleted") {
        mysql_store store(config_for(db));
        write_ok(store, batch);
        CHECK(store.clean_old_jobs(k_clean_cutoff) == k_cleaned_rows);
        check_cleaned(store);
        auto raw = db.raw();
        CHECK(raw->scalar("SELECT COUNT(*) FROM salt_returns_archive") == "0");
    }
    SECTION("archived") {
        auto c = config_for(db);
        c.archive = true;
        mysql_store store(c);
        write_ok(store, batch);
        CHECK(store.clean_old_jobs(k_clean_cutoff) == k_cleaned_rows);
        check_cleaned(store);
        auto raw = db.raw();
        CHECK(raw->scalar("SELECT GROUP_CONCAT(jid, ':', minions, ':', fun) FROM jids_archive") ==
              k_old_jid + R"(:["m1","m2"]:test.ping)");
        CHECK(raw->scalar("SELECT COUNT(*) FROM salt_returns_archive") == "3");
        CHECK(raw->scalar("SELECT GROUP_CONCAT(tag) FROM salt_events_archive") == "salt/old");
        // A record re-delivered after the clean and cleaned again meets its archived copy.
        write_ok(store, {batch[2], batch[8]});
        CHECK(store.clean_old_jobs(k_clean_cutoff) == 2);
        CHECK(raw->scalar("SELECT COUNT(*) FROM salt_returns_archive") == "3");
        CHECK(raw->scalar("SELECT COUNT(*) FROM salt_events_archive") == "1");
    }
}

// ---- records that cannot be stored -------------------------------------------------------

TEST_CASE("mysql_store leaves out only the records that cannot be stored", "[mysql]") {
    test_db db;
    mysql_store store(config_for(db));
    const std::string long_jid(300, '7');  // the jid column holds 255 characters

    SECTION("a value too long for its column") {
        auto res = store.write(
            std::vector<record>{ret("20261127081552123456", "m1", "test.ping", T0, "true"),
                                ret(long_jid, "m2", "test.ping", T0, "true"),
                                load(long_jid, load_json("x")), event("salt/ok", "{}", T0),
                                ret("20261127081552123458", "m3", "test.ping", T0, "true")});
        INFO(res.error);
        CHECK(res.status == write_status::ok);
        CHECK(res.dropped == 2);
        CHECK_THAT(res.error, Catch::Contains("Data too long") && Catch::Contains("1406"));
        CHECK(store.count("salt_returns") == 2);
        CHECK(store.count("salt_events") == 1);
        CHECK(store.count("jids") == 0);
        // Alone, such a record is a drop.
        auto alone = store.write(std::vector<record>{ret(long_jid, "m2", "test.ping", T0, "true")});
        CHECK(alone.status == write_status::drop);
        // The connection and the next batch are fine.
        write_ok(store, {ret("20261127081552123459", "m4", "test.ping", T0, "true")});
        CHECK(store.count("salt_returns") == 3);
    }
    SECTION("invalid UTF-8") {
        auto res =
            store.write(std::vector<record>{ret("j1", "bad\xff\xfe", "test.ping", T0, "true"),
                                            ret("j1", "good", "test.ping", T0, "true")});
        INFO(res.error);
        CHECK(res.status == write_status::ok);
        CHECK(res.dropped == 1);
        CHECK(store.get_minion_ids() == std::vector<std::string>{"good"});
    }
    SECTION("a record larger than max_allowed_packet") {
        std::string huge(store.max_packet() + 10, 'x');
        auto res =
            store.write(std::vector<record>{ret("j1", "m1", "test.ping", T0, "\"" + huge + "\""),
                                            ret("j1", "m2", "test.ping", T0, "true")});
        INFO(res.error);
        CHECK(res.status == write_status::ok);
        CHECK(res.dropped == 1);
        CHECK_THAT(res.error, Catch::Contains("max_allowed_packet"));
        CHECK(store.get_minion_ids() == std::vector<std::string>{"m2"});
    }
}

// ---- events as arrays of parameter sets (bulk_events) ---------------------------------------

TEST_CASE("mysql_store bulk events store every byte as the INSERT path does", "[mysql]") {
    const bool bulk = GENERATE(true, false);
    INFO("bulk_events " << bulk);
    test_db db;
    auto cfg = config_for(db);
    cfg.bulk_events = bulk;
    mysql_store store(cfg);
    // Tabs and newlines, backslashes, NUL, a text that reads as NULL in some formats, an
    // empty value, quotes and SQL, multi-byte UTF-8: bound values and quoted literals alike.
    const std::vector<std::pair<std::string, std::string>> values = {
        {"salt/tab\there", "{\"a\":\"x\\ty\"}"},
        {"salt/nl\nhere", "line1\nline2\r\n"},
        {"salt/back\\slash\\", "\\"},
        {"\\N", "\\N"},
        {"", ""},
        {std::string("nul\0byte", 8), std::string("{\"n\":\"\0\"}", 10)},
        {"it's \"quoted\"; DROP TABLE salt_events; --", "'); DELETE FROM jids; --"},
        {"salt/\xc3\xa9v\xc3\xa9nement/\xf0\x9f\x94\xa5", "{\"m\":\"\xe6\x97\xa5\xe6\x9c\xac\"}"},
    };
    std::vector<record> batch;
    for (std::size_t i = 0; i < values.size(); ++i) {
        auto r = event(values[i].first, values[i].second, T0 + static_cast<std::int64_t>(i));
        r.minion = i == 2 ? "master\t2\\" : "master1";
        batch.push_back(std::move(r));
    }
    write_ok(store, batch);
    write_ok(store, batch);  // a re-delivery adds nothing
    CHECK(store.bulk_batches() == (bulk ? 2 : 0));
    auto raw = db.raw();
    auto rows = raw->rows(
        "SELECT tag, data, master_id, record_id, DATE_FORMAT(alter_time, '%Y-%m-%d %H:%i:%s.%f')"
        " FROM salt_events ORDER BY id");
    REQUIRE(rows.size() == values.size());
    for (std::size_t i = 0; i < values.size(); ++i) {
        INFO("row " << i);
        CHECK(rows[i][0] == values[i].first);
        CHECK(rows[i][1] == values[i].second);
        CHECK(rows[i][2] == batch[i].minion);
        CHECK(rows[i][3] == batch[i].id);
    }
    CHECK(rows[0][4] == "2027-01-15 08:00:00.000000");
    CHECK(rows[1][4] == "2027-01-15 08:00:00.000001");
}

TEST_CASE("mysql_store bulk events: re-delivered rows are skipped, new ones stored", "[mysql]") {
    test_db db;
    mysql_store store(config_for(db));
    auto events = [](int from, int to) {
        std::vector<record> b;
        for (int i = from; i < to; ++i)
            b.push_back(event("salt/job/" + std::to_string(i) + "/ret/m", "{\"i\":" +
                              std::to_string(i) + "}", T0 + i));
        return b;
    };
    write_ok(store, events(0, 300));
    CHECK(store.count("salt_events") == 300);
    // The same batch again, then a half-new one.
    write_ok(store, events(0, 300));
    CHECK(store.count("salt_events") == 300);
    write_ok(store, events(150, 450));
    CHECK(store.count("salt_events") == 450);
    auto raw = db.raw();
    CHECK(raw->scalar("SELECT COUNT(DISTINCT record_id) FROM salt_events") == "450");
    CHECK(store.bulk_batches() == 3);
}

TEST_CASE("mysql_store bulk events: a value the server refuses leaves out that event alone",
          "[mysql]") {
    test_db db;
    mysql_store store(config_for(db));
    // Too long for the tag column, and invalid UTF-8: strict mode refuses the whole request,
    // then the batch goes record by record.
    std::vector<record> batch = {event("salt/ok/1", "{}", T0),
                                 event(std::string(300, 't'), "{}", T0),
                                 event("salt/bad\xff\xfe", "{}", T0 + 1),
                                 ret("20261127081552123456", "m1", "test.ping", T0, "true"),
                                 event("salt/ok/2", "{}", T0 + 2)};
    auto res = store.write(batch);
    INFO(res.error);
    CHECK(res.status == write_status::ok);
    CHECK(res.dropped == 2);
    CHECK_THAT(res.error, Catch::Contains("Data too long") && Catch::Contains("1406"));
    auto raw = db.raw();
    CHECK(raw->rows("SELECT tag FROM salt_events ORDER BY id") ==
          std::vector<std::vector<std::string>>{{"salt/ok/1"}, {"salt/ok/2"}});
    CHECK(store.count("salt_returns") == 1);
    CHECK(store.bulk_batches() == 0);
    // The next batch goes in bulk again.
    write_ok(store, {event("salt/ok/3", "{}", T0 + 3)});
    CHECK(store.bulk_batches() == 1);
}

TEST_CASE("mysql_store bulk events: requests split at max_allowed_packet, one transaction",
          "[mysql]") {
    test_db db;
    mysql_store store(config_for(db));
    // 40 events of 1 MB: several requests; then one larger than a packet, left out by reason.
    std::vector<record> batch;
    const std::string mb(1024 * 1024, 'e');
    for (int i = 0; i < 40; ++i)
        batch.push_back(event("salt/big/" + std::to_string(i), "\"" + mb + "\"", T0 + i));
    write_ok(store, batch);
    write_ok(store, batch);
    CHECK(store.count("salt_events") == 40);
    CHECK(store.bulk_batches() == 2);
    auto raw = db.raw();
    CHECK(raw->scalar("SELECT MIN(LENGTH(data)) FROM salt_events") ==
          std::to_string(mb.size() + 2));
    auto res = store.write(std::vector<record>{
        event("salt/huge", std::string(store.max_packet() + 10, 'h'), T0 + 100),
        event("salt/small", "{}", T0 + 101)});
    INFO(res.error);
    CHECK(res.status == write_status::ok);
    CHECK(res.dropped == 1);
    CHECK_THAT(res.error, Catch::Contains("max_allowed_packet"));
    CHECK(store.count("salt_events") == 41);
}

TEST_CASE("mysql_store bulk events: an event too large as SQL text is stored record by record",
          "[mysql]") {
    test_db db;
    mysql_store store(config_for(db));
    // Backslashes double when escaped: as INSERT text the event passes max_allowed_packet, as
    // a bound value it does not. A companion the server refuses sends the batch record by
    // record, which must not turn the large event into a drop.
    const std::string payload = "\"" + std::string(store.max_packet() * 3 / 4, '\\') + "\"";
    auto res = store.write(std::vector<record>{event("salt/large", payload, T0),
                                               event(std::string(300, 't'), "{}", T0 + 1)});
    INFO(res.error.substr(0, 300));
    CHECK(res.status == write_status::ok);
    CHECK(res.dropped == 1);
    CHECK_THAT(res.error, Catch::Contains("1406"));
    auto raw = db.raw();
    CHECK(raw->scalar("SELECT LENGTH(data) FROM salt_events WHERE tag = 'salt/large'") ==
          std::to_string(payload.size()));
}

TEST_CASE("mysql_store bulk events: a server that cannot prepare gets INSERT text",
          "[mysql][serial]") {
    test_db db;
    auto a = admin();
    struct restore {
        raw_conn& a;
        std::string was;
        ~restore() { a.try_exec("SET GLOBAL max_prepared_stmt_count = " + was); }
    } guard{*a, a->scalar("SELECT @@GLOBAL.max_prepared_stmt_count")};
    mysql_store store(config_for(db));  // the schema's DDL prepares statements of its own
    a->exec("SET GLOBAL max_prepared_stmt_count = 0");
    write_ok(store, {event("salt/a", "{}", T0), event("salt/b", "{}", T0 + 1)});
    write_ok(store, {event("salt/a", "{}", T0), event("salt/c", "{}", T0 + 2)});
    CHECK(store.count("salt_events") == 3);
    CHECK(store.bulk_batches() == 0);
    // A new connection tries again.
    a->exec("SET GLOBAL max_prepared_stmt_count = " + guard.was);
    a->exec("KILL CONNECTION " + connections_to(*a, db.name).at(0));
    auto res = store.write(std::vector<record>{event("salt/d", "{}", T0 + 3)});
    if (res.status == write_status::retry)
        res = store.write(std::vector<record>{event("salt/d", "{}", T0 + 3)});
    INFO(res.error);
    CHECK(res.status == write_status::ok);
    CHECK(store.bulk_batches() == 1);
    CHECK(store.count("salt_events") == 4);
}

TEST_CASE("mysql_store splits a batch at max_allowed_packet", "[mysql]") {
    test_db db;
    mysql_store store(config_for(db));
    // 40 returns of 1 MB: more than two packets' worth, one transaction.
    std::vector<record> batch;
    const std::string mb(1024 * 1024, 'y');
    for (int i = 0; i < 40; ++i)
        batch.push_back(ret("j" + std::to_string(i), "m", "f", T0 + i, "\"" + mb + "\""));
    write_ok(store, batch);
    CHECK(store.count("salt_returns") == 40);
    write_ok(store, batch);
    CHECK(store.count("salt_returns") == 40);
}

// ---- connection faults -------------------------------------------------------------------

TEST_CASE("mysql_store TLS: verified by default, refused with another CA", "[mysql]") {
    test_db db;
    auto a = admin();
    const std::string pw = "pw-" + server_test::random_suffix();
    const std::string tls_user = "ftls_" + server_test::random_suffix();
    a->exec("CREATE USER '" + tls_user + "'@'%' IDENTIFIED BY " + a->quote(pw) + " REQUIRE X509");
    a->exec("GRANT ALL ON `" + db.name + "`.* TO '" + tls_user + "'@'%'");
    struct drop_user {
        std::string u;
        ~drop_user() {
            try {
                admin()->try_exec("DROP USER IF EXISTS '" + u + "'@'%'");
            } catch (...) {
            }
        }
    } cleanup{tls_user};
    auto c = config_for(db);
    c.user = tls_user;
    c.password = pw;

    SECTION("mutual TLS with the CA and a client certificate") {
        c.ssl_cert = info("client_cert");
        c.ssl_key = info("client_key");
        mysql_store store(c);
        write_ok(store, {ret("j1", "m1", "f", T0, "true")});
        CHECK(store.count("salt_returns") == 1);
    }
    SECTION("without the client certificate the server refuses") {
        auto e = open_refused<mysql_store>(c, "connected without a client certificate");
        CHECK(e.status == write_status::fatal);
        CHECK_THAT(e.what(), Catch::Contains("1045"));
        CHECK_THAT(e.what(), !Catch::Contains(pw));
    }
    SECTION("another CA: the certificate is rejected, fatal, the message says what to check") {
        c.ssl_cert = info("client_cert");
        c.ssl_key = info("client_key");
        c.ssl_ca = info("other_ca");
        for (auto mode : {mysql_ssl_mode::verify_identity, mysql_ssl_mode::verify_ca}) {
            c.ssl_mode = mode;
            auto e = open_refused<mysql_store>(c, "connected with the wrong CA");
            CHECK(e.status == write_status::fatal);
            CHECK_THAT(e.what(), Catch::Contains("2026") && Catch::Contains("ssl_ca"));
        }
    }
    SECTION("ssl_mode required encrypts without checking") {
        c.ssl_cert = info("client_cert");
        c.ssl_key = info("client_key");
        c.ssl_ca = "";
        c.ssl_mode = mysql_ssl_mode::required;
        mysql_store store(c);
        write_ok(store, {ret("j1", "m1", "f", T0, "true")});
    }
    SECTION("ssl_mode disabled: no TLS, so this user is refused") {
        c.ssl_mode = mysql_ssl_mode::disabled;
        CHECK_THROWS_AS(mysql_store(c), store_error);
        // ... while the test user, allowed without TLS, connects.
        auto plain = config_for(db);
        plain.ssl_mode = mysql_ssl_mode::disabled;
        plain.ssl_ca = "";
        mysql_store store(plain);
        CHECK(store.count("jids") == 0);
    }
    SECTION("verify_ca without a CA, or a missing file, is refused before connecting") {
        c.ssl_ca = "";
        c.ssl_mode = mysql_ssl_mode::verify_ca;
        CHECK_THROWS_WITH(mysql_store(c), Catch::Contains("verify_ca needs ssl_ca"));
        c.ssl_ca = "/nonexistent/ca.pem";
        CHECK_THROWS_WITH(mysql_store(c), Catch::Contains("/nonexistent/ca.pem"));
    }
}

TEST_CASE("mysql_store: no server on the port is retry, within the connect timeout", "[mysql]") {
    test_db db;
    auto c = config_for(db);
    c.port = server_test::unused_loopback_port();
    c.connect_timeout_ms = 2000;
    const auto start = std::chrono::steady_clock::now();
    auto e = open_refused<mysql_store>(c, "connected to nothing");
    CHECK(e.status == write_status::retry);
    CHECK_THAT(e.what(), Catch::Contains(std::to_string(c.port)));
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(3));

    // Through the sink: the record waits (retry), nothing is thrown.
    options opts("sink 'db' (mysql)", mysql_sink_options(),
                 config_map{{"host", std::string("127.0.0.1")},
                            {"port", static_cast<std::int64_t>(c.port)},
                            {"db", db.name},
                            {"connect_timeout_ms", std::int64_t{1000}}});
    auto s = make_mysql_sink("db", opts);
    auto res = s->write(std::vector<record>{ret("j", "m", "f", T0, "1")});
    CHECK(res.status == write_status::retry);
    s->close();
}

TEST_CASE("mysql_store: a wrong password is fatal and never shown", "[mysql]") {
    test_db db;
    auto c = config_for(db);
    c.password = "wrong-" + server_test::random_suffix();
    auto e = open_refused<mysql_store>(c, "logged in with a wrong password");
    CHECK(e.status == write_status::fatal);
    CHECK_THAT(e.what(), Catch::Contains("Access denied") && Catch::Contains(info("user")));
    CHECK_THAT(e.what(), !Catch::Contains(c.password));
    // An unknown database is fatal too, and says so.
    auto d = config_for(db);
    d.db = "ft_missing_" + server_test::random_suffix();
    CHECK_THROWS_WITH(mysql_store(d), Catch::Contains("create the database"));
}

TEST_CASE("mysql_store: a killed connection loses and duplicates nothing", "[mysql]") {
    test_db db;
    mysql_store store(config_for(db));
    auto a = admin();
    auto batch = [](int n) {
        std::vector<record> b;
        for (int i = 0; i < 50; ++i) {
            const std::string jid = "2026112708155" + std::to_string(n * 1000 + i);
            b.push_back(ret(jid, "m1", "test.ping", T0 + n * 1000 + i, "true"));
            b.push_back(event("salt/job/" + jid + "/ret", "{}", T0 + n * 1000 + i));
            b.push_back(minions(jid, R"(["m1","m2"])"));
        }
        return b;
    };
    write_ok(store, batch(1));
    for (int round = 2; round <= 4; ++round) {
        auto ids = connections_to(*a, db.name);
        REQUIRE(ids.size() == 1);
        a->exec("KILL CONNECTION " + ids[0]);
        auto b = batch(round);
        auto res = store.write(b);
        if (res.status == write_status::retry) {
            CHECK_THAT(res.error, Catch::Contains("mysql"));
            res = store.write(b);  // reconnects
        }
        INFO(res.error);
        REQUIRE(res.status == write_status::ok);
    }
    CHECK(store.count("salt_returns") == 200);
    CHECK(store.count("salt_events") == 200);
    CHECK(store.count("jids") == 200);
    // A read finding its connection killed reconnects by itself.
    a->exec("KILL CONNECTION " + connections_to(*a, db.name).at(0));
    CHECK(store.get_minions_of("20261127081551000") == R"(["m1","m2"])");
}

TEST_CASE("mysql_store: a lock held too long is a retry, then the write succeeds", "[mysql]") {
    test_db db;
    auto c = config_for(db);
    c.read_timeout_ms = 4000;  // lock waits end after 2 s
    mysql_store store(c);
    write_ok(store, {minions("j1", R"(["a"])")});
    auto holder = db.raw();
    holder->exec("START TRANSACTION; SELECT * FROM jids WHERE jid = 'j1' FOR UPDATE");
    auto res = store.write(std::vector<record>{minions("j1", R"(["b"])", T0 + 5)});
    CHECK(res.status == write_status::retry);
    CHECK_THAT(res.error, Catch::Contains("1205"));
    holder->exec("ROLLBACK");
    write_ok(store, {minions("j1", R"(["b"])", T0 + 5)});
    CHECK(store.get_minions_of("j1") == R"(["a","b"])");
}

TEST_CASE("mysql_store: a dropped table is fatal, and the batch rolled back", "[mysql]") {
    test_db db;
    mysql_store store(config_for(db));
    db.raw()->exec("DROP TABLE salt_events");
    auto res = store.write(
        std::vector<record>{ret("j1", "m1", "f", T0, "true"), event("salt/x", "{}", T0)});
    CHECK(res.status == write_status::fatal);
    CHECK_THAT(res.error, Catch::Contains("salt_events"));
    CHECK(store.count("salt_returns") == 0);
}

// ---- the sink ------------------------------------------------------------------------------

TEST_CASE("mysql sink options and delegation", "[mysql]") {
    const auto& table = mysql_sink_options();
    std::vector<std::string> keys;
    for (const auto& o : table) keys.push_back(o.key);
    CHECK(keys == std::vector<std::string>{"host", "port", "unix_socket", "db", "user", "pass",
                                           "ssl_ca", "ssl_cert", "ssl_key", "ssl_mode",
                                           "connect_timeout_ms", "read_timeout_ms",
                                           "write_timeout_ms", "create_schema", "archive",
                                           "bulk_events"});
    for (const auto& o : table) {
        INFO(o.key);
        CHECK(o.secret == (o.key == "pass"));
        CHECK_FALSE(o.required);
    }
    options defaults("sink 'db' (mysql)", table, config_map{});
    auto dc = mysql_config_from(defaults);
    CHECK(dc.host == "localhost");
    CHECK(dc.port == 3306);
    CHECK(dc.db == "salt");
    CHECK(dc.user == "salt");
    CHECK(dc.password.empty());
    CHECK(dc.ssl_mode == mysql_ssl_mode::verify_identity);
    CHECK(dc.create_schema);
    CHECK_FALSE(dc.archive);

    CHECK_THROWS_AS(
        options("sink 'db' (mysql)", table, config_map{{"ssl_mode", std::string("prefer")}}),
        config_error);
    CHECK_THROWS_WITH(
        make_mysql_sink("db", options("sink 'db' (mysql)", table,
                                      config_map{{"ssl_mode", std::string("verify_ca")}})),
        Catch::Contains("ssl_ca"));
    CHECK_THROWS_AS(make_mysql_sink("db", options("sink 'db' (mysql)", table,
                                                  config_map{{"ssl_cert", std::string("/x.crt")}})),
                    config_error);
    // A bad value of the secret option is never echoed.
    try {
        options("sink 'db' (mysql)", table, config_map{{"pass", std::int64_t{12345}}});
        FAIL("accepted a number as password");
    } catch (const config_error& e) {
        CHECK_THAT(e.what(), !Catch::Contains("12345"));
    }

    test_db db;
    config_map raw{{"host", std::string("127.0.0.1")},
                   {"port", static_cast<std::int64_t>(server_port())},
                   {"db", db.name},
                   {"user", info("user")},
                   {"pass", info("password")},
                   {"ssl_ca", info("ca")}};
    options opts;
    auto s = make_sink("db", "mysql", raw, &opts);
    CHECK(s->type() == "mysql");
    std::vector<record> batch = {ret("20261127081552123456", "m1", "test.ping", T0, "true")};
    CHECK(s->write(batch).status == write_status::ok);
    s->close();
    CHECK(s->write(batch).status == write_status::fatal);
    auto store = open_job_store("mysql", opts);
    CHECK(store->count("salt_returns") == 1);

    SECTION("unix socket, with verified TLS (the name checked is localhost) and without") {
        raw["unix_socket"] = info("socket");
        raw["host"] = std::string("unused.invalid");
        auto s2 = make_sink("db", "mysql", raw, &opts);
        auto res = s2->write(std::vector<record>{ret("j2", "m1", "f", T0, "true")});
        INFO(res.error);
        CHECK(res.status == write_status::ok);
        s2->close();
        raw["ssl_mode"] = std::string("disabled");
        auto s3 = make_sink("db", "mysql", raw, &opts);
        CHECK(s3->write(std::vector<record>{ret("j3", "m1", "f", T0, "true")}).status ==
              write_status::ok);
        CHECK(store->count("salt_returns") == 3);
        s3->close();
    }
    SECTION("apply_mysql_schema creates tables and roles") {
        test_db other;
        test_roles roles;
        auto c = config_for(other);
        c.user = info("superuser");
        c.password = info("superuser_password");
        apply_mysql_schema(c, roles.writer, roles.reader);
        auto r = admin();
        CHECK(r->scalar("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '" +
                        other.name + "'") == "6");
        CHECK(r->scalar("SELECT COUNT(*) FROM mysql.user WHERE is_role = 'Y' AND user IN ('" +
                        roles.writer + "', '" + roles.reader + "')") == "2");
    }
}
