// A streaming JSON writer that never fails on odd input.
//
// Strings are validated as UTF-8; invalid sequences become U+FFFD. Control characters are
// escaped. Non-finite doubles are written as strings ("NaN", "Infinity", "-Infinity"), since
// JSON has no literal for them. The writer tracks nesting depth so that callers (the Python
// object walker) can stop at a limit and write an explicit marker instead.
#pragma once

#include <array>
#include <cstdint>
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

// True if `s` is valid UTF-8.
bool is_valid_utf8(std::string_view s) noexcept;

// Marker objects written in place of data that was cut. Stable names so that a reader can
// find every cut with one query.
inline constexpr std::string_view truncation_marker_key = "__fastret_truncated__";

// If `payload` (JSON text) is larger than `max_bytes`, replace it with a marker object:
//   {"__fastret_truncated__": "size", "original_bytes": N, "head": "<first bytes as string>"}
// Returns true when it cut.
bool limit_payload_size(std::string& payload, std::size_t max_bytes, std::size_t head_bytes = 4096);

}  // namespace fastret
