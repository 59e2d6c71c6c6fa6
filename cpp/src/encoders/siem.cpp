#include "encoders/siem.hpp"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "encoders/json_lines.hpp"
#include "fastret/json_writer.hpp"

namespace fastret {

namespace {

std::size_t skip_ws(std::string_view s, std::size_t i) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
    return i;
}

// End of the JSON string starting at s[i] == '"' (index after the closing quote).
std::size_t skip_string(std::string_view s, std::size_t i) {
    ++i;
    while (i < s.size()) {
        if (s[i] == '\\') i += 2;
        else if (s[i] == '"') return i + 1;
        else ++i;
    }
    return std::string_view::npos;
}

std::size_t skip_value(std::string_view s, std::size_t i) {
    i = skip_ws(s, i);
    if (i >= s.size()) return std::string_view::npos;
    char c = s[i];
    if (c == '"') return skip_string(s, i);
    if (c == '{' || c == '[') {
        int depth = 0;
        while (i < s.size()) {
            char d = s[i];
            if (d == '"') {
                i = skip_string(s, i);
                if (i == std::string_view::npos) return i;
                continue;
            }
            if (d == '{' || d == '[') ++depth;
            if (d == '}' || d == ']') {
                if (--depth == 0) return i + 1;
            }
            ++i;
        }
        return std::string_view::npos;
    }
    while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' &&
           s[i] != '\n' && s[i] != '\r' && s[i] != '\t')
        ++i;
    return i;
}

template <class F>
void for_each_member(std::string_view obj, F&& f) {
    std::size_t i = skip_ws(obj, 0);
    if (i >= obj.size() || obj[i] != '{') return;
    ++i;
    for (;;) {
        i = skip_ws(obj, i);
        if (i >= obj.size() || obj[i] != '"') return;
        std::size_t kend = skip_string(obj, i);
        if (kend == std::string_view::npos) return;
        std::string_view key = obj.substr(i + 1, kend - i - 2);
        i = skip_ws(obj, kend);
        if (i >= obj.size() || obj[i] != ':') return;
        std::size_t vstart = skip_ws(obj, i + 1);
        std::size_t vend = skip_value(obj, vstart);
        if (vend == std::string_view::npos) return;
        if (!f(key, obj.substr(vstart, vend - vstart))) return;
        i = skip_ws(obj, vend);
        if (i >= obj.size() || obj[i] != ',') return;
        ++i;
    }
}

std::optional<double> as_number(std::string_view v) {
    if (v.empty() || !(v[0] == '-' || (v[0] >= '0' && v[0] <= '9'))) return std::nullopt;
    std::string tmp(v);
    char* end = nullptr;
    double d = std::strtod(tmp.c_str(), &end);
    if (end != tmp.c_str() + tmp.size() || !std::isfinite(d)) return std::nullopt;
    return d;
}

// A JSON string value without escapes, as is; with escapes, nullopt (user names with escapes
// are rare; they are then left out rather than mis-decoded).
std::optional<std::string_view> as_plain_string(std::string_view v) {
    if (v.size() < 2 || v.front() != '"' || v.back() != '"') return std::nullopt;
    v = v.substr(1, v.size() - 2);
    if (v.find('\\') != std::string_view::npos || v.empty()) return std::nullopt;
    return v;
}

void append_int(std::string& out, std::int64_t v) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
}

void append_payload(std::string& out, std::string_view payload) {
    if (payload.empty()) {
        out.append("null");
        return;
    }
    std::size_t start = out.size();
    out.append(payload);
    if (std::memchr(payload.data(), '\n', payload.size()) ||
        std::memchr(payload.data(), '\r', payload.size()))
        for (std::size_t i = start; i < out.size(); ++i)
            if (out[i] == '\n' || out[i] == '\r') out[i] = ' ';
}

void field(std::string& out, bool& first, std::string_view key, std::string_view value) {
    if (value.empty()) return;
    if (!first) out.push_back(',');
    first = false;
    out.push_back('"');
    out.append(key);
    out.append("\":");
    append_json_string(out, value);
}

std::string_view outcome_of(const record& r) {
    return r.success == 1 ? "success" : r.success == 0 ? "failure" : "unknown";
}

