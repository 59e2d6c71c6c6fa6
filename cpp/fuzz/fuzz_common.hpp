// Shared by the libFuzzer targets: a property check that aborts with a readable message, a
// reference UTF-8 decoder, a strict RFC 8259 JSON parser into a small tree, and a generator
// that drives fastret::json_writer with an API-valid call sequence taken from the fuzz input
// while building the tree the output must parse to.
//
// The references are written independently of the code under test (table-driven where the
// core uses branches) so that a shared mistake is unlikely.
#pragma once

#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fastret/json_writer.hpp"

namespace fuzz {

// A readable rendering of arbitrary bytes for failure messages (C escapes, cut at 400 bytes).
inline std::string show(std::string_view s) {
    std::string out = "\"";
    for (std::size_t i = 0; i < s.size() && i < 400; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c == '\\' || c == '"') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c >= 0x20 && c < 0x7f) {
            out += static_cast<char>(c);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        }
    }
    out += s.size() > 400 ? "\"... (" + std::to_string(s.size()) + " bytes)" : "\"";
    return out;
}

[[noreturn]] inline void fail(const char* file, int line, const char* cond,
                              const std::string& detail) {
    std::fprintf(stderr, "\n%s:%d: property violated: %s\n%s\n", file, line, cond, detail.c_str());
    std::fflush(stderr);
    std::abort();  // libFuzzer reports the input as a crash and saves it
}

// `detail` is evaluated only when the check fails.
#define FUZZ_CHECK(cond, detail)                                        \
    do {                                                                \
        if (!(cond)) ::fuzz::fail(__FILE__, __LINE__, #cond, (detail)); \
    } while (0)

// With FASTRET_FUZZ_TRACE set, harnesses say what they built from an input (to see what a
// crash input or a seed means: `FASTRET_FUZZ_TRACE=1 build/fuzz/cpp/fuzz/fuzz_x FILE`).
inline void trace(const std::string& what) {
    static const bool on = std::getenv("FASTRET_FUZZ_TRACE") != nullptr;
    if (on) std::fprintf(stderr, "trace: %s\n", what.c_str());
}

// ---- UTF-8 (Unicode 15, table 3-7 "well-formed UTF-8 byte sequences") ----

struct utf8_lead {
    int len;               // 0: not a lead byte
    unsigned char lo, hi;  // allowed range of the second byte
};

inline utf8_lead utf8_lead_of(unsigned char c) noexcept {
    static const struct {
        unsigned char first, last;
        utf8_lead lead;
    } rows[] = {
        {0x00, 0x7F, {1, 0, 0}},       {0xC2, 0xDF, {2, 0x80, 0xBF}}, {0xE0, 0xE0, {3, 0xA0, 0xBF}},
        {0xE1, 0xEC, {3, 0x80, 0xBF}}, {0xED, 0xED, {3, 0x80, 0x9F}}, {0xEE, 0xEF, {3, 0x80, 0xBF}},
        {0xF0, 0xF0, {4, 0x90, 0xBF}}, {0xF1, 0xF3, {4, 0x80, 0xBF}}, {0xF4, 0xF4, {4, 0x80, 0x8F}},
    };
    for (const auto& r : rows)
        if (c >= r.first && c <= r.last) return r.lead;
    return {0, 0, 0};
}

// Length of the well-formed sequence at s[i], or 0; `span` gets the maximal subpart (the
// bytes one U+FFFD replaces when the sequence is ill-formed, at least 1).
inline int utf8_at(std::string_view s, std::size_t i, std::size_t* span = nullptr) noexcept {
    const utf8_lead l = utf8_lead_of(static_cast<unsigned char>(s[i]));
    std::size_t k = 1;
    if (l.len > 1) {
        for (; k < static_cast<std::size_t>(l.len) && i + k < s.size(); ++k) {
            const auto b = static_cast<unsigned char>(s[i + k]);
            const unsigned char lo = k == 1 ? l.lo : 0x80, hi = k == 1 ? l.hi : 0xBF;
            if (b < lo || b > hi) break;
        }
    }
    if (span) *span = k;
    return l.len > 0 && k == static_cast<std::size_t>(l.len) ? l.len : 0;
}

inline bool utf8_valid(std::string_view s) noexcept {
    for (std::size_t i = 0; i < s.size();) {
        const int n = utf8_at(s, i);
        if (n == 0) return false;
        i += static_cast<std::size_t>(n);
    }
    return true;
}

// `s` with every maximal ill-formed subpart replaced by U+FFFD (what Python's
// decode(errors="replace") and the WHATWG encoding standard do).
inline std::string utf8_replace(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size();) {
        std::size_t span = 1;
        const int n = utf8_at(s, i, &span);
        if (n > 0) {
            out.append(s.substr(i, static_cast<std::size_t>(n)));
            i += static_cast<std::size_t>(n);
        } else {
            out.append("\xEF\xBF\xBD");
            i += span;
        }
    }
    return out;
}

