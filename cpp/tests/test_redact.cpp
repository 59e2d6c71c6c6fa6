#include <catch2/catch.hpp>

#include <cctype>
#include <chrono>
#include <tuple>
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

namespace {

// Strings built from pieces near the value rules' literals: secrets, their case variants,
// literals without the rest of a match, literals cut at the end of the string, non-ASCII text
// (case folding beyond ASCII), invalid UTF-8.
std::vector<std::string> generated_strings(std::size_t n) {
    static const char* pieces[] = {
        "Bearer abc.DEF-123_x=", "bearer\tTOKEN", "BEARER", "bEaReR  x", "Bear", "bearer",
        "Basic dXNlcjpwYXNzd29yZA==", "basic ", "BASIC short", "basi",
        "https://deploy:hunter2@git.example.org/r.git", "salt://files/nginx.conf", "://", "@",
        ":", "user@host", "ftp://a:b@", "x://:@",
        "AKIAIOSFODNN7EXAMPLE", "ASIAABCDEFGHIJKLMNOP", "akiaiosfodnn7example", "AKIA", "ASI",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
        "-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----", "PRIVATE KEY-----", "-----",
        "password=hunter2", "PASSWORD=x", "bob@example.org", "Bob@Example.ORG", "token_0123abcd",
        "SECRET", "\xC5\xBF" "ecret", "\xE2\x84\xAA" "ey=12", "key=34", "KEY=56", "stra\xC3\x9F" "e",
        "STRASSE", "\xC3\xA9\xC3\xA9", "\xC3\x89", "\xff\xfe", "********", " ", "\n", "\t", "=",
        "All specified packages are already installed", "2026-11-27T12:01:02.358023",
        "minion-0001.example.com", "state.sls", "ab", "cd", "x", "xx",
    };
    std::uint64_t seed = 0x9E3779B97F4A7C15ULL;
    auto next = [&seed](std::uint64_t bound) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        return seed % bound;
    };
    std::vector<std::string> out;
    for (const char* p : pieces) out.emplace_back(p);  // each alone: matches at both ends
    while (out.size() < n) {
        std::string s;
        for (auto k = next(4) + 1; k > 0; --k) {
            std::string piece = pieces[next(std::size(pieces))];
            switch (next(4)) {
                case 0:  // flip the case of some ASCII letters
                    for (auto& c : piece)
                        if (std::isalpha(static_cast<unsigned char>(c)) && next(2))
                            c = static_cast<char>(c ^ 0x20);
                    break;
                case 1:  // cut: a literal's start at the end of the string
                    piece.resize(next(piece.size() + 1));
                    break;
                default:
                    break;
            }
            s += piece;
            if (next(3) == 0) s += static_cast<char>('a' + next(26));
        }
        out.push_back(std::move(s));
    }
    return out;
}

// The same rules with and without the literal prefilter give the same output, the same
// verdicts and the same counts on every generated string.
void check_prefilter_exact(const std::vector<redact_rule>& rules, std::size_t prefiltered) {
    redactor fast(rules, "k3y");
    redactor full(rules, "k3y", false);
    CHECK(fast.prefiltered_value_rules() == prefiltered);
    CHECK(full.prefiltered_value_rules() == 0);
    std::size_t redacted = 0;
    for (const auto& s : generated_strings(20000)) {
        std::string a = "untouched", b = "untouched";
        const bool ra = fast.redact_value(s, a);
        const bool rb = full.redact_value(s, b);
        REQUIRE(ra == rb);
        REQUIRE(a == b);
        redacted += ra;
    }
    CHECK(fast.counts() == full.counts());
    CHECK(redacted > 1000);  // the strings do hit the rules
}

}  // namespace

TEST_CASE("the literal prefilter never changes what the default value rules redact", "[redact]") {
    auto rules = redactor::default_rules();
    check_prefilter_exact(rules, 5);  // every default value rule has literals
}

TEST_CASE("the literal prefilter never changes what user value rules redact", "[redact]") {
    std::vector<redact_rule> rules = redactor::default_rules();
    using K = redact_kind;
    const auto mask = redact_mode::mask;
    for (auto& [name, pattern, mode] : std::vector<std::tuple<std::string, std::string, redact_mode>>{
             {"kv_password", R"((?i)password=(?P<secret>\S+))", mask},
             {"emails", R"([a-z]+@example\.org)", redact_mode::hash},
             {"long_s", R"((?i)\x{17F}ecret)", mask},          // matches SECRET and ſecret
             {"kelvin", R"((?i)\x{212A}ey=(?P<secret>\d+))", mask},  // matches key=, KEY=
             {"german", R"((?i)straße)", mask},                 // a non-ASCII literal
             {"accents", "é+", mask},
             {"alternatives", "ab|cd", mask},                   // literals too short
             {"empty", "x*", mask},                             // matches everywhere
             {"tokens", "token_[0-9a-f]{8}", mask},
         })
        rules.push_back({name, K::value, {pattern}, mode});
    // Filtered: the 5 defaults, kv_password, emails, long_s, kelvin, tokens.
    check_prefilter_exact(rules, 10);
}

