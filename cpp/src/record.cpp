#include "fastret/record.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>

namespace fastret {

namespace {

constexpr std::array<std::string_view, 6> kind_names = {
    "", "job_return", "job_load", "job_minions", "event", "job_endtime"};

// Little-endian integers and length-prefixed strings, stored at a cursor into a buffer that
// was sized beforehand.
char* put_uint(char* p, std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return p + bytes;
}

char* put_str(char* p, std::string_view s) {
    p = put_uint(p, static_cast<std::uint32_t>(s.size()), 4);
    if (!s.empty()) std::memcpy(p, s.data(), s.size());
    return p + s.size();
}

struct reader {
    std::string_view data;
    std::size_t pos = 0;
    bool ok = true;

    bool need(std::size_t n) {
        if (!ok || data.size() - pos < n) ok = false;
        return ok;
    }
    std::uint64_t get_uint(int bytes) {
        if (!need(static_cast<std::size_t>(bytes))) return 0;
        std::uint64_t v = 0;
        for (int i = 0; i < bytes; ++i)
            v |= static_cast<std::uint64_t>(static_cast<unsigned char>(data[pos + i])) << (8 * i);
        pos += static_cast<std::size_t>(bytes);
        return v;
    }
    void get_str(std::string& out) {
        auto n = static_cast<std::size_t>(get_uint(4));
        if (!need(n)) return;
        out.assign(data.substr(pos, n));
        pos += n;
    }
};

constexpr std::uint8_t serial_version = 1;

}  // namespace

std::string_view to_string(record_kind kind) noexcept {
    // 0 is no kind either: every encoder names the kind, so it must never come out empty.
    auto i = static_cast<std::size_t>(kind);
    return i >= 1 && i < kind_names.size() ? kind_names[i] : std::string_view{"unknown"};
}

std::optional<record_kind> record_kind_from_string(std::string_view name) noexcept {
    for (std::size_t i = 1; i < kind_names.size(); ++i)
        if (kind_names[i] == name) return static_cast<record_kind>(i);
    return std::nullopt;
}

namespace {

// One digest context per thread, with SHA-256 fetched once: EVP_Digest() would fetch the
// algorithm and allocate a context on every call, which costs more than hashing a typical
// record.
struct sha256_context {
    EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    ~sha256_context() {
        EVP_MD_CTX_free(ctx);
        EVP_MD_free(md);
    }
};

}  // namespace

std::string compute_record_id(const record& rec) {
    std::string id;
    compute_record_id(rec, id);
    return id;
}

void compute_record_id(const record& rec, std::string& out) {
    thread_local sha256_context sha;
    // Length-prefixed fields: "ab"+"c" and "a"+"bc" hash differently.
    EVP_DigestInit_ex(sha.ctx, sha.md, nullptr);
    // The bytes before the payload (kind, the four header fields, the payload's length) are
    // gathered and go to the digest in one update: each update has a fixed cost in OpenSSL
    // (dispatch, buffering), and one per piece cost more than hashing a typical record's
    // header fields.
    thread_local std::string head;
    head.resize(1 + 5 * 4 + rec.jid.size() + rec.minion.size() + rec.fun.size() + rec.tag.size());
    char* p = head.data();
    *p++ = static_cast<char>(rec.kind);
    p = put_str(p, rec.jid);
    p = put_str(p, rec.minion);
    p = put_str(p, rec.fun);
    p = put_str(p, rec.tag);
    put_uint(p, static_cast<std::uint32_t>(rec.payload.size()), 4);
    EVP_DigestUpdate(sha.ctx, head.data(), head.size());
    EVP_DigestUpdate(sha.ctx, rec.payload.data(), rec.payload.size());
    if (head.capacity() > 4096) std::string().swap(head);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(sha.ctx, digest, &len);
    static constexpr char hex[] = "0123456789abcdef";
    char id[32];
    for (int i = 0; i < 16; ++i) {
        id[2 * i] = hex[digest[i] >> 4];
        id[2 * i + 1] = hex[digest[i] & 0xf];
    }
    out.assign(id, sizeof id);
}

std::int64_t now_us() noexcept {
    using namespace std::chrono;
    return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

std::string serialize(const record& rec) {
    std::string out;
    serialize_to(rec, out);
    return out;
}

void serialize_to(const record& rec, std::string& out) {
    // version, kind, time, success, has retcode, retcode, then six length-prefixed strings
    constexpr std::size_t fixed = 1 + 1 + 8 + 1 + 1 + 8 + 6 * 4;
    const std::size_t start = out.size();
    const std::size_t size = fixed + rec.jid.size() + rec.minion.size() + rec.fun.size() +
                             rec.tag.size() + rec.id.size() + rec.payload.size();
    if (out.capacity() < start + size) out.reserve(std::max(start + size, 2 * out.capacity()));
    out.resize(start + size);
    char* p = out.data() + start;
    *p++ = static_cast<char>(serial_version);
    *p++ = static_cast<char>(rec.kind);
    p = put_uint(p, static_cast<std::uint64_t>(rec.ts_us), 8);
    *p++ = static_cast<char>(rec.success);
    *p++ = rec.retcode ? 1 : 0;
    p = put_uint(p, static_cast<std::uint64_t>(rec.retcode.value_or(0)), 8);
    p = put_str(p, rec.jid);
    p = put_str(p, rec.minion);
    p = put_str(p, rec.fun);
    p = put_str(p, rec.tag);
    p = put_str(p, rec.id);
    put_str(p, rec.payload);
}

bool deserialize(std::string_view data, record& out) {
    reader r{data};
    if (r.get_uint(1) != serial_version) return false;
    auto kind = r.get_uint(1);
    if (kind == 0 || kind >= kind_names.size()) return false;
    out.kind = static_cast<record_kind>(kind);
    out.ts_us = static_cast<std::int64_t>(r.get_uint(8));
    out.success = static_cast<std::int8_t>(r.get_uint(1));
    bool has_retcode = r.get_uint(1) != 0;
    auto retcode = static_cast<std::int64_t>(r.get_uint(8));
    out.retcode = has_retcode ? std::optional<std::int64_t>(retcode) : std::nullopt;
    r.get_str(out.jid);
    r.get_str(out.minion);
    r.get_str(out.fun);
    r.get_str(out.tag);
    r.get_str(out.id);
    r.get_str(out.payload);
    return r.ok && r.pos == data.size() && out.success >= -1 && out.success <= 1;
}

std::size_t record_size(const record& rec) noexcept {
    return rec.payload.size() + rec.jid.size() + rec.minion.size() + rec.fun.size() +
           rec.tag.size() + rec.id.size() + 64;
}

}  // namespace fastret
