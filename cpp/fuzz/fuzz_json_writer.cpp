// fastret::json_writer, append_json_string, is_valid_utf8 and limit_payload_size on
// arbitrary keys and values.
//
// Properties:
//  - a document written through an API-valid call sequence is strict JSON (RFC 8259) and
//    well-formed UTF-8, and parses back to exactly the values written: valid UTF-8 strings
//    and keys unchanged, invalid ones with each maximal ill-formed subpart replaced by one
//    U+FFFD, integers exactly, doubles round-tripping bit for bit (NaN and the infinities as
//    strings), base64 as RFC 4648;
//  - append_json_string on arbitrary bytes gives one JSON string with that same decoding, and
//    is_valid_utf8 agrees with the reference;
//  - limit_payload_size: cuts exactly when the payload is larger than max_bytes, leaves
//    smaller payloads alone, and otherwise writes the documented marker object whose
//    original_bytes is the old size and whose head is the longest prefix of at most
//    head_bytes that does not split a UTF-8 sequence; on arbitrary bytes the marker is still
//    valid JSON and UTF-8.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fastret/json_writer.hpp"
#include "fuzz_common.hpp"

using fuzz::jvalue;

namespace {

void check_limit(const std::string& payload, FuzzedDataProvider& fdp, bool payload_is_utf8) {
    const std::size_t n = payload.size();
    const auto max_bytes = fdp.ConsumeIntegralInRange<std::size_t>(0, n + 8);
    const bool default_head = fdp.ConsumeBool();
    const auto head_bytes =
        default_head ? std::size_t{4096} : fdp.ConsumeIntegralInRange<std::size_t>(0, n + 8);
    std::string p = payload;
    const bool cut = default_head ? fastret::limit_payload_size(p, max_bytes)
                                  : fastret::limit_payload_size(p, max_bytes, head_bytes);
    FUZZ_CHECK(cut == (n > max_bytes), "cut=" + std::to_string(cut) + " size=" + std::to_string(n) +
                                           " max=" + std::to_string(max_bytes));
    if (!cut) {
        FUZZ_CHECK(p == payload, "an uncut payload changed: " + fuzz::show(p));
        return;
    }
    FUZZ_CHECK(fuzz::utf8_valid(p), "marker is not UTF-8: " + fuzz::show(p));
    const jvalue m = fuzz::must_parse(p, "truncation marker");
    FUZZ_CHECK(m.kind == jvalue::object_v && m.members.size() == 3, fuzz::show(p));
    FUZZ_CHECK(m.members[0].first == fastret::truncation_marker_key &&
                   m.members[0].second.kind == jvalue::string_v &&
                   m.members[0].second.text == "size",
               fuzz::show(p));
    FUZZ_CHECK(m.members[1].first == "original_bytes" &&
                   m.members[1].second.kind == jvalue::number_v &&
                   m.members[1].second.text == std::to_string(n),
               fuzz::show(p));
    FUZZ_CHECK(m.members[2].first == "head" && m.members[2].second.kind == jvalue::string_v,
               fuzz::show(p));
    const std::string& head = m.members[2].second.text;
    if (!payload_is_utf8) return;
    // The head is a prefix of the payload, at most head_bytes long, not cut inside a sequence,
    // and as long as those rules allow.
    const std::size_t limit = std::min(head_bytes, n);
    FUZZ_CHECK(head.size() <= limit && payload.compare(0, head.size(), head) == 0,
               "head " + fuzz::show(head) + " is not a prefix of at most " + std::to_string(limit) +
                   " bytes of " + fuzz::show(payload));
    if (head.size() < limit) {
        const int next = fuzz::utf8_at(payload, head.size());
        FUZZ_CHECK(next > 0 && head.size() + static_cast<std::size_t>(next) > limit,
                   "head of " + std::to_string(head.size()) +
                       " bytes is shorter than needed (limit " + std::to_string(limit) + ")");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider fdp(data, size);

    // 1. A whole document through the writer.
    fastret::json_writer w;
    fuzz::json_generator gen(fdp, 64, 12);
    const jvalue expected = gen.value(w);
    FUZZ_CHECK(w.depth() == 0, "depth " + std::to_string(w.depth()) + " after a complete value");
    FUZZ_CHECK(w.size() == w.str().size(), "size() disagrees with str()");
    const std::string doc = w.take();
    fuzz::trace("document " + fuzz::show(doc));
    FUZZ_CHECK(fuzz::utf8_valid(doc), "output is not UTF-8: " + fuzz::show(doc));
    FUZZ_CHECK(fastret::is_valid_utf8(doc), "is_valid_utf8 refuses the writer's own output");
    const jvalue got = fuzz::must_parse(doc, "writer output");
    FUZZ_CHECK(fuzz::same(expected, got), "wrote " + fuzz::dump(expected) + "\nparsed " +
                                              fuzz::dump(got) + "\nfrom " + fuzz::show(doc));

    // 2. limit_payload_size on that document (valid JSON, valid UTF-8).
    check_limit(doc, fdp, true);

    // 3. The rest of the input as one string value, and through the size limit as raw bytes.
    const std::string rest = fdp.ConsumeRemainingBytesAsString();
    fuzz::trace("string " + fuzz::show(rest));
    const bool valid = fuzz::utf8_valid(rest);
    FUZZ_CHECK(fastret::is_valid_utf8(rest) == valid,
               "is_valid_utf8 says " + std::to_string(!valid) + " for " + fuzz::show(rest));
    std::string quoted = "x";  // appends, does not replace
    fastret::append_json_string(quoted, rest);
    FUZZ_CHECK(quoted[0] == 'x', "append_json_string replaced its output");
    const std::string_view json = std::string_view(quoted).substr(1);
    FUZZ_CHECK(fuzz::utf8_valid(json), "string is not UTF-8: " + fuzz::show(json));
    const jvalue s = fuzz::must_parse(json, "append_json_string output");
    FUZZ_CHECK(s.kind == jvalue::string_v, fuzz::show(json));
    FUZZ_CHECK(s.text == fuzz::utf8_replace(rest),
               "input " + fuzz::show(rest) + "\ndecoded " + fuzz::show(s.text));
    if (valid) FUZZ_CHECK(s.text == rest, "valid UTF-8 changed: " + fuzz::show(rest));
    FuzzedDataProvider again(data, size);  // sizes for the second cut, from the same input
    check_limit(rest, again, valid);
    return 0;
}
