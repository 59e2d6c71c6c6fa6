// Tests of the SQLite job cache / event store and the sqlite sink.
#include <sys/stat.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "fastret/config.hpp"
#include "fastret/record.hpp"
#include "fastret/sink.hpp"
#include "fastret/sqlite_store.hpp"
#include "job_store_conformance.hpp"
#include "sinks/sqlite_sink.hpp"

using namespace fastret;
using namespace fastret::store_test;
namespace fs = std::filesystem;

namespace {

// A fresh directory under the system temp dir, removed with everything in it.
struct temp_dir {
    fs::path dir;
    temp_dir() {
        static std::atomic<int> counter{0};
        dir = fs::temp_directory_path() /
              ("fastret_sqlite_test_" + std::to_string(::getpid()) + "_" +
               std::to_string(counter++));
        fs::remove_all(dir);
        fs::create_directories(dir);
    }
    ~temp_dir() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    fs::path db() const { return dir / "cache.sqlite"; }
};

// A raw connection for looking at (or locking) the database behind the store's back.
struct raw_db {
    sqlite3* db = nullptr;
    explicit raw_db(const fs::path& p) {
        REQUIRE(sqlite3_open(p.string().c_str(), &db) == SQLITE_OK);
        sqlite3_busy_timeout(db, 2000);
    }
    ~raw_db() { sqlite3_close(db); }
    int exec(const std::string& sql) {
        return sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
    }
    // First column of the first row as text ("<null>" for NULL, "<none>" without a row).
    std::string scalar(const std::string& sql) {
        sqlite3_stmt* st = nullptr;
        REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
        std::string out = "<none>";
        if (sqlite3_step(st) == SQLITE_ROW) {
            auto* t = sqlite3_column_text(st, 0);
            out = t ? reinterpret_cast<const char*>(t) : "<null>";
        }
        sqlite3_finalize(st);
        return out;
    }
};

// A fresh database file for the conformance cases.
class sqlite_env final : public store_test::store_env {
public:
    std::unique_ptr<job_store> open() override { return std::make_unique<sqlite_store>(tmp_.db()); }

private:
    temp_dir tmp_;
};

}  // namespace

FASTRET_JOB_STORE_CONFORMANCE("sqlite_store", "[sqlite]", std::make_unique<sqlite_env>())

TEST_CASE("sqlite_store creates the schema in WAL mode", "[sqlite]") {
    temp_dir tmp;
    {
        sqlite_store store(tmp.db());
        CHECK(store.path() == tmp.db());
        raw_db raw(tmp.db());
        CHECK(raw.scalar("PRAGMA journal_mode") == "wal");
        for (const char* name :
             {"jids", "salt_returns", "salt_events", "jids_alter_time", "salt_returns_jid",
              "salt_returns_id_fun_time", "salt_events_tag"}) {
            INFO(name);
            CHECK(raw.scalar(std::string("SELECT count(*) FROM sqlite_master WHERE name = '") +
                             name + "'") == "1");
        }
        CHECK(raw.scalar("SELECT sql FROM sqlite_master WHERE name = 'salt_returns_id_fun_time'")
                  .find("(id, fun, alter_time)") != std::string::npos);
        write_ok(store, {ret("20261127081552123456", "m1", "test.ping", 10, "true")});
    }
    // Reopening an existing database keeps its data.
    sqlite_store again(tmp.db(), 1000, true);
    CHECK(again.count("salt_returns") == 1);
}

