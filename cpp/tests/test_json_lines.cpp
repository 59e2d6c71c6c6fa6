#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "encoders/json_lines.hpp"

using namespace fastret;

namespace {

std::string encode(const std::vector<record>& recs) {
    std::string out;
    encode_json_lines(recs, out);
    return out;
}

record full_record() {
    record r;
    r.kind = record_kind::job_return;
    r.ts_us = 1795767352123456;  // 2026-11-27T08:15:52.123456Z
    r.jid = "20261127081552123456";
    r.minion = "web1";
    r.fun = "test.ping";
    r.tag = "salt/job/20261127081552123456/ret/web1";
    r.success = 1;
    r.retcode = 0;
    r.payload = "true";
    r.id = "0123456789abcdef0123456789abcdef";
    return r;
}

}  // namespace

TEST_CASE("format_rfc3339_us: epoch and microseconds and calendar edges", "[json_lines]") {
    CHECK(format_rfc3339_us(0) == "1970-01-01T00:00:00.000000Z");
    CHECK(format_rfc3339_us(1) == "1970-01-01T00:00:00.000001Z");
    CHECK(format_rfc3339_us(1795767352123456) == "2026-11-27T08:15:52.123456Z");
    CHECK(format_rfc3339_us(951868799999999) == "2000-02-29T23:59:59.999999Z");
    CHECK(format_rfc3339_us(1735646400000001) == "2024-12-31T12:00:00.000001Z");
    // Before the epoch: floor, not truncation toward zero.
    CHECK(format_rfc3339_us(-1) == "1969-12-31T23:59:59.999999Z");
    CHECK(format_rfc3339_us(-2203891200000000) == "1900-03-01T00:00:00.000000Z");
    // Outside what RFC 3339 can express: clamped, still a valid timestamp.
    CHECK(format_rfc3339_us(INT64_MAX) == "9999-12-31T23:59:59.999999Z");
    CHECK(format_rfc3339_us(INT64_MIN) == "0001-01-01T00:00:00.000000Z");
}

TEST_CASE("encode_json_lines: all fields", "[json_lines]") {
    CHECK(encode({full_record()}) ==
          "{\"id\":\"0123456789abcdef0123456789abcdef\",\"kind\":\"job_return\","
          "\"time\":\"2026-11-27T08:15:52.123456Z\",\"jid\":\"20261127081552123456\","
          "\"minion\":\"web1\",\"fun\":\"test.ping\","
          "\"tag\":\"salt/job/20261127081552123456/ret/web1\",\"success\":true,\"retcode\":0,"
          "\"data\":true}\n");
}

TEST_CASE("encode_json_lines: empty fields and unknown success and absent retcode are omitted",
          "[json_lines]") {
    record r;
    r.kind = record_kind::event;
    r.ts_us = 0;
    r.tag = "salt/auth";
    r.payload = R"({"act":"accept","id":"m1"})";
    CHECK(encode({r}) ==
          "{\"kind\":\"event\",\"time\":\"1970-01-01T00:00:00.000000Z\",\"tag\":\"salt/auth\","
          "\"data\":{\"act\":\"accept\",\"id\":\"m1\"}}\n");
}

TEST_CASE("encode_json_lines: success false and negative retcode", "[json_lines]") {
    record r;
    r.kind = record_kind::job_load;
    r.ts_us = 1;
    r.jid = "j";
    r.success = 0;
    r.retcode = -2;
    r.payload = "[1,2]";
    CHECK(encode({r}) ==
          "{\"kind\":\"job_load\",\"time\":\"1970-01-01T00:00:00.000001Z\",\"jid\":\"j\","
          "\"success\":false,\"retcode\":-2,\"data\":[1,2]}\n");

    r.success = -1;  // unknown: omitted even though retcode is present
    r.retcode = INT64_MIN;
    CHECK(encode({r}) ==
          "{\"kind\":\"job_load\",\"time\":\"1970-01-01T00:00:00.000001Z\",\"jid\":\"j\","
          "\"retcode\":-9223372036854775808,\"data\":[1,2]}\n");
}

TEST_CASE("encode_json_lines: string escaping and invalid UTF-8", "[json_lines]") {
    record r;
    r.kind = record_kind::job_return;
    r.ts_us = 0;
    // quote, backslash, newline, control char, tab, valid 2-byte UTF-8, invalid byte
    r.minion = std::string("we\"ird\\mi\nnion\x01\t\xC3\xA9\xFF", 19);
    r.fun = "cmd.run";
    r.payload = "\"x\"";
    CHECK(encode({r}) ==
          "{\"kind\":\"job_return\",\"time\":\"1970-01-01T00:00:00.000000Z\","
          "\"minion\":\"we\\\"ird\\\\mi\\nnion\\u0001\\t\xC3\xA9\xEF\xBF\xBD\","
          "\"fun\":\"cmd.run\",\"data\":\"x\"}\n");
}

TEST_CASE("encode_json_lines: one line per record appended to existing output",
          "[json_lines]") {
    record a = full_record();
    record b;
    b.kind = record_kind::job_endtime;
    b.ts_us = 1795767352123456;
    b.jid = "20261127081552123456";
    b.payload = "\"2026-11-27T08:15:53.000000Z\"";

    std::string out = "previous\n";
    std::vector<record> batch{a, b};
    encode_json_lines(batch, out);
    CHECK(out ==
          "previous\n"
          "{\"id\":\"0123456789abcdef0123456789abcdef\",\"kind\":\"job_return\","
          "\"time\":\"2026-11-27T08:15:52.123456Z\",\"jid\":\"20261127081552123456\","
          "\"minion\":\"web1\",\"fun\":\"test.ping\","
          "\"tag\":\"salt/job/20261127081552123456/ret/web1\",\"success\":true,\"retcode\":0,"
          "\"data\":true}\n"
          "{\"kind\":\"job_endtime\",\"time\":\"2026-11-27T08:15:52.123456Z\","
          "\"jid\":\"20261127081552123456\",\"data\":\"2026-11-27T08:15:53.000000Z\"}\n");

    std::string empty;
    encode_json_lines(std::span<const record>{}, empty);
    CHECK(empty.empty());
}

TEST_CASE("encode_json_lines: pretty-printed payload stays on one line and empty payload is null",
          "[json_lines]") {
    record r;
    r.kind = record_kind::job_minions;
    r.ts_us = 0;
    r.payload = "[\r\n  \"m1\",\n  \"m\\n2\"\n]";
    CHECK(encode({r}) ==
          "{\"kind\":\"job_minions\",\"time\":\"1970-01-01T00:00:00.000000Z\","
          "\"data\":[    \"m1\",   \"m\\n2\" ]}\n");

    r.payload.clear();
    CHECK(encode({r}) ==
          "{\"kind\":\"job_minions\",\"time\":\"1970-01-01T00:00:00.000000Z\",\"data\":null}\n");
}
