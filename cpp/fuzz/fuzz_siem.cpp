// The SIEM encoders (cpp/src/encoders/siem.cpp: ECS JSON, GELF 1.1, CEF) on one record taken
// from the input (arbitrary bytes in the string fields, any time, success, retcode; a valid
// JSON payload, sometimes pretty-printed with CR/LF, with "duration", "return" and "user"
// members often present).
//
// Properties:
//  - the encoders append to the buffer and leave what was there; none writes CR, LF or NUL
//    (the sinks frame with '\n' or NUL);
//  - ECS: one strict RFC 8259 object in well-formed UTF-8 with the documented members in the
//    documented order; @timestamp is format_rfc3339_us of the record's time; strings decode to
//    the record's fields (ill-formed UTF-8 as U+FFFD); category/type follow the documented
//    rule; salt.data is the payload's value; event.duration equals a reference computed from
//    the parsed payload (top-level "duration" in ms, else the sum of each state's "duration"
//    in "return"), and is absent when that is not a finite number representable in int64
//    nanoseconds; user.name is the payload's first top-level "user" when it is a plain string;
//  - GELF: one strict JSON object with version "1.1", non-empty host and short_message,
//    full_message the payload text, timestamp the record's time as seconds.microseconds
//    (floor), level 3 or 6, and the additional fields (names starting with '_', never "_id")
//    equal to the record's;
//  - CEF: "CEF:0|" then six header fields separated by unescaped '|' where a '|' or '\' in a
//    field is escaped and nothing else is; then the extension, whose keys are found at the
//    unescaped '=' signs; values unescape (\\ \= \n \r only) to the record's fields with
//    ill-formed UTF-8 and NUL as U+FFFD; the whole line is well-formed UTF-8; rt is the time in ms
//    (floor).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "encoders/json_lines.hpp"
#include "encoders/siem.hpp"
#include "fastret/record.hpp"
#include "fuzz_common.hpp"
#include "fuzz_records.hpp"

namespace {

using fuzz::jvalue;
using fuzz::show;

const jvalue* member(const jvalue& obj, std::string_view key) {
    if (obj.kind != jvalue::object_v) return nullptr;
    for (const auto& m : obj.members)
        if (m.first == key) return &m.second;
    return nullptr;
}

// A number member's milliseconds as the documented rule reads them.
std::optional<double> number_of(const jvalue* v) {
    if (!v || v->kind != jvalue::number_v) return std::nullopt;
    const double d = std::strtod(v->text.c_str(), nullptr);
    if (!std::isfinite(d)) return std::nullopt;
    return d;
}

std::optional<std::int64_t> duration_reference(const jvalue& payload) {
    std::optional<double> ms = number_of(member(payload, "duration"));
    if (!ms) {
        const jvalue* ret = member(payload, "return");
        if (ret && ret->kind == jvalue::object_v) {
            double total = 0;
            bool any = false;
            for (const auto& [name, state] : ret->members)
                if (auto d = number_of(member(state, "duration"))) {
                    total += *d;
                    any = true;
                }
            if (any) ms = total;
        }
    }
    if (!ms) return std::nullopt;
    const double ns = std::round(*ms * 1e6);
    // int64 holds [-2^63, 2^63); outside it there is no duration to report.
    if (!(ns >= -9223372036854775808.0 && ns < 9223372036854775808.0)) return std::nullopt;
    return static_cast<std::int64_t>(ns);
}

// Would json_writer write this string without any escape? (then the encoder reads it as is)
bool plain_json_string(std::string_view s) {
    if (!fuzz::utf8_valid(s)) return false;
    for (char c : s)
        if (c == '"' || c == '\\' || (c >= 0 && c < 0x20)) return false;
    return true;
}

struct member_walk {
    const jvalue& obj;
    std::string_view where;
    std::size_t k = 0;