inline void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

// A valid UTF-8 string of up to `max_cps` code points, mostly ASCII with some of every length.
inline std::string valid_utf8_string(FuzzedDataProvider& fdp, std::size_t max_cps) {
    std::string s;
    const auto n = fdp.ConsumeIntegralInRange<std::size_t>(0, max_cps);
    for (std::size_t i = 0; i < n && fdp.remaining_bytes() > 0; ++i) {
        std::uint32_t cp;
        switch (fdp.ConsumeIntegralInRange(0, 4)) {
            case 0:
                cp = fdp.ConsumeIntegralInRange<std::uint32_t>(0x80, 0x7FF);
                break;
            case 1:
                cp = fdp.ConsumeIntegralInRange<std::uint32_t>(0x800, 0xFFFF);
                break;
            case 2:
                cp = fdp.ConsumeIntegralInRange<std::uint32_t>(0x10000, 0x10FFFF);
                break;
            default:
                cp = fdp.ConsumeIntegralInRange<std::uint32_t>(0, 0x7F);
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
        append_utf8(s, cp);
    }
    return s;
}

// Arbitrary bytes or (half the time) valid UTF-8, so that both kinds of input are common.
inline std::string any_string(FuzzedDataProvider& fdp, std::size_t max_len) {
    if (fdp.ConsumeBool()) return valid_utf8_string(fdp, max_len / 2);
    return fdp.ConsumeRandomLengthString(max_len);
}

// ---- JSON ----

struct jmember;

struct jvalue {
    enum kind_t { null_v, bool_v, number_v, string_v, array_v, object_v } kind = null_v;
    bool b = false;
    std::string text;        // a number's text as written, or a string's decoded UTF-8
    bool is_double = false;  // expected trees only: `dbl` must be what the number text reads as
    double dbl = 0;
    std::vector<jvalue> items;
    std::vector<jmember> members;

    static jvalue null();
    static jvalue boolean(bool v);
    static jvalue number(std::string t);
    static jvalue string(std::string t);
    static jvalue array();
    static jvalue object();
};

struct jmember {
    jmember(std::string k, jvalue v) : first(std::move(k)), second(std::move(v)) {}
    std::string first;  // the key, decoded
    jvalue second;
};

inline jvalue jvalue::null() { return {}; }
inline jvalue jvalue::boolean(bool v) {
    jvalue j;
    j.kind = bool_v;
    j.b = v;
    return j;
}
inline jvalue jvalue::number(std::string t) {
    jvalue j;
    j.kind = number_v;
    j.text = std::move(t);
    return j;
}
inline jvalue jvalue::string(std::string t) {
    jvalue j;
    j.kind = string_v;
    j.text = std::move(t);
    return j;
}
inline jvalue jvalue::array() {
    jvalue j;
    j.kind = array_v;
    return j;
}
inline jvalue jvalue::object() {
    jvalue j;
    j.kind = object_v;
    return j;
}

inline std::string dump(const jvalue& v) {
    switch (v.kind) {
        case jvalue::null_v:
            return "null";
        case jvalue::bool_v:
            return v.b ? "true" : "false";
        case jvalue::number_v:
            return v.is_double ? "double:" + std::to_string(v.dbl) : v.text;
        case jvalue::string_v:
            return show(v.text);
        case jvalue::array_v: {
            std::string s = "[";
            for (const auto& i : v.items) s += dump(i) + ",";
            return s + "]";
        }
        case jvalue::object_v: {
            std::string s = "{";
            for (const auto& [k, i] : v.members) s += show(k) + ":" + dump(i) + ",";
            return s + "}";
        }
    }
    return "?";
}

// `expected` (built alongside the writer calls) against `got` (parsed from the output).
inline bool same(const jvalue& expected, const jvalue& got) {
    if (expected.kind != got.kind) return false;
    switch (expected.kind) {
        case jvalue::null_v:
            return true;
        case jvalue::bool_v:
            return expected.b == got.b;
        case jvalue::number_v:
            if (expected.is_double) {
                // Shortest round-trip form, with a fraction or exponent so it reads back as a
                // float.
                if (got.text.find_first_of(".eE") == std::string::npos) return false;
                const double back = std::strtod(got.text.c_str(), nullptr);
                return std::memcmp(&back, &expected.dbl, sizeof back) == 0;
            }
            return expected.text == got.text;
        case jvalue::string_v:
            return expected.text == got.text;
        case jvalue::array_v:
            if (expected.items.size() != got.items.size()) return false;
            for (std::size_t i = 0; i < expected.items.size(); ++i)
                if (!same(expected.items[i], got.items[i])) return false;
            return true;
        case jvalue::object_v:
            if (expected.members.size() != got.members.size()) return false;
            for (std::size_t i = 0; i < expected.members.size(); ++i)
                if (expected.members[i].first != got.members[i].first ||
                    !same(expected.members[i].second, got.members[i].second))
                    return false;
            return true;
    }
    return false;
}

// Strict RFC 8259: one value, only JSON whitespace around it, no control characters inside
// strings, well-formed UTF-8 only, escapes checked (a lone surrogate escape is refused), and
// the number grammar exactly. Returns false with `error` set on anything else.
class json_parser {
public:
    explicit json_parser(std::string_view s) : s_(s) {}

    bool parse_document(jvalue& out) {
        ws();
        if (!value(out, 0)) return false;
        ws();
        if (i_ != s_.size()) return err("trailing bytes");
        return true;
    }
    const std::string& error() const { return error_; }
    std::size_t where() const { return i_; }

private:
    bool err(const char* what) {
        if (error_.empty()) error_ = std::string(what) + " at byte " + std::to_string(i_);
        return false;
    }
    bool eat(char c) {
        if (i_ < s_.size() && s_[i_] == c) {
            ++i_;
            return true;
        }
        return false;
    }
    void ws() {
        while (i_ < s_.size() &&
               (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
            ++i_;
    }
    bool literal(std::string_view lit) {
        if (s_.substr(i_, lit.size()) != lit) return err("bad literal");
        i_ += lit.size();
        return true;
    }
    bool digits(std::string& t) {
        const std::size_t start = i_;
        while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') t += s_[i_++];
        return i_ > start;
    }
    bool number(std::string& t) {
        if (eat('-')) t += '-';
        if (eat('0')) {
            t += '0';
        } else if (i_ < s_.size() && s_[i_] >= '1' && s_[i_] <= '9') {
            digits(t);
        } else {
            return err("bad number");
        }
        if (eat('.')) {
            t += '.';
            if (!digits(t)) return err("no digits after '.'");
        }
        if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
            t += s_[i_++];
            if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) t += s_[i_++];
            if (!digits(t)) return err("no digits in exponent");
        }
        return true;
    }
    bool hex4(std::uint32_t& v) {
        if (s_.size() - i_ < 4) return err("short \\u escape");
        v = 0;
        for (int k = 0; k < 4; ++k) {
            const char c = s_[i_++];
            v <<= 4;
            if (c >= '0' && c <= '9')
                v |= static_cast<std::uint32_t>(c - '0');
            else if (c >= 'a' && c <= 'f')
                v |= static_cast<std::uint32_t>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F')
                v |= static_cast<std::uint32_t>(c - 'A' + 10);
            else
                return err("bad hex digit");
        }
        return true;
    }
    bool string(std::string& t) {
        if (!eat('"')) return err("expected string");
        while (true) {
            if (i_ >= s_.size()) return err("unterminated string");
            const auto c = static_cast<unsigned char>(s_[i_]);
            if (c == '"') {
                ++i_;
                return true;
            }
            if (c < 0x20) return err("raw control character in string");
            if (c == '\\') {
                ++i_;
                if (i_ >= s_.size()) return err("unterminated escape");
                const char e = s_[i_++];
                switch (e) {
                    case '"':
                        t += '"';
                        break;
                    case '\\':
                        t += '\\';
                        break;
                    case '/':
                        t += '/';
                        break;
                    case 'b':
                        t += '\b';
                        break;
                    case 'f':
                        t += '\f';
                        break;
                    case 'n':
                        t += '\n';
                        break;
                    case 'r':
                        t += '\r';
                        break;
                    case 't':
                        t += '\t';
                        break;
                    case 'u': {
                        std::uint32_t cp;
                        if (!hex4(cp)) return false;
                        if (cp >= 0xDC00 && cp <= 0xDFFF) return err("lone low surrogate escape");
                        if (cp >= 0xD800 && cp <= 0xDBFF) {
                            std::uint32_t lo;
                            if (!eat('\\') || !eat('u') || !hex4(lo) || lo < 0xDC00 || lo > 0xDFFF)
                                return err("lone high surrogate escape");
                            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        }
                        append_utf8(t, cp);
                        break;
                    }
                    default:
                        return err("bad escape");
                }
                continue;
            }
            const int n = utf8_at(s_, i_);
            if (n == 0) return err("ill-formed UTF-8 in string");
            t.append(s_.substr(i_, static_cast<std::size_t>(n)));
            i_ += static_cast<std::size_t>(n);
        }
    }
    bool value(jvalue& v, int depth) {
        if (depth > 512) return err("too deep");
        if (i_ >= s_.size()) return err("expected a value");
        switch (s_[i_]) {
            case 'n':
                v = jvalue::null();
                return literal("null");
            case 't':
                v = jvalue::boolean(true);
                return literal("true");
            case 'f':
                v = jvalue::boolean(false);
                return literal("false");
            case '"':
                v = jvalue::string({});
                return string(v.text);
            case '[': {
                ++i_;
                v = jvalue::array();
                ws();
                if (eat(']')) return true;
                while (true) {
                    v.items.emplace_back();
                    ws();
                    if (!value(v.items.back(), depth + 1)) return false;
                    ws();
                    if (eat(']')) return true;
                    if (!eat(',')) return err("expected ',' or ']'");
                }
            }
            case '{': {
                ++i_;
                v = jvalue::object();
                ws();
                if (eat('}')) return true;
                while (true) {
                    ws();
                    std::string k;
                    if (!string(k)) return false;
                    ws();
                    if (!eat(':')) return err("expected ':'");
                    ws();
                    v.members.emplace_back(std::move(k), jvalue{});
                    if (!value(v.members.back().second, depth + 1)) return false;
                    ws();
                    if (eat('}')) return true;
                    if (!eat(',')) return err("expected ',' or '}'");
                }
            }
            default:
                v = jvalue::number({});
                return number(v.text);
        }
    }

    std::string_view s_;
    std::size_t i_ = 0;
    std::string error_;
};

// Parses `text` or fails the run, naming what the text came from.
inline jvalue must_parse(std::string_view text, const char* what) {
    json_parser p(text);
    jvalue v;
    FUZZ_CHECK(p.parse_document(v),
               std::string(what) + " is not valid JSON (" + p.error() + "): " + show(text));
    return v;
}

// RFC 4648 base64 with padding, written the obvious way.
inline std::string base64(std::string_view data) {
    static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    std::uint32_t acc = 0;
    int bits = 0;
    for (unsigned char c : data) {
        acc = (acc << 8) | c;
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out += abc[(acc >> bits) & 63];
        }
    }
    if (bits > 0) out += abc[(acc << (6 - bits)) & 63];
    while (out.size() % 4) out += '=';
    return out;
}