TEST_CASE("sqlite_store columns: NULL where unknown, ids, times and the load's summary",
          "[sqlite]") {
    temp_dir tmp;
    sqlite_store store(tmp.db());
    raw_db raw(tmp.db());

    SECTION("success and retcode are NULL when unknown; record id and time as given") {
        auto r = ret("20261127081552123457", "m2", "cmd.run", 12, R"("x")", -1, std::nullopt);
        write_ok(store, {ret("20261127081552123456", "m1", "test.ping", 10, "true"), r});
        CHECK(raw.scalar("SELECT success FROM salt_returns WHERE id = 'm2'") == "<null>");
        CHECK(raw.scalar("SELECT retcode FROM salt_returns WHERE id = 'm2'") == "<null>");
        CHECK(raw.scalar("SELECT success FROM salt_returns WHERE id = 'm1'") == "1");
        CHECK(raw.scalar("SELECT retcode FROM salt_returns WHERE id = 'm1'") == "0");
        CHECK(raw.scalar("SELECT record_id FROM salt_returns WHERE id = 'm2'") == r.id);
        CHECK(raw.scalar("SELECT alter_time FROM salt_returns WHERE id = 'm2'") == "12");
    }
    SECTION("a record without an id gets its computed id") {
        record r = ret("20261127081552123458", "m3", "test.ping", 13, "true");
        std::string expected = r.id;
        r.id.clear();
        write_ok(store, {r});
        CHECK(raw.scalar("SELECT record_id FROM salt_returns WHERE id = 'm3'") == expected);
    }
    SECTION("the load's summary columns; a load that is not JSON is stored verbatim") {
        const std::string jid = "20261127081552123456";
        write_ok(store, {load(jid, load_json("state.apply", "web*"), 100)});
        CHECK(raw.scalar("SELECT fun FROM jids") == "state.apply");
        CHECK(raw.scalar("SELECT tgt FROM jids") == "web*");
        CHECK(raw.scalar("SELECT tgt_type FROM jids") == "glob");
        CHECK(raw.scalar("SELECT user FROM jids") == "root");
        CHECK(raw.scalar("SELECT alter_time FROM jids") == "100");

        const std::string j2 = "20261127081552999999";
        write_ok(store, {minions(j2, R"(["m1"])", 300), load(j2, load_json("cmd.run"), 302)});
        CHECK(raw.scalar("SELECT fun FROM jids WHERE jid = '" + j2 + "'") == "cmd.run");

        const std::string j3 = "20261127081552888888";
        write_ok(store, {load(j3, "not json {")});
        CHECK(store.get_load(j3) == "not json {");
        CHECK(raw.scalar("SELECT fun FROM jids WHERE jid = '" + j3 + "'") == "<null>");

        const std::string j4 = "1'); DROP TABLE jids; --";
        write_ok(store, {load(j4, R"({"fun":"')--","user":"Robert'); DROP TABLE jids;--"})")});
        CHECK(raw.scalar("SELECT user FROM jids WHERE fun = ''')--'") ==
              "Robert'); DROP TABLE jids;--");
    }
    SECTION("events: master id and time; JSON escapes such as \\u0000 are kept") {
        const std::string data = R"({"n":3,"z":"\u0000"})";
        write_ok(store, {event("salt/auth", data, 20, "master2")});
        CHECK(raw.scalar("SELECT master_id FROM salt_events") == "master2");
        CHECK(raw.scalar("SELECT alter_time FROM salt_events") == "20");
        CHECK(store.get_events("salt/auth", 1) == pair_list{{"salt/auth", data}});
    }
}

TEST_CASE("sqlite_store concurrent writers: a forked child and the parent", "[sqlite]") {
    temp_dir tmp;
    constexpr int batches = 40;
    constexpr int per_batch = 10;
    auto make_batch = [](const std::string& who, int b) {
        std::vector<record> batch;
        for (int i = 0; i < per_batch; ++i) {
            std::string jid = "2026112708155200" + std::to_string(b * per_batch + i);
            batch.push_back(ret(jid, who, "test.ping", b, "true"));
            batch.push_back(minions(jid, "[\"" + who + "\"]"));
        }
        return batch;
    };

    // No connection to this file is open before fork(): the child starts clean.
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int rc = 0;
        try {
            sqlite_store s(tmp.db());
            for (int i = 0; i < batches; ++i) {
                auto batch = make_batch("child", i);
                if (s.write(batch).status != write_status::ok) rc = 1;
            }
        } catch (...) {
            rc = 2;
        }
        ::_exit(rc);
    }
    int failures = 0;
    {
        sqlite_store s(tmp.db());
        for (int i = 0; i < batches; ++i) {
            auto batch = make_batch("parent", i);
            if (s.write(batch).status != write_status::ok) ++failures;
        }
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(failures == 0);
    sqlite_store check(tmp.db());
    CHECK(check.count("salt_returns") == 2 * batches * per_batch);
    CHECK(check.count("jids") == batches * per_batch);
    CHECK(check.get_minions_of("2026112708155200" "7") == R"(["child","parent"])");
}

