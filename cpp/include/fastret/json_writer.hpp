// A streaming JSON writer that never fails on odd input.
//
// Strings are validated as UTF-8; invalid sequences become U+FFFD. Control characters are
// escaped. Non-finite doubles are written as strings ("NaN", "Infinity", "-Infinity"), since
// JSON has no literal for them. The writer tracks nesting depth so that callers (the Python
// object walker) can stop at a limit and write an explicit marker instead.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace fastret {

class json_writer {
public:
    json_writer() = default;

    void begin_object();
    void end_object();
    void begin_array();
    void end_array();
    // An object key; must be followed by exactly one value.
    void key(std::string_view utf8);
    void string(std::string_view maybe_utf8);
    void integer(std::int64_t v);
    void unsigned_integer(std::uint64_t v);
    // A number already in JSON syntax (e.g. a Python int beyond 64 bits). The caller vouches
    // for the syntax.
    void raw_number(std::string_view digits);
    void number(double v);
    void boolean(bool v);
    void null();
    // Base64 (RFC 4648, with padding) of `data`, as a JSON string.
    void base64_string(std::string_view data);

    std::size_t depth() const noexcept { return stack_.size(); }
    std::size_t size() const noexcept { return out_.size(); }
    const std::string& str() const noexcept { return out_; }
    std::string take() noexcept;
    void reserve(std::size_t n) { out_.reserve(n); }

private:
    void before_value();
    std::string out_;
    // One entry per open container: true once it has at least one member.
    std::vector<bool> stack_;
    bool after_key_ = false;
};

// Append `s` to `out` as a quoted JSON string, replacing invalid UTF-8 with U+FFFD.
void append_json_string(std::string& out, std::string_view s);

// Bytes that append_json_string() copies as they are: printable ASCII other than '"' and '\\'.
inline constexpr auto json_plain_byte = [] {
    std::array<bool, 256> t{};
    for (int c = 0x20; c < 0x80; ++c) t[c] = c != '"' && c != '\\';
    return t;
}();

// json_plain_prefix() for strings of 16 bytes or more (vectorized where the CPU allows).
std::size_t json_plain_prefix_long(std::string_view s) noexcept;

// The length of the longest prefix of `s` made of json_plain_byte bytes. A string that is all
// prefix needs no escaping at all. Inline: most keys and many values are a few bytes long.
inline std::size_t json_plain_prefix(std::string_view s) noexcept {
    if (s.size() >= 16) return json_plain_prefix_long(s);
    std::size_t i = 0;
    while (i < s.size() && json_plain_byte[static_cast<unsigned char>(s[i])]) ++i;
    return i;
}

// True if none of the 8 bytes of `w` is escaped in a JSON string (see json_plain_byte): no
// byte below 0x20 or from 0x80, no '"', no '\\'. Each test is exact for "some byte is".
constexpr bool json_plain_word(std::uint64_t w) noexcept {
    constexpr std::uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    const auto has_zero = [](std::uint64_t v) { return (v - ones) & ~v & highs; };
    const std::uint64_t below_space = (w - ones * 0x20) & ~w & highs;
    return (below_space | (w & highs) | has_zero(w ^ (ones * '"')) | has_zero(w ^ (ones * '\\'))) == 0;
}
static_assert(json_plain_word(0x6162636465666768ull) && !json_plain_word(0x6162632265666768ull) &&
              !json_plain_word(0x616263645c666768ull) && !json_plain_word(0x616263641f666768ull) &&
              !json_plain_word(0x61626364e9666768ull) && json_plain_word(0x7f7e7d7c7b7a2120ull));

// Appends JSON text to a std::string through a cursor, for encoders on a hot path: the
// string is kept longer than the text while writing (room() makes space for a whole value at
// once), so that each byte is stored without a capacity check of its own. The destructor (or
// finish()) trims the string to the text. Strings come out as append_json_string() writes
// them; one with nothing to escape, the usual case, is checked and copied in one go.
class json_appender {
public:
    explicit json_appender(std::string& out) : out_(out), pos_(out.size()) {}
    ~json_appender() { finish(); }
    json_appender(const json_appender&) = delete;
    json_appender& operator=(const json_appender&) = delete;

    // Space for n more bytes at the cursor (valid until the next call).
    char* room(std::size_t n) {
        if (out_.size() - pos_ < n) grow(n);
        return out_.data() + pos_;
    }
    void advance(std::size_t n) noexcept { pos_ += n; }
    void put(char c) {
        *room(1) = c;
        ++pos_;
    }
    void put(std::string_view v) {
        if (!v.empty()) std::memcpy(room(v.size()), v.data(), v.size());
        pos_ += v.size();
    }
    // A quoted JSON string.
    void string(std::string_view s) {
        char* p = room(s.size() + 2);
        if (s.size() < 16 ? copy_if_plain_short(p + 1, s.data(), s.size())
                          : json_plain_prefix_long(s) == s.size()) {
            if (s.size() >= 16) std::memcpy(p + 1, s.data(), s.size());
            p[0] = '"';
            p[s.size() + 1] = '"';
            pos_ += s.size() + 2;
            return;
        }
        escaped_string(s);
    }
    std::size_t size() const noexcept { return pos_; }
    char* data() noexcept { return out_.data(); }
    void finish() { out_.resize(pos_); }

private:
    // Copies s[0, n) (n < 16) to dst and returns true if no byte needs escaping; false (dst
    // unspecified) otherwise. Two overlapping words instead of a byte loop and a memcpy call.
    static bool copy_if_plain_short(char* dst, const char* s, std::size_t n) noexcept {
        if (n >= 8) {
            std::uint64_t a, b;
            std::memcpy(&a, s, 8);
            std::memcpy(&b, s + n - 8, 8);
            if (!json_plain_word(a) || !json_plain_word(b)) return false;
            std::memcpy(dst, &a, 8);
            std::memcpy(dst + n - 8, &b, 8);
            return true;
        }
        if (n >= 4) {
            std::uint32_t a, b;
            std::memcpy(&a, s, 4);
            std::memcpy(&b, s + n - 4, 4);
            constexpr std::uint64_t spaces = 0x20202020ull << 32;  // plain filler, top half
            if (!json_plain_word(a | spaces) || !json_plain_word(b | spaces)) return false;
            std::memcpy(dst, &a, 4);
            std::memcpy(dst + n - 4, &b, 4);
            return true;
        }
        for (std::size_t i = 0; i < n; ++i) {
            if (!json_plain_byte[static_cast<unsigned char>(s[i])]) return false;
            dst[i] = s[i];
        }
        return true;
    }

    void grow(std::size_t n);
    void escaped_string(std::string_view s);

    std::string& out_;
    std::size_t pos_;
};

// True if `s` is valid UTF-8.
bool is_valid_utf8(std::string_view s) noexcept;

// Appends `s` with each maximal ill-formed UTF-8 subpart replaced by one U+FFFD (as JSON
// strings are written, and as Python's decode(errors="replace") reads), so that every encoder
// replaces bad bytes alike.
void append_utf8_replacing(std::string& out, std::string_view s);

// Marker objects written in place of data that was cut. Stable names so that a reader can
// find every cut with one query.
inline constexpr std::string_view truncation_marker_key = "__fastret_truncated__";

// If `payload` (JSON text) is larger than `max_bytes`, replace it with a marker object:
//   {"__fastret_truncated__": "size", "original_bytes": N, "head": "<first bytes as string>"}
// Returns true when it cut.
bool limit_payload_size(std::string& payload, std::size_t max_bytes, std::size_t head_bytes = 4096);

}  // namespace fastret