// A number text in JSON syntax (what raw_number() callers vouch for).
inline std::string json_number_text(FuzzedDataProvider& fdp) {
    std::string t;
    if (fdp.ConsumeBool()) t += '-';
    const int n = fdp.ConsumeIntegralInRange(1, 24);
    for (int k = 0; k < n; ++k)
        t += static_cast<char>('0' + (k == 0 && n > 1 ? fdp.ConsumeIntegralInRange(1, 9)
                                                      : fdp.ConsumeIntegralInRange(0, 9)));
    if (fdp.ConsumeBool()) {
        t += '.';
        for (int k = fdp.ConsumeIntegralInRange(1, 8); k > 0; --k)
            t += static_cast<char>('0' + fdp.ConsumeIntegralInRange(0, 9));
    }
    if (fdp.ConsumeBool()) {
        t += fdp.ConsumeBool() ? 'e' : 'E';
        if (const int sign = fdp.ConsumeIntegralInRange(0, 2)) t += sign == 1 ? '+' : '-';
        for (int k = fdp.ConsumeIntegralInRange(1, 3); k > 0; --k)
            t += static_cast<char>('0' + fdp.ConsumeIntegralInRange(0, 9));
    }
    return t;
}

// Drives `w` with one value (recursively) chosen by the input, spending at most `budget`
// calls, and returns the tree the output must parse to. `base64` values are expected as the
// reference encoding, strings as their U+FFFD-replaced form.
class json_generator {
public:
    json_generator(FuzzedDataProvider& fdp, int budget, int max_depth)
        : fdp_(fdp), budget_(budget), max_depth_(max_depth) {}