std::string summary_of(const record& r) {
    std::string s = "salt ";
    s.append(to_string(r.kind));
    if (!r.fun.empty()) s.append(" ").append(r.fun);
    else if (!r.tag.empty()) s.append(" ").append(r.tag);
    if (!r.minion.empty()) s.append(" on ").append(r.minion);
    if (!r.jid.empty()) s.append(" jid ").append(r.jid);
    if (r.success >= 0) s.append(r.success ? ": success" : ": failure");
    return s;
}

}  // namespace

std::optional<std::string_view> json_member(std::string_view object, std::string_view key) {
    std::optional<std::string_view> found;
    for_each_member(object, [&](std::string_view k, std::string_view v) {
        if (k == key) {
            found = v;
            return false;
        }
        return true;
    });
    return found;
}

// Milliseconds to nanoseconds; nullopt when that is outside int64 (llround is undefined there).
std::optional<std::int64_t> ms_to_ns(double ms) {
    const double ns = std::round(ms * 1e6);
    if (!(ns >= -9223372036854775808.0 && ns < 9223372036854775808.0)) return std::nullopt;
    return static_cast<std::int64_t>(ns);
}

std::optional<std::int64_t> payload_duration_ns(std::string_view payload) {
    if (auto d = json_member(payload, "duration"))
        if (auto ms = as_number(*d)) return ms_to_ns(*ms);
    auto ret = json_member(payload, "return");
    if (!ret) return std::nullopt;
    double total = 0;
    bool any = false;
    for_each_member(*ret, [&](std::string_view, std::string_view state) {
        if (!state.empty() && state[0] == '{')
            if (auto d = json_member(state, "duration"))
                if (auto ms = as_number(*d)) {
                    total += *ms;
                    any = true;
                }
        return true;
    });
    if (!any) return std::nullopt;
    return ms_to_ns(total);
}

void encode_ecs(const record& r, std::string& out) {
    out.reserve(out.size() + r.payload.size() + 512);
    out.append("{\"@timestamp\":\"");
    out.append(format_rfc3339_us(r.ts_us));
    out.append("\",\"ecs\":{\"version\":\"8.11.0\"},\"event\":{\"kind\":\"event\",");
    const bool state = r.fun.starts_with("state.");
    if (state) out.append("\"category\":[\"configuration\"],\"type\":[\"change\"]");
    else if (r.kind == record_kind::event && r.fun.empty())
        out.append("\"category\":[\"host\"],\"type\":[\"info\"]");
    else out.append("\"category\":[\"process\"],\"type\":[\"info\"]");
    bool first = false;
    field(out, first, "action", r.fun);
    field(out, first, "outcome", outcome_of(r));
    field(out, first, "id", r.id);
    out.append(",\"dataset\":\"salt.");
    out.append(to_string(r.kind));
    out.append("\",\"module\":\"salt\"");
    if (auto ns = payload_duration_ns(r.payload)) {
        out.append(",\"duration\":");
        append_int(out, *ns);
    }
    out.push_back('}');
    if (!r.minion.empty()) {
        out.append(",\"host\":{\"name\":");
        append_json_string(out, r.minion);
        out.push_back('}');
    }
    if (auto u = json_member(r.payload, "user"))
        if (auto name = as_plain_string(*u)) {
            out.append(",\"user\":{\"name\":");
            append_json_string(out, *name);
            out.push_back('}');
        }
    out.append(",\"message\":");
    append_json_string(out, summary_of(r));
    out.append(",\"salt\":{\"kind\":\"");
    out.append(to_string(r.kind));
    out.push_back('"');
    first = false;
    field(out, first, "jid", r.jid);
    field(out, first, "fun", r.fun);
    field(out, first, "tag", r.tag);
    field(out, first, "minion", r.minion);
    if (r.success >= 0) out.append(r.success ? ",\"success\":true" : ",\"success\":false");
    if (r.retcode) {
        out.append(",\"retcode\":");
        append_int(out, *r.retcode);
    }
    out.append(",\"data\":");
    append_payload(out, r.payload);
    out.append("}}");
}

