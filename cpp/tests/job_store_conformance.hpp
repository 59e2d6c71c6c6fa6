// The job_store contract (fastret/job_store.hpp) as one set of test cases, run against every
// backend: each backend's test file defines a store_env (a fresh, empty database) and expands
// FASTRET_JOB_STORE_CONFORMANCE with it. What the contract leaves to the backend (column
// types, how JSON is printed, errors, TLS, schema upgrades) stays in that backend's file.
//
// Also the record builders and helpers those files share.
#pragma once

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "fastret/job_store.hpp"
#include "fastret/record.hpp"
#include "fastret/sink.hpp"

namespace fastret::store_test {

using pair_list = std::vector<std::pair<std::string, std::string>>;

// A realistic record time (2027-01-15 08:00:00 UTC in Unix microseconds): every backend stores
// it, MariaDB's TIMESTAMP included.
constexpr std::int64_t T0 = 1'800'000'000'000'000;

inline record with_id(record r) {
    r.id = compute_record_id(r);
    return r;
}

inline record ret(const std::string& jid, const std::string& minion, const std::string& fun,
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

// A record of the job-cache kinds that carry only a jid and a payload.
inline record job_record(record_kind kind, const std::string& jid, const std::string& payload,
                         std::int64_t ts) {
    record r;
    r.kind = kind;
    r.jid = jid;
    r.ts_us = ts;
    r.payload = payload;
    return with_id(r);
}

inline record load(const std::string& jid, const std::string& payload, std::int64_t ts = T0 + 1000) {
    return job_record(record_kind::job_load, jid, payload, ts);
}

inline record minions(const std::string& jid, const std::string& payload,
                      std::int64_t ts = T0 + 1000) {
    return job_record(record_kind::job_minions, jid, payload, ts);
}

inline record endtime(const std::string& jid, const std::string& payload,
                      std::int64_t ts = T0 + 2000) {
    return job_record(record_kind::job_endtime, jid, payload, ts);
}

inline record event(const std::string& tag, const std::string& data, std::int64_t ts,
                    const std::string& master = "master1") {
    record r;
    r.kind = record_kind::event;
    r.tag = tag;
    r.minion = master;
    r.ts_us = ts;
    r.payload = data;
    return with_id(r);
}

inline std::string load_json(const std::string& fun, const std::string& tgt = "*") {
    return R"({"fun":")" + fun + R"(","arg":[],"tgt":")" + tgt +
           R"(","tgt_type":"glob","user":"root","jid":"x"})";
}

inline void write_ok(job_store& store, std::vector<record> batch) {
    auto res = store.write(batch);
    INFO(res.error);
    REQUIRE(res.status == write_status::ok);
    REQUIRE(res.dropped == 0);
}

// The store_error that opening a Store with `cfg` throws; the test fails, saying `opened`,
// when the store opens instead.
template <class Store, class Config>
store_error open_refused(const Config& cfg, const char* opened) {
    try {
        Store store(cfg);
    } catch (const store_error& e) {
        return e;
    }
    FAIL(opened);
    return store_error(write_status::ok, "");  // not reached: FAIL throws
}

// A fresh, empty database of one backend, removed with the object. Stores opened on it see
// each other's writes.
class store_env {
public:
    virtual ~store_env() = default;
    // A new store object on this database (the schema is created by the first one).
    virtual std::unique_ptr<job_store> open() = 0;
    // `text` (valid JSON) as this backend's reads return it: postgres's jsonb prints it its
    // own way, the others return what was written.
    virtual std::string json(const std::string& text) { return text; }
    // Whether two writers merging the same rows may be told to retry (a deadlock the server
    // broke): the runtime offers such a batch again.
    virtual bool writers_may_deadlock() const { return false; }
};

// ---- the cases -------------------------------------------------------------------------------

inline void opens_empty_and_reopens(store_env& env) {
    {
        auto store = env.open();
        CHECK(store->count("jids") == 0);
        CHECK(store->count("salt_returns") == 0);
        CHECK(store->count("salt_events") == 0);
        write_ok(*store, {ret("20261127081552123456", "m1", "test.ping", T0 + 10, "true")});
    }
    // Opening an existing database keeps its data.
    auto again = env.open();
    CHECK(again->count("salt_returns") == 1);
    CHECK(again->get_minion_ids() == std::vector<std::string>{"m1"});
}

