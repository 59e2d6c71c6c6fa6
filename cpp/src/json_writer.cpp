#include "fastret/json_writer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace fastret {

namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is invalid
// (overlong forms, surrogates and code points past U+10FFFF are invalid).
std::size_t utf8_sequence_length(std::string_view s, std::size_t i) noexcept {
    auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
    unsigned char c = b(0);
    std::size_t left = s.size() - i;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        return left >= 2 && (b(1) & 0xC0) == 0x80 ? 2 : 0;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (left < 3 || (b(1) & 0xC0) != 0x80 || (b(2) & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && b(1) < 0xA0) return 0;   // overlong
        if (c == 0xED && b(1) >= 0xA0) return 0;  // UTF-16 surrogate
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (left < 4 || (b(1) & 0xC0) != 0x80 || (b(2) & 0xC0) != 0x80 || (b(3) & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && b(1) < 0x90) return 0;   // overlong
        if (c == 0xF4 && b(1) >= 0x90) return 0;  // > U+10FFFF
        return 4;
    }
    return 0;
}

constexpr std::string_view replacement_char = "\xEF\xBF\xBD";

// Bytes to replace with one U+FFFD at an invalid sequence starting at s[i]: the maximal
// prefix of a well-formed sequence (at least 1), as Unicode recommends and Python's
// decode(errors="replace") does, so b"\xE2\x82" becomes one U+FFFD, not two.
std::size_t invalid_span(std::string_view s, std::size_t i) noexcept {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t need;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 1;
    }
    std::size_t k = 1;
    while (k < need && i + k < s.size()) {
        auto b = static_cast<unsigned char>(s[i + k]);
        bool ok = k == 1 ? (b >= lo && b <= hi) : (b & 0xC0) == 0x80;
        if (!ok) break;
        ++k;
    }
    return k;
}

// Appends the UTF-8 sequence at s[i], or U+FFFD for an invalid one; returns the bytes taken.
std::size_t append_sequence_or_replacement(std::string& out, std::string_view s, std::size_t i) {
    if (const auto n = utf8_sequence_length(s, i); n != 0) {
        out.append(s.data() + i, n);
        return n;
    }
    out.append(replacement_char);
    return invalid_span(s, i);
}

}  // namespace

// Strings in Salt data are mostly plain ASCII: 16 bytes are checked per step where SSE2
// exists (every x86-64).
std::size_t json_plain_prefix_long(std::string_view s) noexcept {
    const char* p = s.data();
    const std::size_t n = s.size();
    std::size_t i = 0;
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i backslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20);
    for (; i + 16 <= n; i += 16) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
        // A signed compare: bytes >= 0x80 are negative, so "< 0x20" catches them as well.
        const __m128i special =
            _mm_or_si128(_mm_cmplt_epi8(v, space),
                         _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)));
        if (const int mask = _mm_movemask_epi8(special)) return i + static_cast<std::size_t>(__builtin_ctz(mask));
    }
#endif
    while (i < n && json_plain_byte[static_cast<unsigned char>(p[i])]) ++i;
    return i;
}

void json_appender::grow(std::size_t n) {
    out_.resize(std::max(out_.size() * 2, pos_ + n + 256));
}

void json_appender::escaped_string(std::string_view s) {
    out_.resize(pos_);
    append_json_string(out_, s);
    pos_ = out_.size();
}