TEST_CASE("case folding beyond ASCII still redacts through the prefilter", "[redact]") {
    redactor r({{"long_s", redact_kind::value, {R"((?i)\x{17F}ecret=(?P<secret>\w+))"}, redact_mode::mask},
                {"kelvin", redact_kind::value, {R"((?i)\x{212A}ey=(?P<secret>\d+))"}, redact_mode::mask}},
               "");
    CHECK(r.prefiltered_value_rules() == 2);
    std::string out;
    REQUIRE(r.redact_value("SECRET=abc", out));
    CHECK(out == "SECRET=********");
    REQUIRE(r.redact_value("\xC5\xBF" "ecret=abc", out));
    CHECK(out == "\xC5\xBF" "ecret=********");
    REQUIRE(r.redact_value("key=42 KEY=43", out));
    CHECK(out == "key=******** KEY=********");
    REQUIRE(r.redact_value("\xE2\x84\xAA" "ey=44", out));
    CHECK(out == "\xE2\x84\xAA" "ey=********");
}

TEST_CASE("the first matching field rule wins whatever kind of pattern matches", "[redact]") {
    redactor r({{"glob_first", redact_kind::key, {"to?en"}, redact_mode::drop},
                {"path", redact_kind::path, {"a.*"}, redact_mode::hash},
                {"exact", redact_kind::key, {"token", "ID"}, redact_mode::mask},
                {"parts", redact_kind::key, {"*oke*", "*_id*"}, redact_mode::drop},
                {"exact_again", redact_kind::key, {"id", "other"}, redact_mode::hash}},
               "k");
    CHECK(field(r, {}, "TOKEN") == field_action::drop);       // glob before exact and part
    CHECK(field(r, {"a"}, "id") == field_action::hash);       // path before exact
    CHECK(field(r, {}, "Id") == field_action::mask);          // exact before exact_again
    CHECK(field(r, {}, "broker") == field_action::drop);      // part
    CHECK(field(r, {}, "user_ID") == field_action::drop);     // part, folded
    CHECK(field(r, {}, "other") == field_action::hash);
    CHECK(field(r, {}, "others") == field_action::keep);
    CHECK(field(r, {"b"}, "ok") == field_action::keep);
    CHECK(count_of(r, "glob_first") == 1);
    CHECK(count_of(r, "path") == 1);
    CHECK(count_of(r, "exact") == 1);
    CHECK(count_of(r, "parts") == 2);
    CHECK(count_of(r, "exact_again") == 1);
}

TEST_CASE("a key cache gives the answers and counts of the rules themselves", "[redact]") {
    auto rules = redactor::default_rules();
    rules.push_back({"ids", redact_kind::key, {"*_id", "serial?"}, redact_mode::hash});
    rules.push_back({"drop_debug", redact_kind::key, {"debug*"}, redact_mode::drop});
    redactor cached(rules, "k"), plain(rules, "k");
    redactor other({{"only_cmd", redact_kind::key, {"cmd"}, redact_mode::drop}}, "");
    std::vector<std::string> keys = {"cmd", "id", "jid", "fun", "return", "result", "changes",
                                     "password", "Password", "PASSWORD", "db_password", "token",
                                     "user_id", "USER_ID", "serial1", "serial", "debug", "Debug_x",
                                     "cookie", "set-cookie", "pass", "passage", "key_data",
                                     "a_very_long_key_name_beyond_the_cache_password",
                                     "a_very_long_key_name_beyond_the_cache_plain", ""};
    key_cache cache;
    for (int round = 0; round < 3; ++round) {
        for (const auto& k : keys) {
            INFO("key " << k << " round " << round);
            REQUIRE(cached.match_field({}, k, &cache) == plain.match_field({}, k));
        }
        // The same cache with another redactor forgets the first one's answers.
        CHECK(other.match_field({}, "cmd", &cache) == field_action::drop);
        CHECK(other.match_field({}, "password", &cache) == field_action::keep);
    }
    CHECK(cached.counts() == plain.counts());
    CHECK(count_of(cached, "secret_keys") == 3 * 10);
    CHECK(count_of(cached, "ids") == 3 * 3);
}
