// Network sinks: encoders byte for byte, option checks, and the syslog sink against the
// throwaway rsyslog the ctest fixture starts ([rsyslog]).
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "encoders/siem.hpp"
#include "encoders/syslog.hpp"
#include "fastret/sink.hpp"
#include "net/tls.hpp"

using namespace fastret;

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