    jvalue value(fastret::json_writer& w, int depth = 0) {
        --budget_;
        const bool leaf_only = budget_ <= 0 || depth >= max_depth_ || fdp_.remaining_bytes() == 0;
        switch (fdp_.ConsumeIntegralInRange(0, leaf_only ? 8 : 10)) {
            case 0:
                w.null();
                return jvalue::null();
            case 1: {
                const bool b = fdp_.ConsumeBool();
                w.boolean(b);
                return jvalue::boolean(b);
            }
            case 2: {
                const auto v = fdp_.ConsumeIntegral<std::int64_t>();
                w.integer(v);
                return jvalue::number(std::to_string(v));
            }
            case 3: {
                const auto v = fdp_.ConsumeIntegral<std::uint64_t>();
                w.unsigned_integer(v);
                return jvalue::number(std::to_string(v));
            }
            case 4: {
                double d;
                switch (fdp_.ConsumeIntegralInRange(0, 3)) {
                    case 0: {  // any bit pattern: NaNs, infinities, subnormals, -0.0
                        const auto bits = fdp_.ConsumeIntegral<std::uint64_t>();
                        std::memcpy(&d, &bits, sizeof d);
                        break;
                    }
                    case 1:
                        d = static_cast<double>(fdp_.ConsumeIntegral<std::int32_t>());
                        break;
                    default:
                        d = fdp_.ConsumeFloatingPoint<double>();
                }
                w.number(d);
                if (std::isnan(d)) return jvalue::string("NaN");
                if (std::isinf(d)) return jvalue::string(d > 0 ? "Infinity" : "-Infinity");
                jvalue j = jvalue::number({});
                j.is_double = true;
                j.dbl = d;
                return j;
            }
            case 5: {
                const std::string s = fdp_.ConsumeRandomLengthString(48);
                w.base64_string(s);
                return jvalue::string(base64(s));
            }
            case 6: {
                const std::string t = json_number_text(fdp_);
                w.raw_number(t);
                return jvalue::number(t);
            }
            case 7: {
                const std::string s = valid_utf8_string(fdp_, 24);
                w.string(s);
                return jvalue::string(s);  // valid UTF-8 survives unchanged
            }
            case 8: {
                const std::string s = fdp_.ConsumeRandomLengthString(48);
                w.string(s);
                return jvalue::string(utf8_replace(s));
            }
            case 9: {
                w.begin_object();
                jvalue o = jvalue::object();
                const int n = fdp_.ConsumeIntegralInRange(0, 5);
                for (int k = 0; k < n && budget_ > 0; ++k) {
                    const std::string key = any_string(fdp_, 24);
                    w.key(key);
                    o.members.emplace_back(utf8_replace(key), value(w, depth + 1));
                }
                w.end_object();
                return o;
            }
            default: {
                w.begin_array();
                jvalue a = jvalue::array();
                const int n = fdp_.ConsumeIntegralInRange(0, 5);
                for (int k = 0; k < n && budget_ > 0; ++k) a.items.push_back(value(w, depth + 1));
                w.end_array();
                return a;
            }
        }
    }

private:
    FuzzedDataProvider& fdp_;
    int budget_;
    int max_depth_;
};

}  // namespace fuzz
