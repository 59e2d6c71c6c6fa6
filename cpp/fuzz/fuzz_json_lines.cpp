// The JSON-lines encoder (cpp/src/encoders/json_lines.cpp) on batches of records whose fields
// are taken from the input: arbitrary bytes in the string fields, any time, success and
// retcode, and a payload that is valid JSON (written by json_writer from the input, sometimes
// pretty-printed with CR/LF between tokens, sometimes cut by limit_payload_size, sometimes
// empty).
//
// Properties:
//  - what was in the output buffer before stays; exactly one line per record is appended, each
//    ending in exactly one '\n' (no other CR or LF anywhere in it);
//  - each line is one strict JSON object in well-formed UTF-8 with the documented keys in the
//    documented order and nothing else: id (if non-empty), kind, time, jid, minion, fun, tag
//    (if non-empty), success (if known), retcode (if present), data;
//  - string fields decode to the record's bytes with ill-formed UTF-8 replaced by U+FFFD, kind
//    is the record kind's name, success and retcode are the record's, data is the payload's
//    value (null for an empty payload);
//  - time is RFC 3339 with microseconds and reads back (through std::chrono's calendar, not
//    the encoder's algorithm) to the record's time, clamped to years 0001..9999.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "encoders/json_lines.hpp"
#include "fastret/json_writer.hpp"
#include "fastret/record.hpp"
#include "fuzz_common.hpp"
#include "fuzz_records.hpp"

using fuzz::jvalue;
using fuzz::fuzzed_record;
using fuzz::make_record;
using fuzz::read_rfc3339_us;

namespace {

void expect_string_field(const fuzz::jmember& m, const char* key, const std::string& value) {
    FUZZ_CHECK(m.first == key, std::string("expected key ") + key + ", got " + fuzz::show(m.first));
    FUZZ_CHECK(m.second.kind == jvalue::string_v && m.second.text == fuzz::utf8_replace(value),
               std::string(key) + ": " + fuzz::show(value) + " encoded as " + fuzz::dump(m.second));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider fdp(data, size);
    const std::string before = fdp.ConsumeBool() ? "previous line\n" : "";
    std::vector<fuzzed_record> batch_in;
    const int n = fdp.ConsumeIntegralInRange(0, 6);
    for (int i = 0; i < n; ++i) batch_in.push_back(make_record(fdp));
    std::vector<fastret::record> batch;
    for (const auto& f : batch_in) batch.push_back(f.rec);

    std::string out = before;
    fastret::encode_json_lines(batch, out);
    fuzz::trace(std::to_string(batch.size()) + " records: " + fuzz::show(out));
    FUZZ_CHECK(out.compare(0, before.size(), before) == 0,
               "the encoder overwrote what was in the buffer");

    std::size_t pos = before.size();
    for (std::size_t i = 0; i < batch.size(); ++i) {
        const auto& r = batch[i];
        const std::size_t nl = out.find('\n', pos);
        FUZZ_CHECK(nl != std::string::npos, "line " + std::to_string(i) + " has no '\\n'");
        const std::string_view line = std::string_view(out).substr(pos, nl - pos);
        pos = nl + 1;
        FUZZ_CHECK(line.find('\r') == std::string_view::npos, "CR in line: " + fuzz::show(line));
        FUZZ_CHECK(fuzz::utf8_valid(line), "line is not UTF-8: " + fuzz::show(line));
        const jvalue obj = fuzz::must_parse(line, "line");
        FUZZ_CHECK(obj.kind == jvalue::object_v, "line is not an object: " + fuzz::show(line));

        std::size_t k = 0;
        auto next = [&]() -> const fuzz::jmember& {
            FUZZ_CHECK(k < obj.members.size(), "line ends early: " + fuzz::show(line));
            return obj.members[k++];
        };
        if (!r.id.empty()) expect_string_field(next(), "id", r.id);
        expect_string_field(next(), "kind", std::string(fastret::to_string(r.kind)));
        {
            const auto& m = next();
            FUZZ_CHECK(m.first == "time" && m.second.kind == jvalue::string_v, fuzz::show(line));
            const std::int64_t lo = -62135596800LL * 1000000,
                               hi = 253402300799LL * 1000000 + 999999;
            const std::int64_t want = r.ts_us < lo ? lo : r.ts_us > hi ? hi : r.ts_us;
            const std::int64_t got = read_rfc3339_us(m.second.text);
            FUZZ_CHECK(got == want,
                       "ts " + std::to_string(r.ts_us) + " written as " + m.second.text);
            FUZZ_CHECK(fastret::format_rfc3339_us(r.ts_us) == m.second.text,
                       "format_rfc3339_us disagrees");
        }
        if (!r.jid.empty()) expect_string_field(next(), "jid", r.jid);
        if (!r.minion.empty()) expect_string_field(next(), "minion", r.minion);
        if (!r.fun.empty()) expect_string_field(next(), "fun", r.fun);
        if (!r.tag.empty()) expect_string_field(next(), "tag", r.tag);
        if (r.success >= 0) {
            const auto& m = next();
            FUZZ_CHECK(m.first == "success" && m.second.kind == jvalue::bool_v &&
                           m.second.b == (r.success != 0),
                       "success " + std::to_string(r.success) + ": " + fuzz::show(line));
        }
        if (r.retcode) {
            const auto& m = next();
            FUZZ_CHECK(m.first == "retcode" && m.second.kind == jvalue::number_v &&
                           m.second.text == std::to_string(*r.retcode),
                       "retcode " + std::to_string(*r.retcode) + ": " + fuzz::show(line));
        }
        const auto& d = next();
        FUZZ_CHECK(d.first == "data" && fuzz::same(batch_in[i].data, d.second),
                   "data " + fuzz::dump(batch_in[i].data) + " encoded as " + fuzz::dump(d.second));
        FUZZ_CHECK(k == obj.members.size(), "extra keys in " + fuzz::show(line));
    }
    FUZZ_CHECK(pos == out.size(),
               "bytes after the last line: " + fuzz::show(std::string_view(out).substr(pos)));
    return 0;
}
