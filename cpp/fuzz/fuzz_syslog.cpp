// The syslog encoder (cpp/src/encoders/syslog.cpp) on one record and a format taken from the
// input: RFC 5424 or RFC 3164, any facility and severities, header fields (hostname, app name,
// procid) of arbitrary bytes and lengths, any max_bytes (from too small for the header to
// roomy), split or truncate; the messages are then framed both ways and read back.
//
// Properties (each message is parsed by a reader written from the RFCs, not from the encoder):
//  - no message holds CR, LF or NUL (newline framing depends on it);
//  - RFC 5424: "<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ELEMENT] MSG" with PRI the
//    facility and the severity for the record's outcome, TIMESTAMP the record's time as
//    format_rfc3339_us writes it (and in the RFC's grammar), every header field 1..max bytes of
//    PRINTUSASCII equal to a reference restriction of the configured value (or "-"); one
//    SD-ELEMENT salt@32473 whose PARAM-VALUEs escape '"', '\' and ']' (an unescaped one ends the
//    value or is a violation), decode to well-formed UTF-8 without control characters, equal a
//    reference (ill-formed subparts and controls as U+FFFD, cut at 128 characters with "..."),
//    in the documented order with nothing else but part= or truncated=;
//  - RFC 3164: "<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG" with the time in UTC, HOST and TAG as
//    documented, PID without '[', ']' or ':'; MSG the record as its JSON line;
//  - sizes: a message that fits is sent whole and alone; otherwise, with split, parts numbered
//    1/n..n/n whose MSGs concatenate to the whole MSG, each cut at a UTF-8 boundary and, when
//    max_bytes leaves room for the header and 16 bytes, each within max_bytes; with truncate,
//    one message with the documented marker giving the whole MSG's size, its MSG the longest
//    prefix that fits (cut at a UTF-8 boundary) when there is room;
//  - octet-counting framing: "<len> <msg>" with len in decimal without leading zeros equal to
//    the message's size; newline framing: msg LF; both streams read back to the messages.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "encoders/json_lines.hpp"
#include "encoders/syslog.hpp"
#include "fastret/record.hpp"
#include "fuzz_common.hpp"
#include "fuzz_records.hpp"

