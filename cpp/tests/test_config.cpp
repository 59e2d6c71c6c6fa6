#include <catch2/catch.hpp>

#include "fastret/config.hpp"
#include "fastret/sink.hpp"

using namespace fastret;
using Catch::Matchers::Contains;

TEST_CASE("sink configuration rejects unknown keys naming sink key and allowed keys", "[config]") {
    config_map raw{{"path", std::string("/tmp/x.jsonl")}, {"pth", std::string("oops")}};
    REQUIRE_THROWS_WITH(make_sink("audit", "file", raw),
                        Contains("sink 'audit' (file)") && Contains("unknown option 'pth'") &&
                            Contains("allowed options:") && Contains("max_bytes"));
}

TEST_CASE("sink configuration rejects wrong types and out-of-range values", "[config]") {
    REQUIRE_THROWS_WITH(
        make_sink("s", "file", {{"path", std::string("/tmp/x")}, {"max_bytes", std::string("big")}}),
        Contains("option 'max_bytes' must be of type integer, got 'big'"));
    REQUIRE_THROWS_WITH(
        make_sink("s", "file", {{"path", std::string("/tmp/x")}, {"batch_max_records", std::int64_t{0}}}),
        Contains("'batch_max_records' is 0; allowed range: 1..1000000"));
    REQUIRE_THROWS_WITH(
        make_sink("s", "file", {{"path", std::string("/tmp/x")}, {"spool_fsync", std::string("sometimes")}}),
        Contains("allowed values: never, batch, interval"));
    REQUIRE_THROWS_WITH(make_sink("s", "file", {}), Contains("required option 'path' is missing"));
    REQUIRE_THROWS_WITH(make_sink("s", "sqlite", {{"path", std::string("")}}),
                        Contains("option 'path' must not be empty"));
    REQUIRE_THROWS_WITH(make_sink("s", "nosuch", {}),
                        Contains("unknown type 'nosuch'") && Contains("file") && Contains("sqlite"));
}

TEST_CASE("validated options fill in defaults from the table", "[config]") {
    options o;
    auto s = make_sink("s", "file", {{"path", std::string("/tmp/fastret-config-test.jsonl")}}, &o);
    CHECK(o.get_int("batch_max_records") == 2000);
    CHECK(o.get_bool("spool") == true);
    CHECK(o.get_string("spool_dir").empty());
    CHECK(o.get_string("overflow") == "drop_newest");
}

TEST_CASE("every registered sink type has a documented option table", "[config]") {
    for (const auto& t : sink_types()) {
        CHECK_FALSE(t.summary.empty());
        for (const auto& o : *t.option_table) CHECK_FALSE(o.doc.empty());
    }
    for (const auto& o : common_sink_options()) CHECK_FALSE(o.doc.empty());
}
