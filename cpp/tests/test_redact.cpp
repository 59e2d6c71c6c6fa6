#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "fastret/config.hpp"
#include "fastret/json_writer.hpp"
#include "fastret/redact.hpp"

using namespace fastret;
using Catch::Matchers::Contains;

namespace {

std::uint64_t count_of(const redactor& r, const std::string& name) {
    for (const auto& [n, c] : r.counts())
        if (n == name) return c;
    FAIL("no rule " << name);
    return 0;
}

field_action field(const redactor& r, std::vector<std::string_view> path, std::string_view key) {
    return r.match_field(path, key);
}

}  // namespace

TEST_CASE("default key rules mask secret-looking field names, case-insensitively", "[redact]") {
    redactor r(redactor::default_rules(), "");
    for (auto key : {"password", "Password", "PASSWD", "pass", "secret", "token", "api_key", "ApiKey",
                     "private_key", "key_data", "Authorization", "cookie", "db_password",
                     "X-Auth-Token", "client_secret", "ssh_private_key"})
        CHECK(field(r, {}, key) == field_action::mask);
    for (auto key : {"user", "host", "passage", "changes", "result", "comment", "id"})
        CHECK(field(r, {}, key) == field_action::keep);
    CHECK(count_of(r, "secret_keys") == 16);
}

TEST_CASE("default value rules find secrets inside strings and mask only the secret",
          "[redact]") {
    redactor r(redactor::default_rules(), "");
    std::string out;
    const std::string pem =
        "before\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK\n-----END RSA PRIVATE KEY-----\nafter";
    REQUIRE(r.redact_value(pem, out));
    CHECK(out == "before\n********\nafter");

    REQUIRE(r.redact_value("curl -H 'Authorization: Bearer abc.DEF-123_x=' url", out));
    CHECK(out == "curl -H 'Authorization: Bearer ********' url");
    REQUIRE(r.redact_value("Authorization: Basic dXNlcjpwYXNzd29yZA==", out));
    CHECK(out == "Authorization: Basic ********");
    REQUIRE(r.redact_value("git clone https://deploy:hunter2@git.example.org/r.git", out));
    CHECK(out == "git clone https://deploy:********@git.example.org/r.git");
    REQUIRE(r.redact_value("keys AKIAIOSFODNN7EXAMPLE and ASIAABCDEFGHIJKLMNOP", out));
    CHECK(out == "keys ******** and ********");

    out = "untouched";
    CHECK_FALSE(r.redact_value("nothing secret here: https://example.org/path", out));
    CHECK(out == "untouched");
    CHECK(count_of(r, "pem_private_key") == 1);
    CHECK(count_of(r, "aws_access_key_id") == 2);
}

TEST_CASE("path rules match from the payload root with * and **", "[redact]") {
    redactor r({{"diffs", redact_kind::path, {"return.*.changes.diff"}, redact_mode::drop},
                {"deep", redact_kind::path, {"**.motd"}, redact_mode::mask}},
               "");
    CHECK(field(r, {"return", "file_|-x_|-/etc/x_|-managed", "changes"}, "diff") == field_action::drop);
    CHECK(field(r, {"return", "a", "b", "changes"}, "diff") == field_action::keep);
    CHECK(field(r, {"return", "x", "changes"}, "mode") == field_action::keep);
    CHECK(field(r, {"a", "*", "b"}, "motd") == field_action::mask);
    CHECK(field(r, {}, "motd") == field_action::mask);
}

TEST_CASE("hash mode gives the same pseudonym for the same input and key only", "[redact]") {
    redactor a({{"ids", redact_kind::key, {"serial"}, redact_mode::hash},
                {"emails", redact_kind::value, {R"([a-z]+@example\.org)"}, redact_mode::hash}},
               "key-one");
    redactor b({{"emails", redact_kind::value, {R"([a-z]+@example\.org)"}, redact_mode::hash}},
               "key-one");
    redactor c({{"emails", redact_kind::value, {R"([a-z]+@example\.org)"}, redact_mode::hash}},
               "key-two");
    CHECK(field(a, {}, "serial") == field_action::hash);
    std::string x, y, z;
    REQUIRE(a.redact_value("mail bob@example.org now", x));
    REQUIRE(b.redact_value("to bob@example.org", y));
    REQUIRE(c.redact_value("to bob@example.org", z));
    const auto pseudo = a.pseudonym("bob@example.org");
    CHECK(pseudo.size() == 5 + 32);
    CHECK(x == "mail " + pseudo + " now");
    CHECK(y == "to " + pseudo);
    CHECK(z != y);
    CHECK(x.find("bob") == std::string::npos);
}

