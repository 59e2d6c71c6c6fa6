// fastret::deserialize (the spool's record format) on arbitrary bytes, and serialize() on
// arbitrary records.
//
// Properties:
//  - deserialize never reads outside its input (the input is an exactly sized heap copy, so
//    ASan sees any overread);
//  - when it accepts x, the record is well-formed (known kind, success in -1..1) and
//    serialize(record) is x itself except for the non-canonical bytes the format tolerates
//    (a has-retcode flag other than 0/1, retcode bytes after a 0 flag); deserializing that
//    again gives the same record;
//  - every record with a known kind and success in -1..1 round-trips through serialize and
//    deserialize field for field, no strict prefix or one-byte extension of its
//    serialization is accepted, and its id is 32 hex digits, the same after the round trip.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "fastret/record.hpp"
#include "fuzz_common.hpp"

namespace {

bool same_record(const fastret::record& a, const fastret::record& b) {
    return a.kind == b.kind && a.ts_us == b.ts_us && a.jid == b.jid && a.minion == b.minion &&
           a.fun == b.fun && a.tag == b.tag && a.success == b.success && a.retcode == b.retcode &&
           a.payload == b.payload && a.id == b.id;
}

std::string describe(const fastret::record& r) {
    return "kind=" + std::to_string(static_cast<int>(r.kind)) + " ts=" + std::to_string(r.ts_us) +
           " jid=" + fuzz::show(r.jid) + " minion=" + fuzz::show(r.minion) +
           " fun=" + fuzz::show(r.fun) + " tag=" + fuzz::show(r.tag) +
           " success=" + std::to_string(r.success) +
           " retcode=" + (r.retcode ? std::to_string(*r.retcode) : "none") +
           " id=" + fuzz::show(r.id) + " payload=" + fuzz::show(r.payload);
}

// Offsets of the fixed header: version, kind, ts (8), success, has_retcode, retcode (8).
constexpr std::size_t has_retcode_at = 11, retcode_at = 12, strings_at = 20;

bool deserialize_exact(std::string_view bytes, fastret::record& out) {
    // An exactly sized allocation: reading one byte past it is a heap-buffer-overflow.
    std::unique_ptr<char[]> copy(new char[bytes.size() ? bytes.size() : 1]);
    if (!bytes.empty()) std::memcpy(copy.get(), bytes.data(), bytes.size());
    return fastret::deserialize(std::string_view(copy.get(), bytes.size()), out);
}

void check_bytes(std::string_view x) {
    fastret::record r;
    if (!deserialize_exact(x, r)) {
        fuzz::trace("refused " + fuzz::show(x));
        return;
    }
    fuzz::trace("accepted " + describe(r));
    const auto kind = static_cast<int>(r.kind);
    FUZZ_CHECK(kind >= 1 && kind <= 5 && fastret::to_string(r.kind) != "unknown",
               "accepted kind " + std::to_string(kind));
    FUZZ_CHECK(r.success >= -1 && r.success <= 1, "accepted success " + std::to_string(r.success));
    const std::string s = fastret::serialize(r);
    FUZZ_CHECK(s.size() == x.size(), "re-serialized to " + std::to_string(s.size()) +
                                         " bytes from " + std::to_string(x.size()) + ": " +
                                         describe(r));
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (i == has_retcode_at || (i >= retcode_at && i < strings_at)) continue;
        FUZZ_CHECK(s[i] == x[i], "byte " + std::to_string(i) + " differs after a round trip: " +
                                     fuzz::show(x) + " -> " + fuzz::show(s));
    }
    const bool flag = x[has_retcode_at] != 0;
    FUZZ_CHECK(r.retcode.has_value() == flag, describe(r));
    if (flag)
        FUZZ_CHECK(s.compare(retcode_at, 8, x.substr(retcode_at, 8)) == 0,
                   "retcode changed: " + describe(r));
    fastret::record r2;
    FUZZ_CHECK(deserialize_exact(s, r2), "serialize() output refused: " + fuzz::show(s));
    FUZZ_CHECK(same_record(r, r2), describe(r) + "\nvs\n" + describe(r2));
}

void check_record(FuzzedDataProvider& fdp) {
    fastret::record r;
    r.kind = static_cast<fastret::record_kind>(fdp.ConsumeIntegralInRange(1, 5));
    r.ts_us = fdp.ConsumeIntegral<std::int64_t>();
    r.success = static_cast<std::int8_t>(fdp.ConsumeIntegralInRange(-1, 1));
    if (fdp.ConsumeBool()) r.retcode = fdp.ConsumeIntegral<std::int64_t>();
    r.jid = fdp.ConsumeRandomLengthString(32);
    r.minion = fdp.ConsumeRandomLengthString(32);
    r.fun = fdp.ConsumeRandomLengthString(32);
    r.tag = fdp.ConsumeRandomLengthString(64);
    r.id = fdp.ConsumeRandomLengthString(40);
    r.payload = fdp.ConsumeRandomLengthString(256);
    const std::string s = fastret::serialize(r);
    fastret::record back;
    FUZZ_CHECK(deserialize_exact(s, back), "refused: " + describe(r));
    FUZZ_CHECK(same_record(r, back), describe(r) + "\nvs\n" + describe(back));
    FUZZ_CHECK(fastret::serialize(back) == s, "not a fixed point: " + describe(r));
    const auto cut = fdp.ConsumeIntegralInRange<std::size_t>(0, s.size() - 1);
    fastret::record junk;
    FUZZ_CHECK(!deserialize_exact(std::string_view(s).substr(0, cut), junk),
               "a " + std::to_string(cut) + "-byte prefix of a " + std::to_string(s.size()) +
                   "-byte record was accepted");
    FUZZ_CHECK(!deserialize_exact(s + static_cast<char>(fdp.ConsumeIntegral<std::uint8_t>()), junk),
               "a record with a trailing byte was accepted");
    const std::string id = fastret::compute_record_id(r);
    FUZZ_CHECK(id.size() == 32 && id.find_first_not_of("0123456789abcdef") == std::string::npos,
               fuzz::show(id));
    FUZZ_CHECK(id == fastret::compute_record_id(back), "same content, different id");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    // Raw bytes first: the seeds are serialized records, so mutations of them reach every field.
    check_bytes(bytes);
    FuzzedDataProvider fdp(data, size);
    check_record(fdp);
    return 0;
}
