// Network sinks: encoders byte for byte, option checks, and the syslog sink against the
// throwaway rsyslog the ctest fixture starts ([rsyslog]).
#include <catch2/catch.hpp>
#include <dlfcn.h>
#include <netdb.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "encoders/siem.hpp"
#include "encoders/syslog.hpp"
#include "fastret/sink.hpp"
#include "net/http_date.hpp"
#include "net/tls.hpp"

using namespace fastret;

// A slow DNS server, injected: this executable's getaddrinfo interposes on libc's for the
// whole test binary (libfastret's resolver calls it through the dynamic linker). Names ending
// in ".stall.test" take stall_ms and then do not exist; every other name goes to libc.
namespace {
std::atomic<int> stall_calls{0};
std::atomic<int> stall_ms{1500};
}  // namespace

extern "C" int getaddrinfo(const char* node, const char* service, const struct addrinfo* hints,
                           struct addrinfo** res) {
    using real_t = int (*)(const char*, const char*, const struct addrinfo*, struct addrinfo**);
    static auto real = reinterpret_cast<real_t>(dlsym(RTLD_NEXT, "getaddrinfo"));
    const std::string_view name = node ? node : "";
    if (name.ends_with(".stall.test")) {
        ++stall_calls;
        std::this_thread::sleep_for(std::chrono::milliseconds(stall_ms.load()));
        return EAI_NONAME;
    }
    return real(node, service, hints, res);
}