inline void redelivery_is_idempotent(store_env& env) {
    auto store = env.open();
    const std::vector<record> batch = {
        ret("20261127081552123456", "m1", "test.ping", T0 + 10, "true"),
        event("salt/job/20261127081552123456/new", R"({"a":1})", T0 + 11),
    };
    write_ok(*store, batch);
    write_ok(*store, batch);
    // The same record twice inside one batch, too.
    write_ok(*store, {batch[0], batch[0], batch[1], batch[1]});
    CHECK(store->count("salt_returns") == 1);
    CHECK(store->count("salt_events") == 1);

    SECTION("an event with the same content at another time is another event") {
        write_ok(*store, {event("salt/job/20261127081552123456/new", R"({"a":1})", T0 + 99)});
        CHECK(store->count("salt_events") == 2);
    }
    SECTION("a record without an id gets its computed id") {
        record r = ret("20261127081552123458", "m3", "test.ping", T0 + 13, "true");
        r.id.clear();
        write_ok(*store, {r});
        write_ok(*store, {r});
        CHECK(store->count("salt_returns") == 2);
        record e = event("salt/no-id", "{}", T0 + 14);
        e.id.clear();
        write_ok(*store, {e});
        write_ok(*store, {e});
        CHECK(store->count("salt_events") == 2);
    }
}

inline void save_load_inserts_only_when_absent(store_env& env) {
    auto store = env.open();
    const std::string jid = "20261127081552123456";
    CHECK_FALSE(store->get_load(jid));

    const std::string first = load_json("state.apply", "web*");
    write_ok(*store, {load(jid, first, T0 + 100)});
    REQUIRE(store->get_load(jid) == env.json(first));
    // A later load for the same jid (e.g. from a return) never overwrites the publish load.
    write_ok(*store, {load(jid, load_json("test.ping", "db*"), T0 + 200)});
    CHECK(store->get_load(jid) == env.json(first));
    CHECK(store->count("jids") == 1);
    // Two loads for one jid in one batch: the first wins.
    const std::string twice = "20261127081552000002";
    write_ok(*store, {load(twice, load_json("a.b")), load(twice, load_json("c.d"))});
    CHECK(store->get_load(twice) == env.json(load_json("a.b")));

    SECTION("a row created by job_minions or job_endtime gets the load later") {
        const std::string j2 = "20261127081552999999";
        write_ok(*store,
                 {minions(j2, R"(["m1"])", T0 + 300), endtime(j2, R"("2026-11-27")", T0 + 301)});
        CHECK_FALSE(store->get_load(j2));
        CHECK(store->get_jobs(0, false).size() == 2);  // not a job yet
        write_ok(*store, {load(j2, load_json("cmd.run"), T0 + 302)});
        CHECK(store->get_load(j2) == env.json(load_json("cmd.run")));
        CHECK(store->get_minions_of(j2) == env.json(R"(["m1"])"));
        CHECK(store->get_endtime(j2) == "2026-11-27");
        CHECK(store->get_jobs(0, false).size() == 3);
    }
}

