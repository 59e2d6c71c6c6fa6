#include <catch2/catch.hpp>

#include "fastret/record.hpp"

#include <openssl/evp.h>

#include <random>
#include <vector>

using namespace fastret;

namespace {
record sample() {
    record r;
    r.kind = record_kind::job_return;
    r.ts_us = 1764230152123456;
    r.jid = "20261127081552123456";
    r.minion = "web-1";
    r.fun = "state.apply";
    r.tag = "";
    r.success = 1;
    r.retcode = 0;
    r.payload = R"({"return":{"a":1}})";
    return r;
}
}  // namespace

TEST_CASE("record ids are deterministic and depend on every identifying field", "[record]") {
    auto a = sample();
    auto id = compute_record_id(a);
    CHECK(id.size() == 32);
    CHECK(id.find_first_not_of("0123456789abcdef") == std::string::npos);
    CHECK(compute_record_id(sample()) == id);
    auto b = sample();
    b.ts_us += 1;  // time is not identity: a re-delivery later has the same id
    CHECK(compute_record_id(b) == id);
    b = sample();
    b.minion = "web-2";
    CHECK(compute_record_id(b) != id);
    b = sample();
    b.payload = R"({"return":{"a":2}})";
    CHECK(compute_record_id(b) != id);
    // field boundaries matter: moving a character between fields changes the id
    auto c = sample();
    c.jid = "x";
    c.minion = "yz";
    auto d = sample();
    d.jid = "xy";
    d.minion = "z";
    CHECK(compute_record_id(c) != compute_record_id(d));
}

TEST_CASE("record ids stay what they were: SHA-256 of the documented layout", "[record]") {
    // Pinned: ids must not change between versions (a record re-delivered after an upgrade
    // must still be recognised). The same value from Python:
    //   sha256(b"\x01" + lp(jid) + lp(minion) + lp(fun) + lp(tag) + lp(payload))[:32 hex]
    //   with lp(b) = struct.pack("<I", len(b)) + b
    CHECK(compute_record_id(sample()) == "777183617c2992606098ae70da50468f");
}

TEST_CASE("record ids are OpenSSL's SHA-256 of the documented layout, for every length", "[record]") {
    auto reference = [](const record& r) {
        auto lp = [](const std::string& f) {
            std::string o;
            const auto n = static_cast<std::uint32_t>(f.size());
            for (int i = 0; i < 4; ++i) o += static_cast<char>((n >> (8 * i)) & 0xff);
            return o + f;
        };
        const std::string m = std::string(1, static_cast<char>(r.kind)) + lp(r.jid) + lp(r.minion) +
                              lp(r.fun) + lp(r.tag) + lp(r.payload);
        unsigned char d[32];
        unsigned int len = 0;
        EVP_Digest(m.data(), m.size(), d, &len, EVP_sha256(), nullptr);
        static constexpr char hex[] = "0123456789abcdef";
        std::string id;
        for (int i = 0; i < 16; ++i) {
            id += hex[d[i] >> 4];
            id += hex[d[i] & 0xf];
        }
        return id;
    };
    std::mt19937 rng(42);
    std::vector<record> recs;
    // every payload length around the block boundaries (padding needs one or two blocks)
    for (std::size_t n = 0; n < 300; ++n) {
        record r = sample();
        r.payload.assign(n, static_cast<char>('a' + n % 26));
        r.minion = "m" + std::to_string(rng() % 1000);
        recs.push_back(r);
    }
    // header fields whose total is around and beyond what compute_record_id gathers in one
    // buffer (512 bytes) before hashing
    for (std::size_t n = 440; n < 520; ++n) {
        record r = sample();
        r.tag.assign(n, 't');
        recs.push_back(r);
    }
    for (int i = 0; i < 200; ++i) {
        record r = sample();
        r.payload.resize(rng() % 5000);
        for (auto& c : r.payload) c = static_cast<char>(rng());
        recs.push_back(r);
    }
    for (std::size_t i = 0; i < recs.size(); ++i) {
        INFO("record " << i << ", payload " << recs[i].payload.size() << " bytes");
        CHECK(compute_record_id(recs[i]) == reference(recs[i]));
    }
}

TEST_CASE("records survive the spool's binary form unchanged", "[record]") {
    auto a = sample();
    a.id = compute_record_id(a);
    a.payload += std::string("\0\xff", 2);
    record out;
    REQUIRE(deserialize(serialize(a), out));
    CHECK(out.kind == a.kind);
    CHECK(out.ts_us == a.ts_us);
    CHECK(out.jid == a.jid);
    CHECK(out.minion == a.minion);
    CHECK(out.fun == a.fun);
    CHECK(out.success == a.success);
    CHECK(out.retcode == a.retcode);
    CHECK(out.payload == a.payload);
    CHECK(out.id == a.id);
    a.retcode.reset();
    a.success = -1;
    REQUIRE(deserialize(serialize(a), out));
    CHECK_FALSE(out.retcode.has_value());
    CHECK(out.success == -1);
}

TEST_CASE("malformed spool frames are rejected without reading out of bounds", "[record]") {
    auto bytes = serialize(sample());
    record out;
    for (std::size_t n = 0; n < bytes.size(); ++n) CHECK_FALSE(deserialize(bytes.substr(0, n), out));
    CHECK_FALSE(deserialize(bytes + "x", out));
    auto bad = bytes;
    bad[1] = 99;  // unknown kind
    CHECK_FALSE(deserialize(bad, out));
}

TEST_CASE("record kinds have stable names", "[record]") {
    CHECK(to_string(record_kind::event) == "event");
    CHECK(record_kind_from_string("job_load") == record_kind::job_load);
    CHECK_FALSE(record_kind_from_string("nope").has_value());
}