void encode_gelf(const record& r, std::string& out) {
    out.append("{\"version\":\"1.1\",\"host\":");
    append_json_string(out, r.minion.empty() ? std::string_view("-") : std::string_view(r.minion));
    out.append(",\"short_message\":");
    append_json_string(out, summary_of(r));
    out.append(",\"full_message\":");
    append_json_string(out, r.payload.empty() ? std::string_view("null") : std::string_view(r.payload));
    // seconds.microseconds (floor division for times before the epoch)
    std::int64_t s = r.ts_us / 1000000, us = r.ts_us % 1000000;
    if (us < 0) {
        us += 1000000;
        s -= 1;
    }
    out.append(",\"timestamp\":");
    append_int(out, s);
    char frac[8];
    std::snprintf(frac, sizeof frac, ".%06lld", static_cast<long long>(us));
    out.append(frac);
    out.append(",\"level\":");
    out.push_back(r.success == 0 ? '3' : '6');
    bool first = false;
    field(out, first, "_record_id", r.id);
    field(out, first, "_salt_kind", to_string(r.kind));
    field(out, first, "_jid", r.jid);
    field(out, first, "_fun", r.fun);
    field(out, first, "_tag", r.tag);
    if (r.success >= 0) out.append(r.success ? ",\"_success\":\"true\"" : ",\"_success\":\"false\"");
    if (r.retcode) {
        out.append(",\"_retcode\":");
        append_int(out, *r.retcode);
    }
    out.push_back('}');
}

namespace {

// Header field: valid UTF-8 (ill-formed subparts as U+FFFD), '\' and '|' escaped, CR, LF
// and NUL as spaces (the header has no escape for them).
void cef_header(std::string& out, std::string_view v) {
    std::string clean;
    if (!is_valid_utf8(v)) {
        append_utf8_replacing(clean, v);
        v = clean;
    }
    for (char c : v) {
        if (c == '\\' || c == '|') out.push_back('\\');
        if (c == '\r' || c == '\n' || c == '\0') c = ' ';
        out.push_back(c);
    }
}

// Extension value: valid UTF-8 (ill-formed subparts as U+FFFD), '\', '=' and CR/LF escaped.
// NUL has no CEF escape ("\u0000" would read as text): it becomes U+FFFD.
void cef_value(std::string& out, std::string_view v) {
    std::string clean;
    if (!is_valid_utf8(v)) {
        append_utf8_replacing(clean, v);
        v = clean;
    }
    for (char c : v) {
        switch (c) {
            case '\\': out.append("\\\\"); break;
            case '=': out.append("\\="); break;
            case '\n': out.append("\\n"); break;
            case '\r': out.append("\\r"); break;
            case '\0': out.append("\xEF\xBF\xBD"); break;
            default: out.push_back(c);
        }
    }
}

void cef_ext(std::string& out, std::string_view key, std::string_view value) {
    if (value.empty()) return;
    out.push_back(' ');
    out.append(key);
    out.push_back('=');
    cef_value(out, value);
}

}  // namespace

void encode_cef(const record& r, std::string& out) {
    out.append("CEF:0|SaltStack|fastret|1.0|");
    cef_header(out, to_string(r.kind));
    out.push_back('|');
    cef_header(out, !r.fun.empty() ? std::string_view(r.fun)
                    : !r.tag.empty() ? std::string_view(r.tag) : to_string(r.kind));
    out.push_back('|');
    out.push_back(r.success == 1 ? '3' : r.success == 0 ? '7' : '5');
    out.append("|rt=");
    // milliseconds, rounded down (before the epoch too; -ts_us would overflow at INT64_MIN)
    append_int(out, r.ts_us / 1000 - (r.ts_us % 1000 < 0 ? 1 : 0));
    cef_ext(out, "dhost", r.minion);
    cef_ext(out, "act", r.fun);
    cef_ext(out, "outcome", outcome_of(r));
    cef_ext(out, "externalId", r.id);
    if (!r.jid.empty()) {
        out.append(" cs1Label=jid");
        cef_ext(out, "cs1", r.jid);
    }
    if (!r.tag.empty()) {
        out.append(" cs2Label=tag");
        cef_ext(out, "cs2", r.tag);
    }
    if (r.retcode) {
        out.append(" cn1Label=retcode cn1=");
        append_int(out, *r.retcode);
    }
    std::string payload;
    append_payload(payload, r.payload);
    cef_ext(out, "msg", payload);
}

}  // namespace fastret