inline void merges_minion_lists(store_env& env) {
    auto store = env.open();
    const std::string jid = "20261127081552123456";
    CHECK_FALSE(store->get_minions_of(jid));

    write_ok(*store, {minions(jid, R"(["web2","web1","web2"])")});
    CHECK(store->get_minions_of(jid) == env.json(R"(["web1","web2"])"));
    // The row exists with a placeholder load: not a job yet.
    CHECK(store->count("jids") == 1);
    CHECK_FALSE(store->get_load(jid));
    CHECK(store->get_jobs(0, false).empty());

    write_ok(*store, {minions(jid, R"(["db1","web1"])", T0 + 1001)});
    CHECK(store->get_minions_of(jid) == env.json(R"(["db1","web1","web2"])"));
    write_ok(*store, {minions(jid, R"([])", T0 + 1002)});
    CHECK(store->get_minions_of(jid) == env.json(R"(["db1","web1","web2"])"));
    // Non-array payloads and non-string elements add nothing.
    write_ok(*store, {minions(jid, R"({"x":1})", T0 + 1003),
                      minions(jid, R"([1,null,"a"])", T0 + 1004)});
    CHECK(store->get_minions_of(jid) == env.json(R"(["a","db1","web1","web2"])"));
    // Exact comparison in byte (code point) order, whatever the database's collation: case
    // and trailing spaces make different minions.
    write_ok(*store, {minions(jid, R"(["Zed","_x","Web1","web1 ","é"])", T0 + 1005)});
    const std::string all = R"(["Web1","Zed","_x","a","db1","web1","web1 ","web2","é"])";
    CHECK(store->get_minions_of(jid) == env.json(all));

    // The load arriving afterwards keeps the list.
    write_ok(*store, {load(jid, load_json("test.ping"))});
    CHECK(store->get_minions_of(jid) == env.json(all));
    CHECK(store->get_jobs(0, false).size() == 1);

    // Load and list of a new jid in one batch, in either order.
    const std::string j3 = "20261127081552777777", j4 = "20261127081552777778";
    write_ok(*store, {load(j3, load_json("cmd.run")), minions(j3, R"(["b","a"])"),
                      minions(j4, R"(["c"])"), load(j4, load_json("cmd.run"))});
    CHECK(store->get_load(j3) == env.json(load_json("cmd.run")));
    CHECK(store->get_load(j4) == env.json(load_json("cmd.run")));
    CHECK(store->get_minions_of(j3) == env.json(R"(["a","b"])"));
    CHECK(store->get_minions_of(j4) == env.json(R"(["c"])"));

    // An empty list is a list.
    const std::string empty_jid = "20261127081552123457";
    write_ok(*store, {minions(empty_jid, "[]")});
    CHECK(store->get_minions_of(empty_jid) == "[]");
}