namespace {

record sample() {
    record r;
    r.kind = record_kind::job_return;
    r.ts_us = 1795767352123456;  // 2026-11-27T08:15:52.123456Z
    r.jid = "20261127041552123456";
    r.minion = "web1";
    r.fun = "state.apply";
    r.success = 1;
    r.retcode = 0;
    r.payload = R"({"return":{"a":{"duration":1.5},"b":{"duration":2}},"user":"root"})";
    r.id = "0123456789abcdef0123456789abcdef";
    return r;
}

std::vector<std::string> encode(const record& r, const syslog_format& f) {
    std::vector<std::string> out;
    encode_syslog(r, f, [&](std::string_view m) { out.emplace_back(m); });
    return out;
}

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("syslog RFC 5424 message byte for byte", "[net][syslog]") {
    syslog_format f;
    f.facility = 19;
    f.procid = "42";
    auto m = encode(sample(), f);
    REQUIRE(m.size() == 1);
    CHECK(m[0] ==
          "<158>1 2026-11-27T08:15:52.123456Z web1 salt 42 job_return [salt@32473 "
          "id=\"0123456789abcdef0123456789abcdef\" kind=\"job_return\" jid=\"20261127041552123456\" "
          "minion=\"web1\" fun=\"state.apply\" success=\"true\" retcode=\"0\"] " +
          sample().payload);
    auto r = sample();
    r.success = 0;
    r.minion = "a b\xC3\xA9";
    r.tag = "x\"y\\z]\r\n\x01\xff";
    m = encode(r, f);
    CHECK(m[0].starts_with("<155>1 2026-11-27T08:15:52.123456Z a_b__ salt 42 job_return "));
    CHECK(m[0].find("tag=\"x\\\"y\\\\z\\]\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"") !=
          std::string::npos);
    CHECK(m[0].find("minion=\"a b\xC3\xA9\"") != std::string::npos);
}

TEST_CASE("syslog framed encoding writes what framing each message gives", "[net][syslog]") {
    auto plain = sample();
    auto odd = sample();
    odd.tag = "x\"y\\z]\r\n\x01\xff" + std::string(200, 't');  // escaped, replaced, cut at 128
    odd.payload = "{\"a\":\r\n1}";
    auto empty = sample();
    empty.payload.clear();
    auto big = sample();
    big.payload = "\"" + std::string(5000, 'x') + "\"";  // split into parts
    syslog_format rfc5424, rfc3164, truncate;
    rfc5424.max_bytes = rfc3164.max_bytes = truncate.max_bytes = 2048;
    rfc3164.rfc3164 = true;
    truncate.split = false;
    for (const auto* f : {&rfc5424, &rfc3164, &truncate}) {
        for (const auto& r : {plain, odd, empty, big}) {
            std::string octets = "before ", lines = "before ";
            for (const auto& m : encode(r, *f)) {
                frame_octet_counting(octets, m);
                frame_newline(lines, m);
            }
            std::string direct_octets = "before ", direct_lines = "before ";
            append_syslog_framed(direct_octets, r, *f, syslog_framing::octet_counting);
            append_syslog_framed(direct_lines, r, *f, syslog_framing::newline);
            CHECK(direct_octets == octets);
            CHECK(direct_lines == lines);
        }
    }
    std::string out;
    append_syslog_framed(out, plain, rfc5424, syslog_framing::octet_counting);
    CHECK(out.starts_with(std::to_string(encode(plain, rfc5424)[0].size()) + " <14>1 "));
}

TEST_CASE("syslog RFC 3164, framing, split and truncate", "[net][syslog]") {
    syslog_format f;
    f.rfc3164 = true;
    f.app_name = "salt-minion";
    f.procid = "7";
    auto m = encode(sample(), f);
    REQUIRE(m.size() == 1);
    CHECK(m[0].starts_with("<14>Nov 27 08:15:52 web1 salt-minion[7]: {\"id\":\"0123"));
    std::string out;
    frame_octet_counting(out, "abc");
    frame_newline(out, "de");
    CHECK(out == "3 abcde\n");

    auto r = sample();
    r.payload = "\"" + std::string(10000, 'x') + "\"";
    syslog_format g;
    g.max_bytes = 2048;
    m = encode(r, g);
    REQUIRE(m.size() == 6);
    std::string joined;
    for (std::size_t i = 0; i < m.size(); ++i) {
        CHECK(m[i].size() <= 2048);
        auto mark = " part=\"" + std::to_string(i + 1) + "/6\"] ";
        auto pos = m[i].find(mark);
        REQUIRE(pos != std::string::npos);
        joined += m[i].substr(pos + mark.size());
    }
    CHECK(joined == r.payload);
    g.split = false;
    m = encode(r, g);
    REQUIRE(m.size() == 1);
    CHECK(m[0].size() <= 2048);
    CHECK(m[0].find(" truncated=\"10002\"] \"xxx") != std::string::npos);
}

TEST_CASE("ECS, GELF and CEF byte for byte", "[net][siem]") {
    std::string out;
    encode_ecs(sample(), out);
    CHECK(out ==
          "{\"@timestamp\":\"2026-11-27T08:15:52.123456Z\",\"ecs\":{\"version\":\"8.11.0\"},"
          "\"event\":{\"kind\":\"event\",\"category\":[\"configuration\"],\"type\":[\"change\"],"
          "\"action\":\"state.apply\",\"outcome\":\"success\",\"id\":\"0123456789abcdef0123456789abcdef\","
          "\"dataset\":\"salt.job_return\",\"module\":\"salt\",\"duration\":3500000},"
          "\"host\":{\"name\":\"web1\"},\"user\":{\"name\":\"root\"},"
          "\"message\":\"salt job_return state.apply on web1 jid 20261127041552123456: success\","
          "\"salt\":{\"kind\":\"job_return\",\"jid\":\"20261127041552123456\",\"fun\":\"state.apply\","
          "\"minion\":\"web1\",\"success\":true,\"retcode\":0,\"data\":" + sample().payload + "}}");
    out.clear();
    encode_gelf(sample(), out);
    CHECK(out.starts_with("{\"version\":\"1.1\",\"host\":\"web1\",\"short_message\":\"salt job_return"));
    CHECK(out.find("\"timestamp\":1795767352.123456,\"level\":6,\"_record_id\":\"0123") !=
          std::string::npos);
    out.clear();
    auto r = sample();
    r.payload = "\"a=b\\\\c\"";
    r.fun = "cmd|run";
    encode_cef(r, out);
    CHECK(out == "CEF:0|SaltStack|fastret|1.0|job_return|cmd\\|run|3|rt=1795767352123 dhost=web1 "
                 "act=cmd|run outcome=success externalId=0123456789abcdef0123456789abcdef "
                 "cs1Label=jid cs1=20261127041552123456 cn1Label=retcode cn1=0 "
                 "msg=\"a\\=b\\\\\\\\c\"");
}

TEST_CASE("TLS pins and option checks", "[net][tls]") {
    std::array<unsigned char, 32> d;
    CHECK(net::parse_pin("sha256//" + std::string(43, 'A') + "=", d));
    CHECK(net::parse_pin(std::string(64, 'a'), d));
    CHECK_FALSE(net::parse_pin("sha256//short", d));
    CHECK(net::pin_text(d).starts_with("sha256//qqqq"));
    CHECK_THROWS_WITH(make_sink("s", "syslog", {{"facility", std::string("nope")}}),
                      Catch::Contains("facility 'nope' is unknown"));
    CHECK_THROWS_WITH(make_sink("s", "syslog", {{"transport", std::string("tls")},
                                                {"tls_ca_file", std::string("/nonexistent")}}),
                      Catch::Contains("cannot load CA certificates"));
    CHECK_THROWS_WITH(make_sink("s", "logstash", {{"protocol", std::string("http")},
                                                  {"format", std::string("gelf")}}),
                      Catch::Contains("tcp or tls only"));
}

TEST_CASE("syslog sink delivers to rsyslog over TLS and TCP", "[rsyslog]") {
    const char* info_path = std::getenv("FASTRET_TEST_RSYSLOG");
    REQUIRE(info_path);
    std::string info = slurp(info_path);
    auto field = [&](const std::string& key) {
        auto p = info.find("\"" + key + "\": ");
        REQUIRE(p != std::string::npos);
        p += key.size() + 4;
        if (info[p] == '"') return info.substr(p + 1, info.find('"', p + 1) - p - 1);
        return info.substr(p, info.find_first_of(",\n}", p) - p);
    };
    auto dir = field("dir");
    for (std::string t : {"tcp", "tls"}) {
        config_map cfg{{"transport", t}, {"host", std::string("localhost")},
                       {"port", std::int64_t(std::stoll(field(t + "_port")))}};
        if (t == "tls") cfg["tls_ca_file"] = field("ca");
        auto s = make_sink("c", "syslog", cfg);
        auto r = sample();
        r.jid = "ctest-" + t;
        std::vector<record> batch{r};
        REQUIRE(s->write(batch).status == write_status::ok);
        s->close();
        std::string got;
        for (int i = 0; i < 100 && got.find(r.jid) == std::string::npos; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            got = slurp(dir + "/" + t + ".jsonl");
        }
        CHECK(got.find("\"msgid\":\"job_return\"") != std::string::npos);
        CHECK(got.find("jid=\\\"" + r.jid + "\\\"") != std::string::npos);
    }
    // A wrong CA: refused, retry, nothing delivered.
    auto s = make_sink("c", "syslog", {{"transport", std::string("tls")},
                                       {"host", std::string("localhost")},
                                       {"port", std::int64_t(std::stoll(field("tls_port")))},
                                       {"tls_ca_file", field("other_ca")}});
    std::vector<record> batch{sample()};
    auto res = s->write(batch);
    CHECK(res.status == write_status::retry);
    CHECK_THAT(res.error, Catch::Contains("server certificate not trusted"));
}

TEST_CASE("HTTP dates in the three forms of RFC 9110 5.6.7", "[net][http]") {
    using net::parse_http_date;
    const std::int64_t t = 784111777;  // 1994-11-06T08:49:37Z, the RFC's example
    CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT", 2026) == t);
    CHECK(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", 2026) == t);
    CHECK(parse_http_date("Sun Nov  6 08:49:37 1994", 2026) == t);
    CHECK(parse_http_date("Sun Nov 16 08:49:37 1994", 2026) == t + 10 * 86400);
    // Two-digit years: more than 50 years ahead means the previous century.
    CHECK(parse_http_date("Thursday, 01-Jan-76 00:00:00 GMT", 2026) == 3345062400);  // 2076
    CHECK(parse_http_date("Friday, 01-Jan-77 00:00:00 GMT", 2026) == 220924800);     // 1977
    CHECK(parse_http_date("Thu, 29 Feb 2024 23:59:60 GMT", 2026) == 1709251200);     // leap second
    // Not HTTP dates.
    for (const char* bad :
         {"", "Sun, 06 Nov 1994 08:49:37 UTC", "sun, 06 Nov 1994 08:49:37 GMT",
          "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 GMT ", "Sun, 06 nov 1994 08:49:37 GMT",
          "Sun, 29 Feb 2023 08:49:37 GMT", "Sun, 06 Nov 1994 24:00:00 GMT", "Sun, 06 Nov 1994 08:60:00 GMT",
          "Sun, 06 Nov 94 08:49:37 GMT", "Sun, 06-Nov-94 08:49:37 GMT", "Sunday, 06-Nov-1994 08:49:37 GMT",
          "Sun Nov 6 08:49:37 1994", "Sun Nov  6 08:49:37 94", "Funday, 06-Nov-94 08:49:37 GMT",
          "Sun, 31 Apr 1994 08:49:37 GMT", "Sun, 06 Nov 1994 8:49:37 GMT"})
        CHECK_FALSE(parse_http_date(bad, 2026));
}

TEST_CASE("Retry-After: delta-seconds or a date, relative to the reply's Date, capped", "[net][http]") {
    using net::parse_retry_after;
    using std::chrono::seconds;
    const std::chrono::system_clock::time_point now{seconds(784111777)};
    CHECK(parse_retry_after("120", std::nullopt, now) == seconds(120));
    CHECK(parse_retry_after("0", std::nullopt, now) == seconds(0));
    CHECK(parse_retry_after("86400", std::nullopt, now) == net::max_retry_after);
    CHECK(parse_retry_after("99999999999999999999999", std::nullopt, now) == net::max_retry_after);
    CHECK_FALSE(parse_retry_after("120abc", std::nullopt, now));
    CHECK_FALSE(parse_retry_after("-5", std::nullopt, now));
    CHECK_FALSE(parse_retry_after("1.5", std::nullopt, now));
    CHECK_FALSE(parse_retry_after("", std::nullopt, now));
    // Dates relative to the local clock when the reply has no (valid) Date header.
    CHECK(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", std::nullopt, now) == seconds(30));
    CHECK(parse_retry_after("Sunday, 06-Nov-94 08:50:07 GMT", std::nullopt, now) == seconds(30));
    CHECK(parse_retry_after("Sun Nov  6 08:50:07 1994", "garbage", now) == seconds(30));
    // ... and relative to the server's Date when there is one: the local clock does not matter.
    const auto later = now + std::chrono::hours(24 * 365);
    CHECK(parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", "Sun, 06 Nov 1994 08:49:37 GMT", later) ==
          seconds(10));
    // The past means now; the far future is capped.
    CHECK(parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", std::nullopt, now) == seconds(0));
    CHECK(parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT", std::nullopt, now) == net::max_retry_after);
    CHECK_FALSE(parse_retry_after("Sun, 06 Nov 1994 08:49:37", std::nullopt, now));
}

// Inputs the encoder fuzzers (cpp/fuzz/fuzz_syslog.cpp, fuzz_siem.cpp) showed to be wrong.
TEST_CASE("syslog encoder: fuzz findings", "[net][syslog]") {
    syslog_format f;
    f.rfc3164 = true;
    f.procid = "4]2:[";  // ']' ended the PID early, ':' / '[' confuse a TAG reader
    auto m = encode(sample(), f);
    REQUIRE(m.size() == 1);
    CHECK(m[0].starts_with("<14>Nov 27 08:15:52 web1 salt[42]: {"));
    f.procid = "]:";  // nothing left: no brackets at all
    m = encode(sample(), f);
    CHECK(m[0].starts_with("<14>Nov 27 08:15:52 web1 salt: {"));

    // A truncated sequence is one maximal ill-formed subpart: one U+FFFD, as in JSON.
    std::string v;
    append_sd_value(v, "a\xE2\x82z\xF0\x9F\x8D");
    CHECK(v == "a\xEF\xBF\xBDz\xEF\xBF\xBD");
}

TEST_CASE("SIEM encoders: fuzz findings", "[net][siem]") {
    auto r = sample();
    r.fun = "caf\xC3\xA9\xFF|x";
    r.minion = std::string("caf\xC3\xA9\xFF\0z", 8);
    std::string out;
    encode_cef(r, out);
    // Header: bad bytes as U+FFFD (they were passed through); value: only the bad byte
    // replaced (every non-ASCII byte was), NUL as U+FFFD (was the text \u0000).
    CHECK(out.find("|caf\xC3\xA9\xEF\xBF\xBD\\|x|3|") != std::string::npos);
    CHECK(out.find(" dhost=caf\xC3\xA9\xEF\xBF\xBD\xEF\xBF\xBDz act=") != std::string::npos);

    r = sample();
    r.ts_us = INT64_MIN;  // -ts_us overflowed
    out.clear();
    encode_cef(r, out);
    CHECK(out.find("|rt=-9223372036854776 ") != std::string::npos);
    r.ts_us = -1;
    out.clear();
    encode_cef(r, out);
    CHECK(out.find("|rt=-1 ") != std::string::npos);

    // event.duration outside int64 nanoseconds is left out (llround was undefined there).
    CHECK(payload_duration_ns(R"({"duration":1e300})") == std::nullopt);
    CHECK(payload_duration_ns(R"({"return":{"a":{"duration":-1e13}}})") == std::nullopt);
    CHECK(payload_duration_ns(R"({"duration":9e12})") == 9000000000000000000);

    // Kind 0 (no kind) is named "unknown" like any other bad kind, never "".
    r = sample();
    r.kind = static_cast<record_kind>(0);
    out.clear();
    encode_gelf(r, out);
    CHECK(out.find("\"_salt_kind\":\"unknown\"") != std::string::npos);
}

TEST_CASE("a name that does not resolve: retry with an error naming the host", "[net]") {
    for (std::string sink_type : {"syslog", "logstash"}) {
        config_map cfg{{"host", std::string("no-such-host.invalid")}, {"port", std::int64_t(9)},
                       {"connect_timeout_ms", std::int64_t(2000)}};
        if (sink_type == "syslog") cfg["transport"] = std::string("tcp");
        auto s = make_sink("n", sink_type, cfg);
        std::vector<record> batch{sample()};
        const auto t0 = std::chrono::steady_clock::now();
        auto res = s->write(batch);
        CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(2500));
        CHECK(res.status == write_status::retry);
        CHECK_THAT(res.error, Catch::Contains("cannot resolve no-such-host.invalid"));
        s->close();
    }
}

TEST_CASE("a stalled name lookup costs connect_timeout, not the resolver's time", "[net]") {
    using namespace std::chrono;
    stall_calls = 0;
    auto s = make_sink("n", "logstash", {{"host", std::string("a.stall.test")}, {"port", std::int64_t(9)},
                                         {"connect_timeout_ms", std::int64_t(300)}});
    std::vector<record> batch{sample()};
    auto t0 = steady_clock::now();
    auto res = s->write(batch);
    CHECK(steady_clock::now() - t0 < milliseconds(1000));  // the lookup takes 1500 ms
    CHECK(res.status == write_status::retry);
    CHECK_THAT(res.error, Catch::Contains("cannot resolve a.stall.test: no answer within 300 ms"));
    // The next attempt waits for the same lookup: no second getaddrinfo.
    res = s->write(batch);
    CHECK_THAT(res.error, Catch::Contains("no answer within 300 ms"));
    CHECK(stall_calls == 1);
    // Once the lookup has answered, its answer is what the next attempt reports.
    std::this_thread::sleep_for(milliseconds(1200));
    res = s->write(batch);
    CHECK(res.status == write_status::retry);
    CHECK_THAT(res.error, Catch::Contains("cannot resolve a.stall.test"));
    CHECK_THAT(res.error, !Catch::Contains("no answer"));
    CHECK(stall_calls == 1);

    // A sink closed and destroyed while its lookup runs does not wait for it.
    auto s2 = make_sink("m", "syslog", {{"transport", std::string("tcp")},
                                        {"host", std::string("b.stall.test")}, {"port", std::int64_t(9)},
                                        {"connect_timeout_ms", std::int64_t(100)}});
    CHECK(s2->write(batch).status == write_status::retry);
    t0 = steady_clock::now();
    s2->close();
    s2.reset();
    CHECK(steady_clock::now() - t0 < milliseconds(500));
    // Localhost still resolves, through libc.
    auto s3 = make_sink("l", "syslog", {{"transport", std::string("udp")},
                                        {"host", std::string("localhost")}, {"port", std::int64_t(9)}});
    CHECK(s3->write(batch).status == write_status::ok);
}