    const jvalue& next(std::string_view key) {
        FUZZ_CHECK(k < obj.members.size(),
                   std::string(where) + " ends before " + std::string(key) + ": " + fuzz::dump(obj));
        const auto& m = obj.members[k++];
        FUZZ_CHECK(m.first == key, std::string(where) + ": expected " + std::string(key) + ", got " +
                                       show(m.first) + " in " + fuzz::dump(obj));
        return m.second;
    }
    void string(std::string_view key, std::string_view value) {
        const jvalue& v = next(key);
        FUZZ_CHECK(v.kind == jvalue::string_v && v.text == fuzz::utf8_replace(value),
                   std::string(key) + ": " + show(value) + " encoded as " + fuzz::dump(v));
    }
    void optional_string(std::string_view key, std::string_view value) {
        if (!value.empty()) string(key, value);
    }
    void number(std::string_view key, std::int64_t value) {
        const jvalue& v = next(key);
        FUZZ_CHECK(v.kind == jvalue::number_v && v.text == std::to_string(value),
                   std::string(key) + ": " + std::to_string(value) + " encoded as " + fuzz::dump(v));
    }
    void end() {
        FUZZ_CHECK(k == obj.members.size(), std::string(where) + " has extra members: " + fuzz::dump(obj));
    }
};

std::string_view outcome(const fastret::record& r) {
    return r.success == 1 ? "success" : r.success == 0 ? "failure" : "unknown";
}

void no_frame_bytes(std::string_view out, const char* what) {
    for (char c : out)
        FUZZ_CHECK(c != '\n' && c != '\r' && c != '\0',
                   std::string(what) + " holds CR, LF or NUL: " + show(out));
}

void check_ecs(const fuzz::fuzzed_record& in, const jvalue& payload) {
    const auto& r = in.rec;
    const std::string before = "x";
    std::string out = before;
    fastret::encode_ecs(r, out);
    FUZZ_CHECK(out.starts_with(before), "ECS overwrote the buffer");
    const std::string_view doc = std::string_view(out).substr(before.size());
    fuzz::trace("ECS " + show(doc));
    no_frame_bytes(doc, "ECS");
    FUZZ_CHECK(fuzz::utf8_valid(doc), "ECS is not UTF-8");
    const jvalue root = fuzz::must_parse(doc, "ECS document");
    FUZZ_CHECK(root.kind == jvalue::object_v, "ECS is not an object");

    member_walk top{root, "ECS"};
    {
        const jvalue& ts = top.next("@timestamp");
        FUZZ_CHECK(ts.kind == jvalue::string_v && ts.text == fastret::format_rfc3339_us(r.ts_us),
                   fuzz::dump(ts));
        (void)fuzz::read_rfc3339_us(ts.text);
    }
    {
        member_walk ecs{top.next("ecs"), "ecs"};
        ecs.string("version", "8.11.0");
        ecs.end();
    }
    {
        member_walk ev{top.next("event"), "event"};
        ev.string("kind", "event");
        const bool state = r.fun.starts_with("state.");
        const bool host = !state && r.kind == fastret::record_kind::event && r.fun.empty();
        const char* cat = state ? "configuration" : host ? "host" : "process";
        const char* type = state ? "change" : "info";
        for (auto [key, want] : {std::pair{"category", cat}, std::pair{"type", type}}) {
            const jvalue& a = ev.next(key);
            FUZZ_CHECK(a.kind == jvalue::array_v && a.items.size() == 1 &&
                           a.items[0].kind == jvalue::string_v && a.items[0].text == want,
                       std::string(key) + " " + fuzz::dump(a));
        }
        ev.optional_string("action", r.fun);
        ev.string("outcome", outcome(r));
        ev.optional_string("id", r.id);
        ev.string("dataset", "salt." + std::string(fastret::to_string(r.kind)));
        ev.string("module", "salt");
        const auto want = duration_reference(payload);
        if (want) ev.number("duration", *want);
        ev.end();
    }
    const jvalue* u = member(payload, "user");
    const bool want_user =
        u && u->kind == jvalue::string_v && !u->text.empty() && plain_json_string(u->text);
    std::size_t k = top.k;
    if (!r.minion.empty()) {
        member_walk h{top.next("host"), "host"};
        h.string("name", r.minion);
        h.end();
        k = top.k;
    }
    (void)k;
    if (want_user) {
        member_walk user{top.next("user"), "user"};
        user.string("name", u->text);
        user.end();
    }
    {
        const jvalue& msg = top.next("message");
        FUZZ_CHECK(msg.kind == jvalue::string_v && msg.text.starts_with("salt "), fuzz::dump(msg));
    }
    {
        member_walk s{top.next("salt"), "salt"};
        s.string("kind", fastret::to_string(r.kind));
        s.optional_string("jid", r.jid);
        s.optional_string("fun", r.fun);
        s.optional_string("tag", r.tag);
        s.optional_string("minion", r.minion);
        if (r.success >= 0) {
            const jvalue& b = s.next("success");
            FUZZ_CHECK(b.kind == jvalue::bool_v && b.b == (r.success != 0), fuzz::dump(b));
        }
        if (r.retcode) s.number("retcode", *r.retcode);
        const jvalue& d = s.next("data");
        FUZZ_CHECK(fuzz::same(in.data, d),
                   "salt.data " + fuzz::dump(in.data) + " encoded as " + fuzz::dump(d));
        s.end();
    }
    top.end();
}

void check_gelf(const fastret::record& r) {
    std::string out;
    fastret::encode_gelf(r, out);
    fuzz::trace("GELF " + show(out));
    no_frame_bytes(out, "GELF");
    FUZZ_CHECK(fuzz::utf8_valid(out), "GELF is not UTF-8");
    const jvalue root = fuzz::must_parse(out, "GELF document");
    FUZZ_CHECK(root.kind == jvalue::object_v, "GELF is not an object");
    member_walk g{root, "GELF"};
    g.string("version", "1.1");
    g.string("host", r.minion.empty() ? std::string("-") : r.minion);
    {
        const jvalue& sm = g.next("short_message");
        FUZZ_CHECK(sm.kind == jvalue::string_v && !sm.text.empty(), fuzz::dump(sm));
    }
    g.string("full_message", r.payload.empty() ? std::string("null") : r.payload);
    {
        std::int64_t s = r.ts_us / 1000000, us = r.ts_us % 1000000;
        if (us < 0) {
            us += 1000000;
            --s;
        }
        char frac[8];
        std::snprintf(frac, sizeof frac, "%06lld", static_cast<long long>(us));
        const jvalue& ts = g.next("timestamp");
        FUZZ_CHECK(ts.kind == jvalue::number_v && ts.text == std::to_string(s) + "." + frac,
                   "timestamp " + fuzz::dump(ts) + " for " + std::to_string(r.ts_us) + " us");
    }
    g.number("level", r.success == 0 ? 3 : 6);
    g.optional_string("_record_id", r.id);
    g.string("_salt_kind", fastret::to_string(r.kind));
    g.optional_string("_jid", r.jid);
    g.optional_string("_fun", r.fun);
    g.optional_string("_tag", r.tag);
    if (r.success >= 0) g.string("_success", r.success ? "true" : "false");
    if (r.retcode) g.number("_retcode", *r.retcode);
    g.end();
}

// CEF header field: split at unescaped '|', unescape "\|" and "\\".
std::vector<std::string> cef_split_header(std::string_view line, std::size_t& ext_at) {
    std::vector<std::string> fields(1);
    std::size_t i = 0;
    while (i < line.size() && fields.size() < 8) {
        const char c = line[i];
        if (c == '\\') {
            FUZZ_CHECK(i + 1 < line.size() && (line[i + 1] == '\\' || line[i + 1] == '|'),
                       "a backslash that escapes nothing in a CEF header field: " + show(line));
            fields.back() += line[i + 1];
            i += 2;
            continue;
        }
        if (c == '|') fields.emplace_back();
        else fields.back() += c;
        ++i;
    }
    FUZZ_CHECK(fields.size() == 8, "CEF header has " + std::to_string(fields.size()) +
                                       " fields: " + show(line));
    FUZZ_CHECK(fields[7].empty(), "text after the header");
    ext_at = i;
    return fields;
}

// The extension: keys at each unescaped '=', a value running to the space before the next key.
std::vector<std::pair<std::string, std::string>> cef_extension(std::string_view ext) {
    std::vector<std::size_t> eqs;  // unescaped '='
    for (std::size_t i = 0; i < ext.size(); ++i) {
        if (ext[i] == '\\') {
            ++i;
            continue;
        }
        if (ext[i] == '=') eqs.push_back(i);
    }
    std::vector<std::pair<std::string, std::string>> out;
    std::vector<std::size_t> key_starts;
    for (std::size_t e : eqs) {
        std::size_t s = e;
        while (s > 0 && ext[s - 1] != ' ') --s;
        const std::string key(ext.substr(s, e - s));
        FUZZ_CHECK(!key.empty() && key.find_first_not_of(
                                       "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") ==
                                       std::string::npos,
                   "CEF key " + show(key) + " in " + show(ext));
        key_starts.push_back(s);
        out.emplace_back(key, "");
    }
    FUZZ_CHECK(eqs.empty() || key_starts[0] == 0, "text before the first key: " + show(ext));
    for (std::size_t k = 0; k < eqs.size(); ++k) {
        const std::size_t from = eqs[k] + 1;
        const std::size_t to = k + 1 < eqs.size() ? key_starts[k + 1] - 1 : ext.size();
        FUZZ_CHECK(to >= from && (k + 1 == eqs.size() || ext[to] == ' '), "CEF value bounds");
        const std::string_view raw = ext.substr(from, to - from);
        std::string v;
        for (std::size_t i = 0; i < raw.size(); ++i) {
            if (raw[i] != '\\') {
                v += raw[i];
                continue;
            }
            FUZZ_CHECK(i + 1 < raw.size(), "a trailing backslash in a CEF value: " + show(raw));
            const char n = raw[++i];
            FUZZ_CHECK(n == '\\' || n == '=' || n == 'n' || n == 'r',
                       "an escape CEF does not define in a value: " + show(raw));
            v += n == 'n' ? '\n' : n == 'r' ? '\r' : n;
        }
        out[k].second = v;
    }
    return out;
}

void check_cef(const fastret::record& r) {
    std::string out;
    fastret::encode_cef(r, out);
    fuzz::trace("CEF " + show(out));
    no_frame_bytes(out, "CEF");
    FUZZ_CHECK(fuzz::utf8_valid(out), "CEF line is not UTF-8: " + show(out));
    FUZZ_CHECK(out.starts_with("CEF:"), show(out));
    std::size_t ext_at = 0;
    const auto h = cef_split_header(std::string_view(out).substr(4), ext_at);
    auto header = [](std::string_view v) {
        std::string s = fuzz::utf8_replace(v);
        for (auto& c : s)
            if (c == '\r' || c == '\n' || c == '\0') c = ' ';
        return s;
    };
    const std::string kind(fastret::to_string(r.kind));
    const std::vector<std::string> want_header = {
        "0", "SaltStack", "fastret", "1.0", header(kind),
        header(!r.fun.empty() ? r.fun : !r.tag.empty() ? r.tag : kind),
        r.success == 1 ? "3" : r.success == 0 ? "7" : "5"};
    for (std::size_t k = 0; k < want_header.size(); ++k)
        FUZZ_CHECK(h[k] == want_header[k], "CEF header field " + std::to_string(k) + " " + show(h[k]) +
                                                ", want " + show(want_header[k]));
    const auto ext = cef_extension(std::string_view(out).substr(4 + ext_at));

    // floor(ts_us / 1000) without overflow
    std::int64_t ms = r.ts_us / 1000;
    if (r.ts_us % 1000 < 0) --ms;
    std::vector<std::pair<std::string, std::string>> want;
    auto add = [&](const char* key, std::string_view v) {
        if (v.empty()) return;
        std::string clean;
        for (char c : fuzz::utf8_replace(v)) {  // NUL has no CEF escape: U+FFFD
            if (c == '\0') clean += "\xEF\xBF\xBD";
            else clean += c;
        }
        want.emplace_back(key, clean);
    };
    want.emplace_back("rt", std::to_string(ms));
    add("dhost", r.minion);
    add("act", r.fun);
    add("outcome", outcome(r));
    add("externalId", r.id);
    if (!r.jid.empty()) {
        want.emplace_back("cs1Label", "jid");
        add("cs1", r.jid);
    }
    if (!r.tag.empty()) {
        want.emplace_back("cs2Label", "tag");
        add("cs2", r.tag);
    }
    if (r.retcode) {
        want.emplace_back("cn1Label", "retcode");
        want.emplace_back("cn1", std::to_string(*r.retcode));
    }
    std::string msg = r.payload.empty() ? "null" : r.payload;
    for (auto& c : msg)
        if (c == '\n' || c == '\r') c = ' ';
    add("msg", msg);
    FUZZ_CHECK(ext.size() == want.size(), "CEF extension has " + std::to_string(ext.size()) +
                                              " keys, want " + std::to_string(want.size()) + ": " +
                                              show(out));
    for (std::size_t k = 0; k < want.size(); ++k)
        FUZZ_CHECK(ext[k] == want[k], "CEF " + want[k].first + "=" + show(want[k].second) +
                                          " read back as " + ext[k].first + "=" + show(ext[k].second));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider fdp(data, size);
    const fuzz::fuzzed_record in = fuzz::make_record(fdp);
    const jvalue payload =
        in.rec.payload.empty() ? jvalue::null() : fuzz::must_parse(in.rec.payload, "payload");
    check_ecs(in, payload);
    check_gelf(in.rec);
    check_cef(in.rec);
    return 0;
}