TEST_CASE("sqlite_store classifies errors", "[sqlite]") {
    temp_dir tmp;

    SECTION("a database locked by another writer is retried") {
        sqlite_store store(tmp.db(), 50);
        raw_db other(tmp.db());
        REQUIRE(other.exec("BEGIN IMMEDIATE") == SQLITE_OK);
        auto r = ret("20261127081552123456", "m1", "test.ping", 10, "true");
        auto res = store.write(std::vector<record>{r});
        CHECK(res.status == write_status::retry);
        CHECK_THAT(res.error, Catch::Contains("locked"));
        CHECK_THAT(res.error, Catch::Contains(tmp.db().string()));
        // Readers are not blocked by the writer.
        CHECK(store.count("salt_returns") == 0);
        REQUIRE(other.exec("ROLLBACK") == SQLITE_OK);
        // The same batch succeeds once the lock is gone.
        write_ok(store, {r});
        CHECK(store.count("salt_returns") == 1);
    }

    SECTION("a missing table stops the sink (fatal), and the transaction is rolled back") {
        sqlite_store store(tmp.db());
        {
            raw_db other(tmp.db());
            REQUIRE(other.exec("DROP TABLE salt_events") == SQLITE_OK);
        }
        auto res = store.write(std::vector<record>{
            ret("20261127081552123456", "m1", "test.ping", 10, "true"),
            event("salt/x", "{}", 10)});
        CHECK(res.status == write_status::fatal);
        CHECK_THAT(res.error, Catch::Contains("salt_events"));
        CHECK(store.count("salt_returns") == 0);
        // The connection is usable afterwards.
        write_ok(store, {ret("20261127081552123456", "m1", "test.ping", 10, "true")});
        CHECK(store.count("salt_returns") == 1);
    }

    SECTION("a database in a missing directory cannot be opened") {
        const auto bad = tmp.dir / "no" / "such" / "dir" / "cache.sqlite";
        CHECK_THROWS_AS(sqlite_store(bad), std::runtime_error);
        CHECK_THROWS_WITH(sqlite_store(bad), Catch::Contains(bad.string()) &&
                                                 Catch::Contains("unable to open"));
    }

    SECTION("a file that is not a database cannot be opened") {
        {
            std::FILE* f = std::fopen(tmp.db().c_str(), "wb");
            REQUIRE(f);
            std::string junk(8192, 'x');
            std::fwrite(junk.data(), 1, junk.size(), f);
            std::fclose(f);
        }
        CHECK_THROWS_WITH(sqlite_store(tmp.db()), Catch::Contains(tmp.db().string()));
    }
}

TEST_CASE("sqlite sink options and delegation", "[sqlite][sink]") {
    temp_dir tmp;
    const auto& table = sqlite_sink_options();
    REQUIRE(table.size() == 3);
    CHECK(table[0].key == "path");
    CHECK(table[0].required);
    CHECK(table[1].key == "busy_timeout_ms");
    CHECK(table[1].default_text == "5000");
    CHECK(table[1].max == 600000);
    CHECK(table[2].key == "synchronous");
    CHECK(table[2].choices == std::vector<std::string>{"normal", "full"});

    options opts("sink 'jobs' (sqlite)", table, config_map{{"path", tmp.db().string()}});
    CHECK(opts.get_int("busy_timeout_ms") == 5000);
    CHECK(opts.get_string("synchronous") == "full");
    CHECK_THROWS_AS(options("sink 'jobs' (sqlite)", table,
                            config_map{{"path", tmp.db().string()},
                                       {"synchronous", std::string("off")}}),
                    config_error);
    CHECK_THROWS_AS(options("sink 'jobs' (sqlite)", table, config_map{}), config_error);

    auto s = make_sqlite_sink("jobs", opts);
    CHECK(s->type() == "sqlite");
    std::vector<record> batch = {ret("20261127081552123456", "m1", "test.ping", 10, "true")};
    CHECK(s->write(batch).status == write_status::ok);
    s->close();
    CHECK(s->write(batch).status == write_status::fatal);
    sqlite_store check(tmp.db());
    CHECK(check.count("salt_returns") == 1);

    options full("sink 'jobs' (sqlite)", table,
                 config_map{{"path", tmp.db().string()}, {"synchronous", std::string("full")},
                            {"busy_timeout_ms", std::int64_t{0}}});
    auto s2 = make_sqlite_sink("jobs", full);
    CHECK(s2->write(batch).status == write_status::ok);
    s2->close();
}

TEST_CASE("sqlite_store creates its database owner-only", "[sqlite]") {
    temp_dir tmp;
    auto old = ::umask(022);
    {
        sqlite_store store(tmp.db());
        write_ok(store, {ret("20261127081552123456", "m1", "test.ping", 10, "true")});
        for (auto suffix : {"", "-wal"}) {
            auto p = fs::path(tmp.db().string() + suffix);
            REQUIRE(fs::exists(p));
            CHECK((fs::status(p).permissions() & fs::perms::all) ==
                  (fs::perms::owner_read | fs::perms::owner_write));
        }
    }
    ::umask(old);
}
