#include <catch2/catch.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

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

namespace {

const std::vector<option_spec>& secret_table() {
    static const std::vector<option_spec> table = with_secret_sources({
        {"user", option_type::string, "salt", false, INT64_MIN, INT64_MAX, {}, "user"},
        {"pass", option_type::string, "", false, INT64_MIN, INT64_MAX, {}, "password", true},
    });
    return table;
}

std::string private_file(const std::string& name, const std::string& text, mode_t mode) {
    auto path = (std::filesystem::temp_directory_path() /
                 ("fastret-secret-" + std::to_string(::getpid()) + "-" + name))
                    .string();
    std::ofstream(path) << text;
    std::filesystem::permissions(path, static_cast<std::filesystem::perms>(mode));
    return path;
}

}  // namespace

TEST_CASE("a secret option can come from a private file or an environment variable", "[config]") {
    const auto& table = secret_table();
    REQUIRE(std::count_if(table.begin(), table.end(), [](const option_spec& o) {
                return o.key == "pass_file" || o.key == "pass_env";
            }) == 2);

    auto path = private_file("ok", "s3cret\n", 0600);
    options from_file("sink 't' (x)", table, {{"pass_file", path}});
    CHECK(from_file.get_string("pass") == "s3cret");  // the trailing newline is not part of it

    ::setenv("FASTRET_TEST_SECRET", "from-env", 1);
    options from_env("sink 't' (x)", table, {{"pass_env", std::string("FASTRET_TEST_SECRET")}});
    CHECK(from_env.get_string("pass") == "from-env");
    std::filesystem::remove(path);
}

TEST_CASE("a secret file others may read, a missing variable, or two sources are refused",
          "[config]") {
    const auto& table = secret_table();
    auto readable = private_file("readable", "s3cret", 0644);
    REQUIRE_THROWS_WITH(options("sink 't' (x)", table, {{"pass_file", readable}}),
                        Contains("option 'pass_file'") && Contains("mode 0644") &&
                            Contains("chmod 600") && !Contains("s3cret"));
    ::unsetenv("FASTRET_TEST_NO_SUCH_VAR");
    REQUIRE_THROWS_WITH(
        options("sink 't' (x)", table, {{"pass_env", std::string("FASTRET_TEST_NO_SUCH_VAR")}}),
        Contains("environment variable 'FASTRET_TEST_NO_SUCH_VAR' is not set"));
    auto ok = private_file("two", "s3cret", 0600);
    REQUIRE_THROWS_WITH(
        options("sink 't' (x)", table, {{"pass", std::string("inline")}, {"pass_file", ok}}),
        Contains("set only one of 'pass', 'pass_file' and 'pass_env'"));
    REQUIRE_THROWS_WITH(options("sink 't' (x)", table, {{"pass", std::int64_t{5}}}),
                        Contains("<secret>") && !Contains("5"));
    std::filesystem::remove(readable);
    std::filesystem::remove(ok);
}