bool is_valid_utf8(std::string_view s) noexcept {
    for (std::size_t i = 0; i < s.size();) {
        auto n = utf8_sequence_length(s, i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

void append_utf8_replacing(std::string& out, std::string_view s) {
    for (std::size_t i = 0; i < s.size();) i += append_sequence_or_replacement(out, s, i);
}

void append_json_string(std::string& out, std::string_view s) {
    static constexpr char hex[] = "0123456789abcdef";
    out.push_back('"');
    std::size_t i = 0;
    while (i < s.size()) {
        // Copy runs of plain ASCII in one go: the common case.
        const std::size_t run = json_plain_prefix(s.substr(i));
        out.append(s.data() + i, run);
        i += run;
        if (i >= s.size()) break;
        auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x80) {
            i += append_sequence_or_replacement(out, s, i);
            continue;
        }
        switch (c) {
            case '"': out.append("\\\""); break;
            case '\\': out.append("\\\\"); break;
            case '\n': out.append("\\n"); break;
            case '\r': out.append("\\r"); break;
            case '\t': out.append("\\t"); break;
            case '\b': out.append("\\b"); break;
            case '\f': out.append("\\f"); break;
            default:
                out.append("\\u00");
                out.push_back(hex[c >> 4]);
                out.push_back(hex[c & 0xf]);
        }
        ++i;
    }
    out.push_back('"');
}

void json_writer::before_value() {
    if (after_key_) {
        after_key_ = false;
        return;
    }
    if (!stack_.empty()) {
        if (stack_.back()) out_.push_back(',');
        stack_.back() = true;
    }
}

void json_writer::begin_object() {
    before_value();
    out_.push_back('{');
    stack_.push_back(false);
}

void json_writer::end_object() {
    out_.push_back('}');
    stack_.pop_back();
}

void json_writer::begin_array() {
    before_value();
    out_.push_back('[');
    stack_.push_back(false);
}

void json_writer::end_array() {
    out_.push_back(']');
    stack_.pop_back();
}

void json_writer::key(std::string_view utf8) {
    before_value();
    append_json_string(out_, utf8);
    out_.push_back(':');
    after_key_ = true;
}

void json_writer::string(std::string_view s) {
    before_value();
    append_json_string(out_, s);
}

void json_writer::integer(std::int64_t v) {
    before_value();
    fmt::format_to(std::back_inserter(out_), "{}", v);
}

void json_writer::unsigned_integer(std::uint64_t v) {
    before_value();
    fmt::format_to(std::back_inserter(out_), "{}", v);
}

void json_writer::raw_number(std::string_view digits) {
    before_value();
    out_.append(digits);
}

void json_writer::number(double v) {
    before_value();
    if (std::isnan(v)) {
        out_.append("\"NaN\"");
    } else if (std::isinf(v)) {
        out_.append(v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
    } else {
        // Shortest representation that round-trips; keep a ".0" so it reads back as a float.
        auto start = out_.size();
        fmt::format_to(std::back_inserter(out_), "{}", v);
        auto text = std::string_view(out_).substr(start);
        if (text.find_first_of(".eE") == std::string_view::npos) out_.append(".0");
    }
}

void json_writer::boolean(bool v) {
    before_value();
    out_.append(v ? "true" : "false");
}

void json_writer::null() {
    before_value();
    out_.append("null");
}

void json_writer::base64_string(std::string_view data) {
    static constexpr char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    before_value();
    out_.push_back('"');
    std::size_t i = 0;
    auto byte = [&](std::size_t k) { return static_cast<unsigned char>(data[k]); };
    for (; i + 3 <= data.size(); i += 3) {
        std::uint32_t n = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
        out_.push_back(alphabet[(n >> 18) & 63]);
        out_.push_back(alphabet[(n >> 12) & 63]);
        out_.push_back(alphabet[(n >> 6) & 63]);
        out_.push_back(alphabet[n & 63]);
    }
    if (auto rest = data.size() - i; rest > 0) {
        std::uint32_t n = byte(i) << 16;
        if (rest == 2) n |= byte(i + 1) << 8;
        out_.push_back(alphabet[(n >> 18) & 63]);
        out_.push_back(alphabet[(n >> 12) & 63]);
        out_.push_back(rest == 2 ? alphabet[(n >> 6) & 63] : '=');
        out_.push_back('=');
    }
    out_.push_back('"');
}

std::string json_writer::take() noexcept {
    stack_.clear();
    after_key_ = false;
    return std::move(out_);
}

bool limit_payload_size(std::string& payload, std::size_t max_bytes, std::size_t head_bytes) {
    if (payload.size() <= max_bytes) return false;
    auto head_len = std::min(head_bytes, payload.size());
    // Do not cut inside a UTF-8 sequence: back off to a lead byte.
    while (head_len > 0 && head_len < payload.size() &&
           (static_cast<unsigned char>(payload[head_len]) & 0xC0) == 0x80)
        --head_len;
    std::string out;
    out.reserve(head_len + 128);
    out.append("{");
    append_json_string(out, truncation_marker_key);
    out.append(":\"size\",\"original_bytes\":");
    out.append(std::to_string(payload.size()));
    out.append(",\"head\":");
    append_json_string(out, std::string_view(payload).substr(0, head_len));
    out.append("}");
    payload = std::move(out);
    return true;
}

}  // namespace fastret
