// Tests of the SQLite job cache / event store and the sqlite sink.
#include <sys/stat.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fastret/config.hpp"
#include "fastret/record.hpp"
#include "fastret/sink.hpp"
#include "fastret/sqlite_store.hpp"
#include "sinks/sqlite_sink.hpp"

using namespace fastret;
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

record with_id(record r) {
    r.id = compute_record_id(r);
    return r;
}

record ret(const std::string& jid, const std::string& minion, const std::string& fun,
           std::int64_t ts, const std::string& payload, std::int8_t success = 1,
           std::optional<std::int64_t> retcode = 0) {
    record r;
    r.kind = record_kind::job_return;
    r.jid = jid;
    r.minion = minion;
    r.fun = fun;
    r.ts_us = ts;
    r.payload = payload;
    r.success = success;
    r.retcode = retcode;
    return with_id(r);
}

record load(const std::string& jid, const std::string& payload, std::int64_t ts = 1000) {
    record r;
    r.kind = record_kind::job_load;
    r.jid = jid;
    r.ts_us = ts;
    r.payload = payload;
    return with_id(r);
}

record minions(const std::string& jid, const std::string& payload, std::int64_t ts = 1000) {
    record r;
    r.kind = record_kind::job_minions;
    r.jid = jid;
    r.ts_us = ts;
    r.payload = payload;
    return with_id(r);
}

record endtime(const std::string& jid, const std::string& payload, std::int64_t ts = 2000) {
    record r;
    r.kind = record_kind::job_endtime;
    r.jid = jid;
    r.ts_us = ts;
    r.payload = payload;
    return with_id(r);
}

record event(const std::string& tag, const std::string& data, std::int64_t ts,
             const std::string& master = "master1") {
    record r;
    r.kind = record_kind::event;
    r.tag = tag;
    r.minion = master;
    r.ts_us = ts;
    r.payload = data;
    return with_id(r);
}

std::string load_json(const std::string& fun, const std::string& tgt = "*") {
    return R"({"fun":")" + fun + R"(","arg":[],"tgt":")" + tgt +
           R"(","tgt_type":"glob","user":"root","jid":"x"})";
}

void write_ok(sqlite_store& store, std::vector<record> batch) {
    auto res = store.write(batch);
    INFO(res.error);
    REQUIRE(res.status == write_status::ok);
}

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

using pair_list = std::vector<std::pair<std::string, std::string>>;

}  // namespace