namespace {

using fuzz::show;

const std::string replacement = "\xEF\xBF\xBD";

// RFC 5424 header field: PRINTUSASCII kept, any other byte as '_', at most `max` bytes, "-"
// when empty.
std::string header_reference(std::string_view v, std::size_t max) {
    std::string out;
    for (std::size_t i = 0; i < v.size() && i < max; ++i) {
        const auto c = static_cast<unsigned char>(v[i]);
        out += c >= 33 && c <= 126 ? static_cast<char>(c) : '_';
    }
    return out.empty() ? "-" : out;
}

// An SD-PARAM value as it must decode: ill-formed UTF-8 and control characters as U+FFFD,
// more than 128 characters cut to 128 followed by "...".
std::string sd_reference(std::string_view v) {
    const std::string clean = fuzz::utf8_replace(v);
    std::string out;
    std::size_t chars = 0;
    for (std::size_t i = 0; i < clean.size();) {
        if (chars == 128) return out + "...";
        const auto n = static_cast<std::size_t>(fuzz::utf8_at(clean, i));
        const auto c = static_cast<unsigned char>(clean[i]);
        if (n == 1 && (c < 0x20 || c == 0x7F)) out += replacement;
        else out.append(clean, i, n);
        i += n;
        ++chars;
    }
    return out;
}

bool printusascii(std::string_view s) {
    for (char c : s)
        if (c < 33 || c > 126) return false;
    return true;
}

struct parsed_5424 {
    int pri = -1;
    std::string timestamp, hostname, app_name, procid, msgid;
    std::vector<std::pair<std::string, std::string>> params;  // decoded
    std::string msg;
};

// Reads one RFC 5424 message that carries exactly one SD-ELEMENT. Fails the run on any
// deviation from the grammar.
parsed_5424 parse_5424(std::string_view m) {
    parsed_5424 p;
    std::size_t i = 0;
    auto fail_here = [&](const char* what) {
        fuzz::fail(__FILE__, __LINE__, what,
                   "at byte " + std::to_string(i) + " of " + show(m));
    };
    if (m.empty() || m[0] != '<') fail_here("'<' first");
    ++i;
    std::string pri;
    while (i < m.size() && m[i] >= '0' && m[i] <= '9') pri += m[i++];
    if (pri.empty() || pri.size() > 3 || (pri.size() > 1 && pri[0] == '0'))
        fail_here("PRI is 1..3 digits without leading zeros");
    p.pri = std::stoi(pri);
    if (m.substr(i, 3) != ">1 ") fail_here("'>1 ' after PRI");
    i += 3;
    auto field = [&](std::size_t max, const char* what) {
        const std::size_t sp = m.find(' ', i);
        if (sp == std::string_view::npos) fail_here(what);
        const std::string_view f = m.substr(i, sp - i);
        if (f.empty() || f.size() > max || !printusascii(f)) fail_here(what);
        i = sp + 1;
        return std::string(f);
    };
    p.timestamp = field(64, "TIMESTAMP");
    p.hostname = field(255, "HOSTNAME: 1..255 PRINTUSASCII");
    p.app_name = field(48, "APP-NAME: 1..48 PRINTUSASCII");
    p.procid = field(128, "PROCID: 1..128 PRINTUSASCII");
    p.msgid = field(32, "MSGID: 1..32 PRINTUSASCII");
    if (i >= m.size() || m[i] != '[') fail_here("an SD-ELEMENT");
    ++i;
    // SD-ID: SD-NAME, 1..32 PRINTUSASCII except '=', SP, ']', '"'
    std::string sd_id;
    while (i < m.size() && m[i] != ' ' && m[i] != ']') sd_id += m[i++];
    if (sd_id != "salt@32473") fail_here("SD-ID salt@32473");
    while (i < m.size() && m[i] == ' ') {
        ++i;
        std::string name;
        while (i < m.size() && m[i] != '=') {
            const char c = m[i];
            if (c < 33 || c > 126 || c == ' ' || c == ']' || c == '"') fail_here("PARAM-NAME");
            name += m[i++];
        }
        if (name.empty() || name.size() > 32) fail_here("PARAM-NAME 1..32");
        if (m.substr(i, 2) != "=\"") fail_here("'=\"' after PARAM-NAME");
        i += 2;
        std::string value;
        for (;;) {
            if (i >= m.size()) fail_here("an unterminated PARAM-VALUE");
            const char c = m[i];
            if (c == '"') break;
            if (c == ']') fail_here("an unescaped ']' in PARAM-VALUE");
            if (c == '\\') {
                // RFC 5424 6.3.3: only '"', '\' and ']' are escaped; a backslash before anything
                // else is a literal one, which the encoder never writes.
                if (i + 1 >= m.size() || (m[i + 1] != '"' && m[i + 1] != '\\' && m[i + 1] != ']'))
                    fail_here("a backslash that escapes nothing in PARAM-VALUE");
                value += m[i + 1];
                i += 2;
                continue;
            }
            value += c;
            ++i;
        }
        ++i;  // closing quote
        if (!fuzz::utf8_valid(value)) fail_here("a PARAM-VALUE that is not UTF-8");
        for (char c : value)
            if ((c >= 0 && c < 0x20) || c == 0x7F) fail_here("a control character in PARAM-VALUE");
        p.params.emplace_back(std::move(name), std::move(value));
    }
    if (m.substr(i, 2) != "] ") fail_here("'] ' after the SD-ELEMENT");
    p.msg = std::string(m.substr(i + 2));
    return p;
}

struct parsed_3164 {
    int pri = -1;
    std::string timestamp, host, tag, pid;
    bool has_pid = false;
    std::string msg;
};

parsed_3164 parse_3164(std::string_view m) {
    parsed_3164 p;
    std::size_t i = 0;
    auto fail_here = [&](const char* what) {
        fuzz::fail(__FILE__, __LINE__, what, "at byte " + std::to_string(i) + " of " + show(m));
    };
    if (m.empty() || m[0] != '<') fail_here("'<' first");
    ++i;
    std::string pri;
    while (i < m.size() && m[i] >= '0' && m[i] <= '9') pri += m[i++];
    if (pri.empty() || pri.size() > 3) fail_here("PRI");
    p.pri = std::stoi(pri);
    if (i >= m.size() || m[i] != '>') fail_here("'>'");
    ++i;
    if (m.size() < i + 16) fail_here("TIMESTAMP");
    p.timestamp = std::string(m.substr(i, 15));
    i += 15;
    if (m[i] != ' ') fail_here("SP after TIMESTAMP");
    ++i;
    const std::size_t sp = m.find(' ', i);
    if (sp == std::string_view::npos || sp == i) fail_here("HOSTNAME");
    p.host = std::string(m.substr(i, sp - i));
    if (!printusascii(p.host)) fail_here("HOSTNAME is PRINTUSASCII");
    i = sp + 1;
    while (i < m.size() && m[i] != '[' && m[i] != ':') {
        if (m[i] < 33 || m[i] > 126) fail_here("TAG is PRINTUSASCII");
        p.tag += m[i++];
    }
    if (p.tag.empty() || p.tag.size() > 32) fail_here("TAG 1..32");
    if (i < m.size() && m[i] == '[') {
        p.has_pid = true;
        ++i;
        while (i < m.size() && m[i] != ']') {
            if (m[i] < 33 || m[i] > 126 || m[i] == '[' || m[i] == ':')
                fail_here("PID is PRINTUSASCII without '[', ':'");
            p.pid += m[i++];
        }
        if (i >= m.size()) fail_here("']' after PID");
        ++i;
    }
    if (m.substr(i, 2) != ": ") fail_here("': ' after TAG");
    p.msg = std::string(m.substr(i + 2));
    return p;
}

// "Mmm dd hh:mm:ss" from "YYYY-MM-DDThh:mm:ss.uuuuuuZ", written independently.
std::string rfc3164_time(const std::string& iso) {
    static const char* names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const int mon = std::stoi(iso.substr(5, 2));
    const int day = std::stoi(iso.substr(8, 2));
    std::string out = names[mon - 1];
    out += day < 10 ? "  " : " ";
    out += std::to_string(day);
    out += ' ';
    out += iso.substr(11, 8);
    return out;
}

std::size_t utf8_boundary_ok(std::string_view whole, std::size_t at) {
    return at == whole.size() || (static_cast<unsigned char>(whole[at]) & 0xC0) != 0x80;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider fdp(data, size);
    fastret::syslog_format f;
    f.rfc3164 = fdp.ConsumeBool();
    f.facility = fdp.ConsumeIntegralInRange(0, 23);
    f.severity = fdp.ConsumeIntegralInRange(0, 7);
    f.failure_severity = fdp.ConsumeIntegralInRange(0, 7);
    f.hostname = fuzz::any_string(fdp, 32);
    f.local_hostname = fuzz::any_string(fdp, 16);
    f.app_name = fuzz::any_string(fdp, 64);
    f.procid = fuzz::any_string(fdp, 160);
    f.max_bytes = fdp.ConsumeIntegralInRange<std::size_t>(0, 1200);
    f.split = fdp.ConsumeBool();
    const fuzz::fuzzed_record in = fuzz::make_record(fdp);
    fastret::record r = in.rec;
    // Longer than the 128 characters an SD-PARAM value keeps (the generator's are shorter).
    for (int k = fdp.ConsumeIntegralInRange(0, 3); k > 0; --k) r.tag += r.tag;

    std::vector<std::string> msgs;
    fastret::encode_syslog(r, f, [&](std::string_view m) { msgs.emplace_back(m); });
    fuzz::trace((f.rfc3164 ? "3164" : "5424") + std::string(" max_bytes=") +
                std::to_string(f.max_bytes) + (f.split ? " split" : " truncate") + ": " +
                std::to_string(msgs.size()) + " messages, first " +
                (msgs.empty() ? "-" : show(msgs[0])));
    FUZZ_CHECK(!msgs.empty(), "no message for a record");

    // What MSG must be when whole.
    std::string whole;
    if (f.rfc3164) {
        fastret::encode_json_lines(std::span<const fastret::record>(&r, 1), whole);
        whole.pop_back();
    } else {
        whole = r.payload.empty() ? "null" : r.payload;
        for (auto& c : whole)
            if (c == '\n' || c == '\r') c = ' ';
    }
    const int pri = f.facility * 8 + (r.success == 0 ? f.failure_severity : f.severity);
    const std::string iso = fastret::format_rfc3339_us(r.ts_us);
    (void)fuzz::read_rfc3339_us(iso);  // in the RFC 3339 grammar, a real date
    const std::string host =
        !f.hostname.empty() ? header_reference(f.hostname, 255)
        : !r.minion.empty() ? header_reference(r.minion, 255)
                            : header_reference(f.local_hostname, 255);

    std::vector<std::string> bodies;        // MSG of each message
    std::vector<std::string> markers;       // part=/truncated= value, or "" (5424)
    std::vector<std::size_t> header_sizes;  // bytes besides the record's text (markers too)
    for (const auto& m : msgs) {
        for (char c : m)
            FUZZ_CHECK(c != '\n' && c != '\r' && c != '\0', "CR, LF or NUL in " + show(m));
        if (f.rfc3164) {
            const parsed_3164 p = parse_3164(m);
            FUZZ_CHECK(p.pri == pri, "PRI " + std::to_string(p.pri) + ", want " + std::to_string(pri));
            FUZZ_CHECK(p.timestamp == rfc3164_time(iso), p.timestamp + " for " + iso);
            FUZZ_CHECK(p.host == (host == "-" ? "localhost" : host), p.host + " vs " + host);
            auto token = [](std::string_view v, std::size_t max) {
                std::string t;
                for (char c : v)
                    if (c >= 33 && c <= 126 && c != ':' && c != '[' && c != ']' && t.size() < max)
                        t += c;
                return t;
            };
            const std::string tag = token(f.app_name, 32);
            FUZZ_CHECK(p.tag == (tag.empty() ? "salt" : tag), p.tag + " from " + show(f.app_name));
            const std::string pid = f.procid == "-" ? "" : token(f.procid, 128);
            FUZZ_CHECK(p.has_pid == !pid.empty() && p.pid == pid,
                       "PID " + show(p.pid) + " from " + show(f.procid) + ": " + show(m));
            std::string body = p.msg, marker;
            if (f.split && (msgs.size() > 1 || body.starts_with("[part "))) {
                // MSG itself starts with '{' (a JSON object), so "[part " is the marker.
                FUZZ_CHECK(body.starts_with("[part "), "no part marker: " + show(m));
                const auto close = body.find("] ");
                FUZZ_CHECK(close != std::string::npos, show(m));
                marker = body.substr(6, close - 6);
                body.erase(0, close + 2);
            } else if (!f.split) {
                const std::string tail =
                    " [fastret: truncated, " + std::to_string(whole.size()) + " bytes]";
                if (body != whole) {
                    FUZZ_CHECK(body.ends_with(tail), "a cut MSG without its marker: " + show(m));
                    body.erase(body.size() - tail.size());
                    marker = "truncated";
                }
            }
            bodies.push_back(body);
            markers.push_back(marker);
            header_sizes.push_back(m.size() - body.size());
            continue;
        }
        const parsed_5424 p = parse_5424(m);
        FUZZ_CHECK(p.pri == pri, "PRI " + std::to_string(p.pri) + ", want " + std::to_string(pri));
        FUZZ_CHECK(p.timestamp == iso, p.timestamp + " vs " + iso);
        FUZZ_CHECK(p.hostname == host, p.hostname + " vs " + host);
        FUZZ_CHECK(p.app_name == header_reference(f.app_name, 48), p.app_name);
        FUZZ_CHECK(p.procid == header_reference(f.procid, 128), p.procid);
        FUZZ_CHECK(p.msgid == header_reference(fastret::to_string(r.kind), 32), p.msgid);
        std::vector<std::pair<std::string, std::string>> want;
        auto param = [&](const char* name, std::string_view v) {
            if (!v.empty()) want.emplace_back(name, sd_reference(v));
        };
        param("id", r.id);
        param("kind", fastret::to_string(r.kind));
        param("jid", r.jid);
        param("minion", r.minion);
        param("fun", r.fun);
        param("tag", r.tag);
        if (r.success >= 0) param("success", r.success ? "true" : "false");
        if (r.retcode) param("retcode", std::to_string(*r.retcode));
        std::string marker;
        auto got = p.params;
        if (got.size() == want.size() + 1 &&
            (got.back().first == "part" || got.back().first == "truncated")) {
            FUZZ_CHECK((got.back().first == "part") == f.split, "wrong marker: " + show(m));
            marker = got.back().second;
            got.pop_back();
        }
        FUZZ_CHECK(got.size() == want.size(), "SD-PARAMs: " + show(m));
        for (std::size_t k = 0; k < want.size(); ++k)
            FUZZ_CHECK(got[k] == want[k], "SD-PARAM " + want[k].first + "=" + show(want[k].second) +
                                              " written as " + got[k].first + "=" +
                                              show(got[k].second));
        if (!f.split && !marker.empty())
            FUZZ_CHECK(marker == std::to_string(whole.size()),
                       "truncated=" + marker + " for " + std::to_string(whole.size()) + " bytes");
        bodies.push_back(p.msg);
        markers.push_back(marker);
        header_sizes.push_back(m.size() - p.msg.size());  // markers are in the SD-ELEMENT
    }

    // Sizes, splitting, truncation.
    std::size_t max_header = 0;
    for (auto h : header_sizes) max_header = std::max(max_header, h);
    const std::size_t digits = std::to_string(whole.size()).size();
    const bool roomy = f.max_bytes >= max_header + 2 * digits + 16;
    if (msgs.size() == 1 && markers[0].empty()) {
        FUZZ_CHECK(bodies[0] == whole, "MSG " + show(bodies[0]) + " for " + show(whole));
        // Sent whole: it fit, or a single part covers it (then the marker says 1/1).
        FUZZ_CHECK(msgs[0].size() <= f.max_bytes,
                   "a message of " + std::to_string(msgs[0].size()) + " bytes over max_bytes " +
                       std::to_string(f.max_bytes) + " without a marker");
    } else if (f.split) {
        std::string joined;
        for (std::size_t k = 0; k < msgs.size(); ++k) {
            FUZZ_CHECK(markers[k] == std::to_string(k + 1) + "/" + std::to_string(msgs.size()),
                       "part marker " + show(markers[k]) + " on part " + std::to_string(k + 1) +
                           " of " + std::to_string(msgs.size()));
            FUZZ_CHECK(!bodies[k].empty(), "an empty part");
            joined += bodies[k];
            FUZZ_CHECK(utf8_boundary_ok(whole, joined.size()) || !fuzz::utf8_valid(whole),
                       "a part cut inside a UTF-8 sequence: " + show(bodies[k]));
            if (roomy)
                FUZZ_CHECK(msgs[k].size() <= f.max_bytes,
                           "part of " + std::to_string(msgs[k].size()) + " bytes, max_bytes " +
                               std::to_string(f.max_bytes));
        }
        FUZZ_CHECK(joined == whole, "parts " + show(joined) + " of " + show(whole));
    } else {
        FUZZ_CHECK(msgs.size() == 1, "truncate sent several messages");
        FUZZ_CHECK(!markers[0].empty(), "no truncation marker");
        FUZZ_CHECK(whole.starts_with(bodies[0]), "not a prefix: " + show(bodies[0]));
        FUZZ_CHECK(utf8_boundary_ok(whole, bodies[0].size()), "cut inside a UTF-8 sequence");
        if (roomy) {
            FUZZ_CHECK(msgs[0].size() <= f.max_bytes,
                       "truncated message of " + std::to_string(msgs[0].size()) + " bytes");
            // The longest prefix that fits: one more character would not.
            std::size_t next = bodies[0].size();
            if (next < whole.size()) {
                ++next;
                while (!utf8_boundary_ok(whole, next)) ++next;
                FUZZ_CHECK(msgs[0].size() + (next - bodies[0].size()) > f.max_bytes,
                           "cut shorter than needed: " + std::to_string(msgs[0].size()) +
                               " bytes of " + std::to_string(f.max_bytes));
            }
        }
    }

    // Framing, read back.
    std::string octets, lines;
    for (const auto& m : msgs) {
        fastret::frame_octet_counting(octets, m);
        fastret::frame_newline(lines, m);
    }
    // The sink's direct path writes the same bytes, after what the buffer held already.
    for (const auto framing : {fastret::syslog_framing::octet_counting, fastret::syslog_framing::newline}) {
        const bool octet = framing == fastret::syslog_framing::octet_counting;
        std::string direct = "prior";
        fastret::append_syslog_framed(direct, r, f, framing);
        FUZZ_CHECK(direct == "prior" + (octet ? octets : lines),
                   std::string("append_syslog_framed (") + (octet ? "octet counting" : "newline") +
                       ") differs: " + show(direct));
    }
    std::size_t i = 0;
    for (const auto& m : msgs) {
        const std::size_t sp = octets.find(' ', i);
        FUZZ_CHECK(sp != std::string::npos && sp > i && sp - i <= 20, "octet count: " + show(octets));
        const std::string len = octets.substr(i, sp - i);
        FUZZ_CHECK(len.find_first_not_of("0123456789") == std::string::npos &&
                       (len.size() == 1 || len[0] != '0'),
                   "octet count " + show(len));
        const std::size_t n = std::stoull(len);
        FUZZ_CHECK(n == m.size(), "octet count " + len + " for " + std::to_string(m.size()) + " bytes");
        FUZZ_CHECK(octets.compare(sp + 1, n, m) == 0, "framed message differs");
        i = sp + 1 + n;
    }
    FUZZ_CHECK(i == octets.size(), "bytes after the last octet-counted message");
    i = 0;
    for (const auto& m : msgs) {
        const std::size_t nl = lines.find('\n', i);
        FUZZ_CHECK(nl != std::string::npos && lines.compare(i, nl - i, m) == 0,
                   "newline framing does not give the message back");
        i = nl + 1;
    }
    FUZZ_CHECK(i == lines.size(), "bytes after the last line");
    return 0;
}