inline void stores_the_end_time(store_env& env) {
    auto store = env.open();
    const std::string jid = "20261127081552123456";
    CHECK_FALSE(store->get_endtime(jid));
    write_ok(*store, {endtime(jid, R"("2026, Nov 27 08:15:59.000000")")});
    CHECK(store->get_endtime(jid) == "2026, Nov 27 08:15:59.000000");
    CHECK(store->count("jids") == 1);

    write_ok(*store, {load(jid, load_json("test.ping"))});
    CHECK(store->get_endtime(jid) == "2026, Nov 27 08:15:59.000000");
    write_ok(*store, {endtime(jid, R"("2026, Nov 27 08:16:00.000000")", T0 + 3000)});
    CHECK(store->get_endtime(jid) == "2026, Nov 27 08:16:00.000000");
    CHECK(store->get_load(jid) == env.json(load_json("test.ping")));
    write_ok(*store, {endtime(jid, R"("it's \"quoted\"")", T0 + 3001)});
    CHECK(store->get_endtime(jid) == R"(it's "quoted")");
}

inline void get_returns_latest_per_minion(store_env& env) {
    auto store = env.open();
    const std::string jid = "20261127081552123456";
    write_ok(*store, {ret(jid, "m2", "test.ping", T0 + 20, R"({"v":"m2-new"})"),
                      ret(jid, "m1", "test.ping", T0 + 10, R"({"v":"m1-old"})"),
                      ret("20261127081552000000", "m3", "test.ping", T0 + 5, R"({"v":"other"})")});
    write_ok(*store, {ret(jid, "m1", "test.ping", T0 + 30, R"({"v":"m1-new"})"),
                      ret(jid, "m2", "test.ping", T0 + 15, R"({"v":"m2-old"})")});
    CHECK(store->get_returns(jid) == pair_list{{"m1", env.json(R"({"v":"m1-new"})")},
                                               {"m2", env.json(R"({"v":"m2-new"})")}});
    CHECK(store->get_returns("20261127081552999999").empty());
    CHECK(store->get_minion_ids() == std::vector<std::string>{"m1", "m2", "m3"});
}

inline void get_jobs_newest_first(store_env& env) {
    auto store = env.open();
    write_ok(*store, {
                         load("20261127081552000001", load_json("test.ping")),
                         load("20261127081552000003", load_json("saltutil.find_job")),
                         load("20261127081552000002", load_json("state.apply")),
                         load("20261127081552000002_1", load_json("cmd.run")),
                         minions("20261127081552000009", R"(["m1"])"),  // no load: not a job
                     });
    auto all = store->get_jobs(0, false);
    std::vector<std::string> jids;
    for (auto& [jid, l] : all) jids.push_back(jid);
    CHECK(jids == std::vector<std::string>{"20261127081552000003", "20261127081552000002_1",
                                           "20261127081552000002", "20261127081552000001"});
    CHECK(all[0].second == env.json(load_json("saltutil.find_job")));

    auto two = store->get_jobs(2, false);
    REQUIRE(two.size() == 2);
    CHECK(two[0].first == "20261127081552000003");
    CHECK(two[1].first == "20261127081552000002_1");
    auto skipped = store->get_jobs(2, true);
    REQUIRE(skipped.size() == 2);
    CHECK(skipped[0].first == "20261127081552000002_1");
    CHECK(skipped[1].first == "20261127081552000002");
    CHECK(store->get_jobs(0, true).size() == 3);
    CHECK(store->get_jobs(100, false).size() == 4);
}

inline void get_fun_each_minion_with_a_call(store_env& env) {
    auto store = env.open();
    write_ok(*store, {ret("20261127081552000001", "m1", "test.ping", T0 + 10, "true"),
                      ret("20261127081552000002", "m1", "test.ping", T0 + 20, "true"),
                      ret("20261127081552000003", "m2", "test.ping", T0 + 30, "true"),
                      ret("20261127081552000004", "m3", "state.apply", T0 + 40, "{}"),
                      ret("20261127081552000005", "M0", "test.ping", T0 + 50, "true"),
                      ret("20261127081552000006", "m4", "Test.Ping", T0 + 60, "{}")});
    // One row per minion, in byte order; fun compared exactly.
    CHECK(store->get_fun("test.ping") ==
          pair_list{{"M0", "test.ping"}, {"m1", "test.ping"}, {"m2", "test.ping"}});
    CHECK(store->get_fun("state.apply") == pair_list{{"m3", "state.apply"}});
    CHECK(store->get_fun("nope.nope").empty());
    CHECK(store->get_minion_ids() == std::vector<std::string>{"M0", "m1", "m2", "m3", "m4"});
}

// clean_old_jobs: what is written before a clean at T0 + 500, and what must be left after it.
// Backends with an archive reuse both.
inline const std::string k_old_jid = "20261127081552000001";
inline const std::string k_new_jid = "20261127081552000002";

inline std::vector<record> clean_old_jobs_batch() {
    return {
        load(k_old_jid, load_json("test.ping"), T0 + 100),
        minions(k_old_jid, R"(["m1","m2"])", T0 + 100),
        ret(k_old_jid, "m1", "test.ping", T0 + 100, "true"),
        // A return of the old job stored after the cutoff still goes with it.
        ret(k_old_jid, "m2", "test.ping", T0 + 600, "true"),
        load(k_new_jid, load_json("test.ping"), T0 + 900),
        ret(k_new_jid, "m1", "test.ping", T0 + 900, "true"),
        // Returns without a job: the old one goes, the new one stays.
        ret("20261127081552000003", "m1", "test.ping", T0 + 200, "true"),
        ret("20261127081552000004", "m1", "test.ping", T0 + 800, "true"),
        event("salt/old", "{}", T0 + 100),
        event("salt/new", "{}", T0 + 700),
    };
}
constexpr std::int64_t k_clean_cutoff = T0 + 500;
constexpr std::uint64_t k_cleaned_rows = 5;  // 1 job, 2 of its returns, 1 event, 1 stray return

inline void check_cleaned(job_store& store) {
    CHECK_FALSE(store.get_load(k_old_jid));
    CHECK_FALSE(store.get_minions_of(k_old_jid));
    CHECK(store.get_returns(k_old_jid).empty());
    CHECK(store.get_load(k_new_jid));
    CHECK(store.get_returns(k_new_jid).size() == 1);
    CHECK(store.get_returns("20261127081552000003").empty());
    CHECK(store.get_returns("20261127081552000004").size() == 1);
    CHECK(store.count("jids") == 1);
    CHECK(store.count("salt_returns") == 2);
    CHECK(store.count("salt_events") == 1);
    CHECK(store.get_events("*", 0) == pair_list{{"salt/new", "{}"}});
}

inline void clean_old_jobs_removes_jobs_with_returns(store_env& env) {
    auto store = env.open();
    write_ok(*store, clean_old_jobs_batch());
    CHECK(store->clean_old_jobs(k_clean_cutoff) == k_cleaned_rows);
    check_cleaned(*store);
    CHECK(store->clean_old_jobs(k_clean_cutoff) == 0);
}

inline void events_by_tag_glob(store_env& env) {
    auto store = env.open();
    write_ok(*store, {event("salt/job/1/new", R"({"n":1})", T0 + 10),
                      event("salt/job/1/ret/m1", R"({"n":2})", T0 + 30),
                      event("salt/auth", R"({"n":3})", T0 + 20),
                      event("salt/job/2/new", R"({"n":4})", T0 + 40, "master2"),
                      event("salt/100%_done\\x", R"({"n":5})", T0 + 5),
                      event("salt/100abdone\\x", R"({"n":6})", T0 + 6),
                      event("Salt/AUTH", R"({"n":7})", T0 + 7)});
    const auto j = [&](const char* text) { return env.json(text); };
    CHECK(store->get_events("salt/job/*", 0) == pair_list{{"salt/job/2/new", j(R"({"n":4})")},
                                                          {"salt/job/1/ret/m1", j(R"({"n":2})")},
                                                          {"salt/job/1/new", j(R"({"n":1})")}});
    CHECK(store->get_events("*", 2) == pair_list{{"salt/job/2/new", j(R"({"n":4})")},
                                                 {"salt/job/1/ret/m1", j(R"({"n":2})")}});
    CHECK(store->get_events("*", 0).size() == 7);
    CHECK(store->get_events("salt/auth", 10) == pair_list{{"salt/auth", j(R"({"n":3})")}});
    CHECK(store->get_events("salt/au?h", 10) == pair_list{{"salt/auth", j(R"({"n":3})")}});
    CHECK(store->get_events("salt/job/?/new", 10).size() == 2);
    CHECK(store->get_events("nothing*", 10).empty());
    CHECK(store->get_events("SALT/*", 10).empty());
    // LIKE's own wildcards and escape character are literal in a glob.
    CHECK(store->get_events("salt/100%_done\\x", 10) ==
          pair_list{{"salt/100%_done\\x", j(R"({"n":5})")}});
    CHECK(store->get_events("salt/100*done\\x", 10).size() == 2);
}

inline void stores_hostile_strings_verbatim(store_env& env) {
    auto store = env.open();
    const std::string jid = "1'); DROP TABLE jids; --";
    const std::string minion = "m\"'); DELETE FROM salt_returns; -- \\ \\' \\\\ $1 $$";
    const std::string fun = "x' OR '1'='1";
    const std::string tag = "salt/'; DROP TABLE salt_events; -- \\'";
    const std::string payload =
        R"({"q":"'; DROP TABLE salt_returns; --","u":"Grüße ✓ 😀",)"
        R"("b":"back\\slash \\\" \\u00e9 \\'","e":"\t\n","return":"\\"})";
    const std::string ld = R"({"fun":"')--","tgt":"\"; --","user":"Robert'); DROP TABLE jids;--"})";

    write_ok(*store, {ret(jid, minion, fun, T0 + 10, payload), load(jid, ld),
                      minions(jid, R"(["o'brien","; DROP TABLE x","back\\slash"])"),
                      endtime(jid, R"("it's \\ ")"), event(tag, payload, T0 + 10, minion)});
    CHECK(store->count("jids") == 1);
    CHECK(store->count("salt_returns") == 1);
    CHECK(store->count("salt_events") == 1);
    CHECK(store->get_returns(jid) == pair_list{{minion, env.json(payload)}});
    CHECK(store->get_load(jid) == env.json(ld));
    CHECK(store->get_minions_of(jid) == env.json(R"(["; DROP TABLE x","back\\slash","o'brien"])"));
    CHECK(store->get_endtime(jid) == "it's \\ ");
    CHECK(store->get_fun(fun) == pair_list{{minion, fun}});
    CHECK(store->get_minion_ids() == std::vector<std::string>{minion});
    CHECK(store->get_events(tag, 1) == pair_list{{tag, env.json(payload)}});

    // jids that are not Salt's timestamps are text like any other.
    for (const std::string odd : {"", "req", "not-a-jid", "20261127081552123456789012345", "∞"}) {
        INFO(odd);
        write_ok(*store, {load(odd, load_json("test.ping")),
                          ret(odd, "m9", "test.ping", T0 + 11, "1"), minions(odd, R"(["m9"])")});
        CHECK(store->get_load(odd) == env.json(load_json("test.ping")));
        CHECK(store->get_returns(odd) == pair_list{{"m9", "1"}});
        CHECK(store->get_minions_of(odd) == env.json(R"(["m9"])"));
    }
    CHECK(store->count("jids") == 6);

    // count() accepts the three table names only.
    for (const char* bad : {"jids; DROP TABLE jids", "sqlite_master", "pg_class", "mysql.user",
                            "JIDS", ""}) {
        INFO(bad);
        CHECK_THROWS_AS(store->count(bad), std::invalid_argument);
    }
    CHECK(store->count("jids") == 6);
}

inline void stores_large_and_4_byte_utf8(store_env& env) {
    auto store = env.open();
    std::string big = R"({"return":")";
    const std::string chunk = "0123456789abcdef\\\"'😀";
    while (big.size() < 5 * 1024 * 1024) big += chunk;
    big += R"(","id":"m1"})";
    const std::string emoji = "minion-😀-🧂";
    write_ok(*store, {ret("j-big", "m1", "test.ping", T0, big),
                      ret("j-big", emoji, "test.ping", T0 + 1, R"({"return":"🎉"})"),
                      event("salt/😀", R"({"🔑":"𝄞"})", T0)});
    auto rets = store->get_returns("j-big");
    REQUIRE(rets.size() == 2);
    CHECK(rets[0].first == "m1");
    CHECK(rets[0].second == env.json(big));
    CHECK(rets[1] == std::make_pair(emoji, env.json(R"({"return":"🎉"})")));
    // `?` is one character, however many bytes it takes.
    CHECK(store->get_events("salt/?", 0) == pair_list{{"salt/😀", env.json(R"({"🔑":"𝄞"})")}});
    write_ok(*store,
             {event("salt/😀/x", "{}", T0 + 1), event("salt/\xF4\x8F\xBF\xBF", "{}", T0 + 2)});
    CHECK(store->get_events("salt/*", 0).size() == 3);
    CHECK(store->get_events("salt/😀*", 0).size() == 2);
    CHECK(store->get_events("salt/\xF4\x8F\xBF\xBF", 0).size() == 1);
}

inline void leaves_out_a_record_of_unknown_kind(store_env& env) {
    auto store = env.open();
    auto bad = ret("20261127081552123457", "m2", "test.ping", T0 + 10, "true");
    bad.kind = static_cast<record_kind>(99);  // no table takes it
    auto res = store->write(std::vector<record>{
        ret("20261127081552123456", "m1", "test.ping", T0 + 10, "true"), bad,
        ret("20261127081552123458", "m3", "test.ping", T0 + 10, "true")});
    CHECK(res.status == write_status::ok);
    CHECK(res.dropped == 1);
    CHECK_THAT(res.error, Catch::Contains("unknown record kind 99"));
    CHECK(store->count("salt_returns") == 2);
    // The store stays usable.
    write_ok(*store, {event("salt/after", "{}", T0 + 11)});
    CHECK(store->count("salt_events") == 1);
}

inline void concurrent_writers_merge(store_env& env) {
    auto a = env.open();
    auto b = env.open();
    constexpr int batches = 20;
    constexpr int per_batch = 10;
    const int attempts = env.writers_may_deadlock() ? 20 : 1;
    std::atomic<int> failures{0};
    auto run = [&](job_store& s, const std::string& who) {
        for (int i = 0; i < batches; ++i) {
            std::vector<record> batch;
            for (int j = 0; j < per_batch; ++j) {
                const std::string jid = "2026112708155200" + std::to_string(i * per_batch + j);
                batch.push_back(ret(jid, who, "test.ping", T0 + i, "true"));
                batch.push_back(minions(jid, "[\"" + who + "\"]"));
            }
            write_result res;
            for (int attempt = 0; attempt < attempts; ++attempt) {
                res = s.write(batch);
                if (res.status != write_status::retry) break;
            }
            if (res.status != write_status::ok) ++failures;
        }
    };
    std::thread t1(run, std::ref(*a), "alpha");
    std::thread t2(run, std::ref(*b), "beta");
    // Reads while both write.
    for (int i = 0; i < 20; ++i) (void)a->count("salt_returns");
    t1.join();
    t2.join();
    CHECK(failures == 0);
    CHECK(a->count("salt_returns") == 2 * batches * per_batch);
    CHECK(b->count("jids") == batches * per_batch);
    CHECK(a->get_minions_of("2026112708155200"
                            "0") == env.json(R"(["alpha","beta"])"));
    CHECK(b->get_minions_of("2026112708155200"
                            "199") == env.json(R"(["alpha","beta"])"));
}

}  // namespace fastret::store_test

// The conformance cases as test cases named "<NAME> ...", tagged TAGS (the backend's server
// tag, so that ctest starts its fixture). MAKE_ENV is an expression giving a
// std::unique_ptr<store_env> on a fresh database; each case makes its own.
#define FASTRET_STORE_CASE(NAME, TAGS, MAKE_ENV, TITLE, BODY) \
    TEST_CASE(NAME " " TITLE, TAGS) {                         \
        auto env_ = MAKE_ENV;                                 \
        ::fastret::store_test::BODY(*env_);                   \
    }

#define FASTRET_JOB_STORE_CONFORMANCE(NAME, TAGS, MAKE_ENV)                                        \
    FASTRET_STORE_CASE(NAME, TAGS, MAKE_ENV, "opens a fresh database empty, and reopens it",      \
                       opens_empty_and_reopens)                                                    \
    FASTRET_STORE_CASE(NAME, TAGS, MAKE_ENV, "re-delivery of the same record is idempotent",      \
                       redelivery_is_idempotent)                                                   \
    FASTRET_STORE_CASE(NAME, TAGS, MAKE_ENV, "save_load inserts only when absent",                \
                       save_load_inserts_only_when_absent)                                         \
    FASTRET_STORE_CASE(NAME, TAGS, MAKE_ENV, "merges minion lists", merges_minion_lists)          \
    FASTRET_STORE_CASE(NAME, TAGS, MAKE_ENV, "stores the end time", stores_the_end_time)          \
    FASTRET_STORE_CASE(NAME, TAGS, MAKE_ENV, "get_returns gives the latest return per minion",    \
                       get_returns_latest_per_minion)                                              \
    FASTRET_STORE_CASE(NAME, TAGS, MAKE_ENV,                                                       \
                       "get_jobs is newest first with limit and skip_find_job",                    \
                       get_jobs_newest_first)                                                      \
    FASTRET_STORE_CASE(NAME, TAGS, MAKE_ENV, "get_fun gives each minion with a call of fun",      \
                       get_fun_each_minion_with_a_call)                                            \
    FASTRET_STORE_CASE(NAME, TAGS, MAKE_ENV, "clean_old_jobs removes jobs with their returns",    \
                       clean_old_jobs_removes_jobs_with_returns)                                   \
    FASTRET_STORE_CASE(NAME, TAGS, MAKE_ENV, "events by tag glob, newest first",                  \
                       events_by_tag_glob)                                                         \
    FASTRET_STORE_CASE(NAME, TAGS, MAKE_ENV, "stores hostile strings verbatim",                   \
                       stores_hostile_strings_verbatim)                                            \
    FASTRET_STORE_CASE(NAME, TAGS, MAKE_ENV, "stores a 5 MB return and 4-byte UTF-8",             \
                       stores_large_and_4_byte_utf8)                                               \
    FASTRET_STORE_CASE(NAME, TAGS, MAKE_ENV, "leaves out a record of unknown kind",               \
                       leaves_out_a_record_of_unknown_kind)                                        \
    FASTRET_STORE_CASE(NAME, TAGS, MAKE_ENV, "concurrent writers merge the same jobs",            \
                       concurrent_writers_merge)