TEST_CASE("sqlite_store creates the schema in WAL mode", "[sqlite]") {
    temp_dir tmp;
    {
        sqlite_store store(tmp.db());
        CHECK(store.path() == tmp.db());
        CHECK(store.count("jids") == 0);
        CHECK(store.count("salt_returns") == 0);
        CHECK(store.count("salt_events") == 0);

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

TEST_CASE("sqlite_store re-delivery of the same record is idempotent", "[sqlite]") {
    temp_dir tmp;
    sqlite_store store(tmp.db());
    std::vector<record> batch = {
        ret("20261127081552123456", "m1", "test.ping", 10, "true"),
        event("salt/job/20261127081552123456/new", R"({"a":1})", 11),
    };
    write_ok(store, batch);
    write_ok(store, batch);
    // The same record twice inside one batch, too.
    write_ok(store, {batch[0], batch[0]});
    CHECK(store.count("salt_returns") == 1);
    CHECK(store.count("salt_events") == 1);

    SECTION("success and retcode are NULL when unknown") {
        auto r = ret("20261127081552123457", "m2", "cmd.run", 12, R"("x")", -1, std::nullopt);
        write_ok(store, {r});
        raw_db raw(tmp.db());
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
        write_ok(store, {r});
        raw_db raw(tmp.db());
        CHECK(raw.scalar("SELECT record_id FROM salt_returns WHERE id = 'm3'") == expected);
        CHECK(store.count("salt_returns") == 2);
    }
}

TEST_CASE("sqlite_store save_load inserts only when absent", "[sqlite]") {
    temp_dir tmp;
    sqlite_store store(tmp.db());
    const std::string jid = "20261127081552123456";
    CHECK_FALSE(store.get_load(jid));

    const std::string first = load_json("state.apply", "web*");
    write_ok(store, {load(jid, first, 100)});
    REQUIRE(store.get_load(jid) == first);

    // A later load for the same jid (e.g. from a return) never overwrites the publish load.
    write_ok(store, {load(jid, load_json("test.ping", "db*"), 200)});
    CHECK(store.get_load(jid) == first);
    CHECK(store.count("jids") == 1);

    raw_db raw(tmp.db());
    CHECK(raw.scalar("SELECT fun FROM jids") == "state.apply");
    CHECK(raw.scalar("SELECT tgt FROM jids") == "web*");
    CHECK(raw.scalar("SELECT tgt_type FROM jids") == "glob");
    CHECK(raw.scalar("SELECT user FROM jids") == "root");
    CHECK(raw.scalar("SELECT alter_time FROM jids") == "100");

    SECTION("a row created by job_minions or job_endtime gets the load later") {
        const std::string j2 = "20261127081552999999";
        write_ok(store, {minions(j2, R"(["m1"])", 300), endtime(j2, R"("2026-11-27")", 301)});
        CHECK_FALSE(store.get_load(j2));
        write_ok(store, {load(j2, load_json("cmd.run"), 302)});
        CHECK(store.get_load(j2) == load_json("cmd.run"));
        CHECK(store.get_minions_of(j2) == R"(["m1"])");
        CHECK(store.get_endtime(j2) == "2026-11-27");
        CHECK(raw.scalar("SELECT fun FROM jids WHERE jid = '" + j2 + "'") == "cmd.run");
    }
    SECTION("a load that is not JSON is stored verbatim, summary columns NULL") {
        const std::string j3 = "20261127081552888888";
        write_ok(store, {load(j3, "not json {")});
        CHECK(store.get_load(j3) == "not json {");
        CHECK(raw.scalar("SELECT fun FROM jids WHERE jid = '" + j3 + "'") == "<null>");
    }
}

TEST_CASE("sqlite_store merges minion lists", "[sqlite]") {
    temp_dir tmp;
    sqlite_store store(tmp.db());
    const std::string jid = "20261127081552123456";
    CHECK_FALSE(store.get_minions_of(jid));

    write_ok(store, {minions(jid, R"(["web2","web1","web2"])")});
    CHECK(store.get_minions_of(jid) == R"(["web1","web2"])");
    // The row exists with a placeholder load: not a job yet.
    CHECK(store.count("jids") == 1);
    CHECK_FALSE(store.get_load(jid));
    CHECK(store.get_jobs().empty());

    write_ok(store, {minions(jid, R"(["db1","web1"])", 1001)});
    CHECK(store.get_minions_of(jid) == R"(["db1","web1","web2"])");
    write_ok(store, {minions(jid, R"([])", 1002)});
    CHECK(store.get_minions_of(jid) == R"(["db1","web1","web2"])");
    // Non-array payloads and non-string elements add nothing.
    write_ok(store, {minions(jid, R"({"x":1})", 1003), minions(jid, R"([1,null,"a"])", 1004)});
    CHECK(store.get_minions_of(jid) == R"(["a","db1","web1","web2"])");

    // The load arriving afterwards keeps the list.
    write_ok(store, {load(jid, load_json("test.ping"))});
    CHECK(store.get_minions_of(jid) == R"(["a","db1","web1","web2"])");
    CHECK(store.get_jobs().size() == 1);
}

TEST_CASE("sqlite_store stores the end time", "[sqlite]") {
    temp_dir tmp;
    sqlite_store store(tmp.db());
    const std::string jid = "20261127081552123456";
    CHECK_FALSE(store.get_endtime(jid));
    write_ok(store, {endtime(jid, R"("2026, Nov 27 08:15:59.000000")")});
    CHECK(store.get_endtime(jid) == "2026, Nov 27 08:15:59.000000");
    CHECK(store.count("jids") == 1);

    write_ok(store, {load(jid, load_json("test.ping"))});
    CHECK(store.get_endtime(jid) == "2026, Nov 27 08:15:59.000000");
    write_ok(store, {endtime(jid, R"("2026, Nov 27 08:16:00.000000")", 3000)});
    CHECK(store.get_endtime(jid) == "2026, Nov 27 08:16:00.000000");
    CHECK(store.get_load(jid) == load_json("test.ping"));
}

TEST_CASE("sqlite_store get_returns gives the latest return per minion", "[sqlite]") {
    temp_dir tmp;
    sqlite_store store(tmp.db());
    const std::string jid = "20261127081552123456";
    write_ok(store, {ret(jid, "m2", "test.ping", 20, R"({"v":"m2-new"})"),
                     ret(jid, "m1", "test.ping", 10, R"({"v":"m1-old"})"),
                     ret("20261127081552000000", "m3", "test.ping", 5, R"({"v":"other"})")});
    write_ok(store, {ret(jid, "m1", "test.ping", 30, R"({"v":"m1-new"})"),
                     ret(jid, "m2", "test.ping", 15, R"({"v":"m2-old"})")});
    CHECK(store.get_returns(jid) ==
          pair_list{{"m1", R"({"v":"m1-new"})"}, {"m2", R"({"v":"m2-new"})"}});
    CHECK(store.get_returns("20261127081552999999").empty());
    CHECK(store.get_minion_ids() == std::vector<std::string>{"m1", "m2", "m3"});
}

TEST_CASE("sqlite_store get_jobs is newest first with limit and skip_find_job", "[sqlite]") {
    temp_dir tmp;
    sqlite_store store(tmp.db());
    write_ok(store, {
                        load("20261127081552000001", load_json("test.ping")),
                        load("20261127081552000003", load_json("saltutil.find_job")),
                        load("20261127081552000002", load_json("state.apply")),
                        load("20261127081552000002_1", load_json("cmd.run")),
                        minions("20261127081552000009", R"(["m1"])"),  // no load: not a job
                    });
    auto all = store.get_jobs();
    std::vector<std::string> jids;
    for (auto& [jid, l] : all) jids.push_back(jid);
    CHECK(jids == std::vector<std::string>{"20261127081552000003", "20261127081552000002_1",
                                           "20261127081552000002", "20261127081552000001"});
    CHECK(all[0].second == load_json("saltutil.find_job"));

    auto two = store.get_jobs(2);
    REQUIRE(two.size() == 2);
    CHECK(two[0].first == "20261127081552000003");
    CHECK(two[1].first == "20261127081552000002_1");

    auto skipped = store.get_jobs(2, true);
    REQUIRE(skipped.size() == 2);
    CHECK(skipped[0].first == "20261127081552000002_1");
    CHECK(skipped[1].first == "20261127081552000002");
    CHECK(store.get_jobs(0, true).size() == 3);
    CHECK(store.get_jobs(100).size() == 4);
}

TEST_CASE("sqlite_store get_fun gives each minion's latest call of fun", "[sqlite]") {
    temp_dir tmp;
    sqlite_store store(tmp.db());
    write_ok(store, {ret("20261127081552000001", "m1", "test.ping", 10, "true"),
                     ret("20261127081552000002", "m1", "test.ping", 20, "true"),
                     ret("20261127081552000003", "m2", "test.ping", 30, "true"),
                     ret("20261127081552000004", "m3", "state.apply", 40, "{}")});
    CHECK(store.get_fun("test.ping") == pair_list{{"m1", "test.ping"}, {"m2", "test.ping"}});
    CHECK(store.get_fun("state.apply") == pair_list{{"m3", "state.apply"}});
    CHECK(store.get_fun("nope.nope").empty());
}

TEST_CASE("sqlite_store clean_old_jobs removes jobs with their returns", "[sqlite]") {
    temp_dir tmp;
    sqlite_store store(tmp.db());
    const std::string old_jid = "20261127081552000001";
    const std::string new_jid = "20261127081552000002";
    write_ok(store, {
                        load(old_jid, load_json("test.ping"), 100),
                        minions(old_jid, R"(["m1","m2"])", 100),
                        // A return of the old job stored after the cutoff still goes with it.
                        ret(old_jid, "m1", "test.ping", 100, "true"),
                        ret(old_jid, "m2", "test.ping", 600, "true"),
                        load(new_jid, load_json("test.ping"), 900),
                        ret(new_jid, "m1", "test.ping", 900, "true"),
                        // Returns without a job: the old one goes, the new one stays.
                        ret("20261127081552000003", "m1", "test.ping", 200, "true"),
                        ret("20261127081552000004", "m1", "test.ping", 800, "true"),
                        event("salt/old", "{}", 100),
                        event("salt/new", "{}", 700),
                    });
    CHECK(store.clean_old_jobs(500) == 5);  // 1 job, 2 of its returns, 1 event, 1 stray return
    CHECK_FALSE(store.get_load(old_jid));
    CHECK_FALSE(store.get_minions_of(old_jid));
    CHECK(store.get_returns(old_jid).empty());
    CHECK(store.get_load(new_jid));
    CHECK(store.get_returns(new_jid).size() == 1);
    CHECK(store.count("jids") == 1);
    CHECK(store.count("salt_returns") == 2);
    CHECK(store.count("salt_events") == 1);
    CHECK(store.get_events("*", 0) == pair_list{{"salt/new", "{}"}});

    raw_db raw(tmp.db());
    // No return of a job that was cleaned, except returns newer than the cutoff.
    CHECK(raw.scalar("SELECT count(*) FROM salt_returns r WHERE alter_time < 500 AND NOT EXISTS"
                     " (SELECT 1 FROM jids j WHERE j.jid = r.jid)") == "0");
    CHECK(store.clean_old_jobs(500) == 0);
}

TEST_CASE("sqlite_store events by tag glob, newest first", "[sqlite]") {
    temp_dir tmp;
    sqlite_store store(tmp.db());
    write_ok(store, {event("salt/job/1/new", R"({"n":1})", 10),
                     event("salt/job/1/ret/m1", R"({"n":2})", 30),
                     event("salt/auth", R"({"n":3})", 20),
                     event("salt/job/2/new", R"({"n":4})", 40, "master2")});
    CHECK(store.get_events("salt/job/*", 0) == pair_list{{"salt/job/2/new", R"({"n":4})"},
                                                         {"salt/job/1/ret/m1", R"({"n":2})"},
                                                         {"salt/job/1/new", R"({"n":1})"}});
    CHECK(store.get_events("*", 2) ==
          pair_list{{"salt/job/2/new", R"({"n":4})"}, {"salt/job/1/ret/m1", R"({"n":2})"}});
    CHECK(store.get_events("salt/auth", 10) == pair_list{{"salt/auth", R"({"n":3})"}});
    CHECK(store.get_events("nothing*", 10).empty());
    raw_db raw(tmp.db());
    CHECK(raw.scalar("SELECT master_id FROM salt_events WHERE tag = 'salt/job/2/new'") ==
          "master2");
    CHECK(raw.scalar("SELECT alter_time FROM salt_events WHERE tag = 'salt/auth'") == "20");
}

TEST_CASE("sqlite_store stores hostile strings verbatim", "[sqlite]") {
    temp_dir tmp;
    sqlite_store store(tmp.db());
    const std::string jid = "1'); DROP TABLE jids; --";
    const std::string minion = "m\"'); DELETE FROM salt_returns; --";
    const std::string fun = "x' OR '1'='1";
    const std::string tag = "salt/'; DROP TABLE salt_events; --";
    const std::string payload = R"({"q":"'; DROP TABLE salt_returns; --","u":"Grüße ✓","z":"\u0000"})";
    const std::string ld = R"({"fun":"')--","tgt":"\"; --","user":"Robert'); DROP TABLE jids;--"})";

    write_ok(store, {ret(jid, minion, fun, 10, payload), load(jid, ld),
                     minions(jid, R"(["o'brien","; DROP TABLE x"])"), endtime(jid, R"("it's")"),
                     event(tag, payload, 10, minion)});
    CHECK(store.count("jids") == 1);
    CHECK(store.count("salt_returns") == 1);
    CHECK(store.count("salt_events") == 1);
    CHECK(store.get_returns(jid) == pair_list{{minion, payload}});
    CHECK(store.get_load(jid) == ld);
    CHECK(store.get_minions_of(jid) == R"(["; DROP TABLE x","o'brien"])");
    CHECK(store.get_endtime(jid) == "it's");
    CHECK(store.get_fun(fun) == pair_list{{minion, fun}});
    CHECK(store.get_minion_ids() == std::vector<std::string>{minion});
    CHECK(store.get_events(tag, 1) == pair_list{{tag, payload}});
    raw_db raw(tmp.db());
    CHECK(raw.scalar("SELECT user FROM jids") == "Robert'); DROP TABLE jids;--");

    // count() accepts the three table names only.
    CHECK_THROWS_AS(store.count("jids; DROP TABLE jids"), std::invalid_argument);
    CHECK_THROWS_AS(store.count("sqlite_master"), std::invalid_argument);
    CHECK_THROWS_AS(store.count(""), std::invalid_argument);
    CHECK(store.count("jids") == 1);
}

TEST_CASE("sqlite_store concurrent writers on one file all succeed", "[sqlite]") {
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

    SECTION("two store objects in two threads") {
        sqlite_store a(tmp.db());
        sqlite_store b(tmp.db());
        std::atomic<int> failures{0};
        auto run = [&](sqlite_store& s, const std::string& who) {
            for (int i = 0; i < batches; ++i) {
                auto batch = make_batch(who, i);
                if (s.write(batch).status != write_status::ok) ++failures;
            }
        };
        std::thread t1(run, std::ref(a), "alpha");
        std::thread t2(run, std::ref(b), "beta");
        // Reads while both write (WAL: readers do not block writers).
        for (int i = 0; i < 20; ++i) (void)a.count("salt_returns");
        t1.join();
        t2.join();
        CHECK(failures == 0);
        CHECK(a.count("salt_returns") == 2 * batches * per_batch);
        CHECK(b.count("jids") == batches * per_batch);
        CHECK(a.get_minions_of("2026112708155200" "0") == R"(["alpha","beta"])");
    }

    SECTION("a forked child and the parent") {
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

TEST_CASE("sqlite_store leaves out only the record that cannot be stored", "[sqlite]") {
    temp_dir tmp;
    sqlite_store store(tmp.db());
    auto bad = ret("20261127081552123457", "m2", "test.ping", 10, "true");
    bad.kind = static_cast<record_kind>(99);  // no table takes it
    auto res = store.write(std::vector<record>{
        ret("20261127081552123456", "m1", "test.ping", 10, "true"), bad,
        ret("20261127081552123458", "m3", "test.ping", 10, "true")});
    CHECK(res.status == write_status::ok);
    CHECK(res.dropped == 1);
    CHECK_THAT(res.error, Catch::Contains("unknown record kind 99"));
    CHECK(store.count("salt_returns") == 2);
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
