#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "fastret/json_writer.hpp"

using namespace fastret;

TEST_CASE("json_writer writes nested containers with commas in the right places", "[encoder]") {
    json_writer w;
    w.begin_object();
    w.key("a");
    w.integer(-5);
    w.key("b");
    w.begin_array();
    w.unsigned_integer(18446744073709551615ull);
    w.boolean(true);
    w.null();
    w.begin_object();
    w.end_object();
    w.begin_array();
    w.end_array();
    w.end_array();
    w.key("c");
    w.raw_number("123456789012345678901234567890");
    w.end_object();
    CHECK(w.str() == R"({"a":-5,"b":[18446744073709551615,true,null,{},[]],"c":123456789012345678901234567890})");
    CHECK(w.depth() == 0);
}

TEST_CASE("json strings escape quotes backslashes and control characters", "[encoder]") {
    std::string out;
    append_json_string(out, std::string("q\"b\\n\nr\rt\tz\x01\x1f\0end", 17));
    CHECK(out == R"("q\"b\\n\nr\rt\tz\u0001\u001f\u0000end")");
}

TEST_CASE("invalid UTF-8 is replaced with U+FFFD and valid UTF-8 kept", "[encoder]") {
    std::string out;
    append_json_string(out, "ok \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");  // é € 😀
    CHECK(out == "\"ok \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\"");
    out.clear();
    // lone continuation byte, truncated sequence, overlong '/', UTF-16 surrogate, > U+10FFFF
    append_json_string(out, "a\x80" "b\xE2\x82" "c\xC0\xAF" "d\xED\xA0\x80" "e\xF4\x90\x80\x80");
    CHECK(is_valid_utf8(out));
    CHECK(out.find("a\xEF\xBF\xBD" "b") != std::string::npos);
    CHECK(out.find("\xC0") == std::string::npos);
    CHECK(out.find("\xED\xA0") == std::string::npos);
    CHECK(!is_valid_utf8("\xFF"));
    // One U+FFFD per maximal invalid subpart, as Python's decode(errors="replace") does.
    out.clear();
    append_json_string(out, "a\xE2\x82" "b\xF0\x9F\x98" "c\xC0\xAF" "d\xED\xA0\x80" "e");
    CHECK(out == "\"a\xEF\xBF\xBD" "b\xEF\xBF\xBD" "c\xEF\xBF\xBD\xEF\xBF\xBD"
                 "d\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "e\"");
    CHECK(is_valid_utf8(""));
}

TEST_CASE("doubles round-trip and non-finite values become strings", "[encoder]") {
    json_writer w;
    w.begin_array();
    w.number(0.1);
    w.number(2.0);
    w.number(1e300);
    w.number(std::nan(""));
    w.number(std::numeric_limits<double>::infinity());
    w.number(-std::numeric_limits<double>::infinity());
    w.end_array();
    CHECK(w.str() == R"([0.1,2.0,1e+300,"NaN","Infinity","-Infinity"])");
}

TEST_CASE("base64 strings follow RFC 4648 test vectors", "[encoder]") {
    const char* vectors[][2] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                {"foo", "Zm9v"},  {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
                                {"foobar", "Zm9vYmFy"}};
    for (auto& v : vectors) {
        json_writer w;
        w.base64_string(v[0]);
        CHECK(w.str() == std::string("\"") + v[1] + "\"");
    }
}

TEST_CASE("oversized payloads are replaced by an explicit truncation marker", "[encoder]") {
    std::string payload = "\"" + std::string(10000, 'x') + "\"";
    std::string small = "{\"a\":1}";
    CHECK_FALSE(limit_payload_size(small, 100));
    CHECK(small == "{\"a\":1}");
    REQUIRE(limit_payload_size(payload, 1000, 50));
    CHECK(payload.rfind("{\"__fastret_truncated__\":\"size\",\"original_bytes\":10002,\"head\":\"\\\"xxx", 0) == 0);
    CHECK(payload.size() < 200);
    // The head is never cut inside a UTF-8 sequence.
    std::string multi;
    for (int i = 0; i < 100; ++i) multi += "\xE2\x82\xAC";
    REQUIRE(limit_payload_size(multi, 10, 4));
    CHECK(is_valid_utf8(multi));
    CHECK(multi.find("\xEF\xBF\xBD") == std::string::npos);
}