TEST_CASE("bad redaction rules are refused naming the rule", "[redact]") {
    REQUIRE_THROWS_WITH(redactor({{"broken", redact_kind::value, {"(unclosed"}, redact_mode::mask}}, ""),
                        Contains("redaction rule 'broken'") && Contains("bad pattern"));
    REQUIRE_THROWS_WITH(redactor({{"d", redact_kind::value, {"x"}, redact_mode::drop}}, ""),
                        Contains("rule 'd'") && Contains("not drop"));
    REQUIRE_THROWS_WITH(redactor({{"h", redact_kind::key, {"x"}, redact_mode::hash}}, ""),
                        Contains("rule 'h'") && Contains("needs a key"));
    REQUIRE_THROWS_WITH(redactor({{"e", redact_kind::key, {}, redact_mode::mask}}, ""),
                        Contains("rule 'e'") && Contains("no pattern"));
}

TEST_CASE("value patterns run in linear time on adversarial input", "[redact]") {
    // (a+)+$ backtracks exponentially in a backtracking engine; RE2 does not.
    redactor r({{"evil", redact_kind::value, {"(a+)+$"}, redact_mode::mask},
                {"evil2", redact_kind::value, {"(x|x)*y"}, redact_mode::mask}},
               "");
    std::string input(200000, 'a');
    input += '!';
    std::string xs(200000, 'x');
    std::string out;
    auto start = std::chrono::steady_clock::now();
    CHECK_FALSE(r.redact_value(input, out));
    CHECK_FALSE(r.redact_value(xs, out));
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
}

TEST_CASE("key globs are linear too and match the whole name", "[redact]") {
    redactor r({{"g", redact_kind::key, {"*a*a*a*a*a*a*b"}, redact_mode::mask}}, "");
    std::string key(5000, 'a');
    auto start = std::chrono::steady_clock::now();
    CHECK(field(r, {}, key) == field_action::keep);
    CHECK(field(r, {}, key + "b") == field_action::mask);
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
}

TEST_CASE("a value pattern may have any number of groups before its secret group", "[redact]") {
    // Found by fuzz_redact: the secret group's slot was looked up in a fixed array of 16.
    std::string pattern, text;
    for (int i = 0; i < 20; ++i) {
        pattern += "(a)";
        text += "a";
    }
    pattern += "=(?P<secret>[0-9]+)";
    redactor r({{"many_groups", redact_kind::value, {pattern}, redact_mode::mask}}, "");
    std::string out;
    REQUIRE(r.redact_value(text + "=4711 rest", out));
    CHECK(out == text + "=******** rest");
}

TEST_CASE("a value pattern that can match nothing never splits a UTF-8 character", "[redact]") {
    // Found by fuzz_redact: RE2 also finds an empty match between the bytes of one character,
    // and a mask written there turned valid UTF-8 into invalid UTF-8.
    for (const char* pattern : {"x*", "", R"(\B)"}) {
        redactor r({{"empty", redact_kind::value, {pattern}, redact_mode::mask}}, "");
        std::string out;
        REQUIRE(r.redact_value("\xC3\xA9\xE2\x82\xAC", out));  // "é€"
        CHECK(is_valid_utf8(out));
        CHECK(out.find("\xC3\xA9") != std::string::npos);
        CHECK(out.find("\xE2\x82\xAC") != std::string::npos);
    }
    redactor r({{"empty", redact_kind::value, {"x*"}, redact_mode::mask}}, "");
    std::string out;
    REQUIRE(r.redact_value("\xC3\xA9", out));
    CHECK(out == "********\xC3\xA9********");
}
