#include "encoders/syslog.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstring>

#include "encoders/json_lines.hpp"
#include "fastret/json_writer.hpp"

namespace fastret {

namespace {

constexpr std::size_t sd_value_max = 128;
constexpr std::string_view sd_id = "salt@32473";

std::size_t utf8_seq_len(const unsigned char* p, std::size_t left) noexcept {
    unsigned char c = p[0];
    std::size_t n;
    std::uint32_t cp;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) { n = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { n = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { n = 4; cp = c & 0x07; }
    else return 0;
    if (left < n) return 0;
    for (std::size_t i = 1; i < n; ++i) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

// Largest prefix length <= n that does not cut a UTF-8 sequence.
std::size_t utf8_cut(std::string_view s, std::size_t n) noexcept {
    if (n >= s.size()) return s.size();
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
    return n;
}

// Bytes an SD-PARAM value keeps as they are: printable ASCII other than '"', '\\' and ']'.
constexpr auto sd_plain = [] {
    std::array<bool, 256> t{};
    for (int c = 0x20; c < 0x7F; ++c) t[static_cast<std::size_t>(c)] = c != '"' && c != '\\' && c != ']';
    return t;
}();

// The usual SD-PARAM value (an id, a jid, a minion id, a tag): short and plain, so it is
// written as it is, after one pass over its bytes.
bool is_plain_sd_value(std::string_view v) noexcept {
    if (v.size() > sd_value_max) return false;
    return std::all_of(v.begin(), v.end(), [](char c) { return sd_plain[static_cast<unsigned char>(c)]; });
}

void append_uint(std::string& out, std::uint64_t v) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
}

// The size of the MSG text append_msg() writes.
std::size_t msg_size(std::string_view payload) noexcept { return payload.empty() ? 4 : payload.size(); }

// The MSG text of a record: payload with CR/LF as spaces (they can only be JSON whitespace).
void append_msg(std::string& out, std::string_view payload) {
    std::size_t start = out.size();
    out.append(payload.empty() ? std::string_view("null") : payload);
    if (std::memchr(payload.data(), '\n', payload.size()) ||
        std::memchr(payload.data(), '\r', payload.size()))
        for (std::size_t i = start; i < out.size(); ++i)
            if (out[i] == '\n' || out[i] == '\r') out[i] = ' ';
}

// The HOSTNAME a message carries: the configured one, else the minion, else this host's name.
std::string_view hostname_source(const record& rec, const syslog_format& f) {
    if (!f.hostname.empty()) return f.hostname;
    if (!rec.minion.empty()) return rec.minion;
    return f.local_hostname;
}

std::string hostname_of(const record& rec, const syslog_format& f) {
    return syslog_header_field(hostname_source(rec, f), 255);
}

int pri_of(const record& rec, const syslog_format& f) {
    return f.facility * 8 + (rec.success == 0 ? f.failure_severity : f.severity);
}

// A header field's bytes: PRINTUSASCII kept, any other byte '_'.
void copy_header_bytes(const char* in, std::size_t n, char* out) noexcept {
    for (std::size_t i = 0; i < n; ++i) out[i] = in[i] < 33 || in[i] > 126 ? '_' : in[i];
}

// The RFC 5424 header and structured data are written through a cursor into a stack buffer
// sized for the longest they can be, then appended at once: a message's head is some thirty
// small pieces, and appending each to a std::string (capacity check, length and terminator
// update) cost more than writing them.
class cursor {
public:
    explicit cursor(char* p) noexcept : p_(p) {}
    char* pos() const noexcept { return p_; }
    void put(char c) noexcept { *p_++ = c; }
    void put(std::string_view s) noexcept {
        std::memcpy(p_, s.data(), s.size());
        p_ += s.size();
    }
    void put_int(std::int64_t v) noexcept { p_ = std::to_chars(p_, p_ + 20, v).ptr; }
    void put_uint(std::uint64_t v) noexcept { p_ = std::to_chars(p_, p_ + 20, v).ptr; }
    // The next `n` bytes, for the caller to fill.
    char* take(std::size_t n) noexcept {
        char* at = p_;
        p_ += n;
        return at;
    }
    // What append_header_field() appends.
    void put_header_field(std::string_view value, std::size_t max) noexcept {
        const std::size_t n = std::min(value.size(), max);
        if (n == 0) return put('-');
        copy_header_bytes(value.data(), n, p_);
        p_ += n;
    }
    // " name=\"value\"" with the value escaped (append_sd_value()); nothing when it is empty.
    // `prefix` is " name=\"".
    void put_param(std::string_view prefix, std::string_view value) {
        if (value.empty()) return;
        put(prefix);
        if (is_plain_sd_value(value)) {
            put(value);
        } else {
            thread_local std::string escaped;
            escaped.clear();
            append_sd_value(escaped, value);
            // sd_value_bytes_max bounds it; the cut only guards the buffer's size.
            put(std::string_view(escaped).substr(0, sd_value_bytes_max));
        }
        put('"');
    }

    // An SD-PARAM value: at most sd_value_max characters of at most 4 bytes each (a UTF-8
    // sequence; U+FFFD is 3, an escaped byte 2), then "...".
    static constexpr std::size_t sd_value_bytes_max = sd_value_max * 4 + 3;

private:
    char* p_;
};

// "<PRI>1 TS HOST APP PROCID MSGID "
constexpr std::size_t rfc5424_header_max =
    1 + 20 + 3 + rfc3339_us_size + 1 + (255 + 1) + (48 + 1) + (128 + 1) + (32 + 1);

void put_rfc5424_header(cursor& c, const record& rec, const syslog_format& f) {
    c.put('<');
    c.put_uint(static_cast<std::uint64_t>(pri_of(rec, f)));
    c.put(">1 ");
    write_rfc3339_us(rec.ts_us, c.take(rfc3339_us_size));
    c.put(' ');
    c.put_header_field(hostname_source(rec, f), 255);
    c.put(' ');
    c.put_header_field(f.app_name, 48);
    c.put(' ');
    c.put_header_field(f.procid, 128);
    c.put(' ');
    c.put_header_field(to_string(rec.kind), 32);
    c.put(' ');
}

void rfc5424_header(std::string& out, const record& rec, const syslog_format& f) {
    char buf[rfc5424_header_max];
    cursor c(buf);
    put_rfc5424_header(c, rec, f);
    out.append(buf, c.pos());
}

// "[salt@32473 ... " without the closing bracket: seven parameters (the longest name is
// "minion" and "success") and retcode.
constexpr std::size_t rfc5424_sd_open_max =
    1 + sd_id.size() + 7 * (std::string_view(" success=\"").size() + cursor::sd_value_bytes_max + 1) +
    std::string_view(" retcode=\"").size() + 20 + 1;

void put_rfc5424_sd_open(cursor& c, const record& rec) {
    c.put('[');
    c.put(sd_id);
    c.put_param(" id=\"", rec.id);
    c.put_param(" kind=\"", to_string(rec.kind));
    c.put_param(" jid=\"", rec.jid);
    c.put_param(" minion=\"", rec.minion);
    c.put_param(" fun=\"", rec.fun);
    c.put_param(" tag=\"", rec.tag);
    if (rec.success >= 0) c.put_param(" success=\"", rec.success ? "true" : "false");
    if (rec.retcode) {
        c.put(" retcode=\"");
        c.put_int(*rec.retcode);
        c.put('"');
    }
}

void rfc5424_sd_open(std::string& out, const record& rec) {
    char buf[rfc5424_sd_open_max];
    cursor c(buf);
    put_rfc5424_sd_open(c, rec);
    out.append(buf, c.pos());
}

constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// TAG and PID of RFC 3164: PRINTUSASCII without the bytes that delimit them (':', '[', ']'),
// so that a reader finds where each ends; other bytes are left out.
std::string rfc3164_token(std::string_view value, std::size_t max) {
    std::string t;
    for (char c : value)
        if (c > 32 && c < 127 && c != ':' && c != '[' && c != ']' && t.size() < max) t.push_back(c);
    return t;
}

// "<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: "
void rfc3164_header(std::string& out, const record& rec, const syslog_format& f) {
    out.push_back('<');
    append_uint(out, static_cast<std::uint64_t>(pri_of(rec, f)));
    out.push_back('>');
    std::string ts = format_rfc3339_us(rec.ts_us);  // YYYY-MM-DDTHH:MM:SS.uuuuuuZ
    int mon = (ts[5] - '0') * 10 + (ts[6] - '0');
    out.append(months[std::clamp(mon, 1, 12) - 1]);
    out.push_back(' ');
    out.push_back(ts[8] == '0' ? ' ' : ts[8]);
    out.push_back(ts[9]);
    out.push_back(' ');
    out.append(ts, 11, 8);
    out.push_back(' ');
    std::string host = hostname_of(rec, f);
    out.append(host == "-" ? "localhost" : host);
    out.push_back(' ');
    std::string tag = rfc3164_token(f.app_name, 32);
    out.append(tag.empty() ? "salt" : tag);
    std::string pid = f.procid == "-" ? std::string() : rfc3164_token(f.procid, 128);
    if (!pid.empty()) {
        out.push_back('[');
        out.append(pid);
        out.push_back(']');
    }
    out.append(": ");
}

}  // namespace

void append_header_field(std::string& out, std::string_view value, std::size_t max) {
    const std::size_t n = std::min(value.size(), max);
    if (n == 0) {
        out.push_back('-');
        return;
    }
    const std::size_t at = out.size();
    out.resize(at + n);
    copy_header_bytes(value.data(), n, out.data() + at);
}

std::string syslog_header_field(std::string_view value, std::size_t max) {
    std::string out;
    append_header_field(out, value, max);
    return out;
}

void append_sd_value(std::string& out, std::string_view v) {
    if (is_plain_sd_value(v)) {
        out.append(v);
        return;
    }
    std::string clean;
    if (!is_valid_utf8(v)) {
        append_utf8_replacing(clean, v);
        v = clean;
    }
    std::size_t written = 0;  // characters
    for (std::size_t i = 0; i < v.size(); ++written) {
        if (written >= sd_value_max) {
            out.append("...");
            return;
        }
        // A run of printable ASCII that needs no escape is copied at once.
        std::size_t j = i;
        const std::size_t run_end = std::min(v.size(), i + (sd_value_max - written));
        while (j < run_end) {
            const auto b = static_cast<unsigned char>(v[j]);
            if (b < 0x20 || b >= 0x7F || b == '"' || b == '\\' || b == ']') break;
            ++j;
        }
        if (j > i) {
            out.append(v.data() + i, j - i);
            written += j - i - 1;  // the loop adds the last one
            i = j;
            continue;
        }
        const auto c = static_cast<unsigned char>(v[i]);
        if (c >= 0x80) {  // well-formed here: copy the whole sequence
            const std::size_t n = utf8_seq_len(reinterpret_cast<const unsigned char*>(v.data()) + i,
                                               v.size() - i);
            out.append(v.substr(i, n));
            i += n;
            continue;
        }
        if (c < 0x20 || c == 0x7F) {
            out.append("\xEF\xBF\xBD");
        } else {
            if (c == '"' || c == '\\' || c == ']') out.push_back('\\');
            out.push_back(static_cast<char>(c));
        }
        ++i;
    }
}

void append_syslog_framed(std::string& out, const record& rec, const syslog_format& f,
                          syslog_framing framing) {
    const auto frame = [&](std::string_view m) {
        if (framing == syslog_framing::octet_counting) frame_octet_counting(out, m);
        else frame_newline(out, m);
    };
    if (f.rfc3164) return encode_syslog(rec, f, frame);
    // RFC 5424 and one message: the header and structured data (a few hundred bytes) are
    // built aside, since octet counting needs the length first; the payload goes to `out`
    // directly. The fit test is encode_syslog()'s.
    char buf[rfc5424_header_max + rfc5424_sd_open_max + 2];
    cursor c(buf);
    put_rfc5424_header(c, rec, f);
    put_rfc5424_sd_open(c, rec);
    c.put("] ");
    const std::string_view head(buf, static_cast<std::size_t>(c.pos() - buf));
    const std::size_t size = head.size() + msg_size(rec.payload);
    if (size > f.max_bytes) return encode_syslog(rec, f, frame);
    if (framing == syslog_framing::octet_counting) {
        append_uint(out, size);
        out.push_back(' ');
    }
    out.append(head);
    append_msg(out, rec.payload);
    if (framing == syslog_framing::newline) out.push_back('\n');
}

void frame_octet_counting(std::string& out, std::string_view msg) {
    append_uint(out, msg.size());
    out.push_back(' ');
    out.append(msg);
}

void frame_newline(std::string& out, std::string_view msg) {
    out.append(msg);
    out.push_back('\n');
}

void encode_syslog(const record& rec, const syslog_format& f,
                   const std::function<void(std::string_view)>& emit) {
    // Scratch buffers kept per thread: a record's message is built without allocating.
    thread_local std::string head, body, one;
    head.clear();
    body.clear();
    if (f.rfc3164) {
        rfc3164_header(head, rec, f);
        encode_json_lines(std::span<const record>(&rec, 1), body);
        body.pop_back();  // '\n'
    } else {
        rfc5424_header(head, rec, f);
        append_msg(body, rec.payload);
    }

    auto finish = [&](std::string& msg, std::string_view extra_sd) {
        if (!f.rfc3164) {
            rfc5424_sd_open(msg, rec);
            msg.append(extra_sd);
            msg.append("] ");
        }
    };

    // Fits: one message.
    {
        std::string& msg = one;
        msg.assign(head);
        finish(msg, {});
        if (msg.size() + body.size() <= f.max_bytes) {
            msg.append(body);
            emit(msg);
            return;
        }
    }

    if (!f.split) {
        std::string msg = head;
        std::string marker;
        if (f.rfc3164) {
            marker = " [fastret: truncated, " + std::to_string(body.size()) + " bytes]";
        } else {
            finish(msg, " truncated=\"" + std::to_string(body.size()) + "\"");
        }
        std::size_t room = f.max_bytes > msg.size() + marker.size()
                               ? f.max_bytes - msg.size() - marker.size()
                               : 0;
        msg.append(body, 0, utf8_cut(body, room));
        msg.append(marker);
        emit(msg);
        return;
    }

    // Split: size each part for the worst-case part marker, then number them.
    std::string probe = head;
    std::string digits = std::to_string(body.size());  // n <= body.size(): enough digits
    std::string worst_marker = f.rfc3164 ? "[part " + digits + "/" + digits + "] "
                                         : " part=\"" + digits + "/" + digits + "\"";
    if (f.rfc3164) probe.append(worst_marker);
    else finish(probe, worst_marker);
    std::size_t room = f.max_bytes > probe.size() + 8 ? f.max_bytes - probe.size() : 8;
    std::vector<std::pair<std::size_t, std::size_t>> parts;
    for (std::size_t pos = 0; pos < body.size();) {
        std::size_t len = utf8_cut(body.substr(pos), room);
        if (len == 0) len = std::min(room, body.size() - pos);  // never loop on a bad split
        parts.emplace_back(pos, len);
        pos += len;
    }
    const std::size_t n = parts.size();
    for (std::size_t i = 0; i < n; ++i) {
        std::string marker = std::to_string(i + 1) + "/" + std::to_string(n);
        std::string msg = head;
        if (f.rfc3164) msg.append("[part " + marker + "] ");
        else finish(msg, " part=\"" + marker + "\"");
        msg.append(body, parts[i].first, parts[i].second);
        emit(msg);
    }
}

namespace {
std::string lower_name(std::string_view name) {
    std::string s;
    for (char c : name) s.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    if (s.starts_with("log_")) s.erase(0, 4);
    return s;
}
}  // namespace

int syslog_facility_code(std::string_view name) noexcept {
    static constexpr std::pair<std::string_view, int> table[] = {
        {"kern", 0},    {"user", 1},    {"mail", 2},    {"daemon", 3},  {"auth", 4},
        {"syslog", 5},  {"lpr", 6},     {"news", 7},    {"uucp", 8},    {"cron", 9},
        {"authpriv", 10}, {"ftp", 11},  {"local0", 16}, {"local1", 17}, {"local2", 18},
        {"local3", 19}, {"local4", 20}, {"local5", 21}, {"local6", 22}, {"local7", 23}};
    try {
        auto s = lower_name(name);
        for (auto& [n, c] : table)
            if (n == s) return c;
    } catch (...) {
    }
    return -1;
}

int syslog_severity_code(std::string_view name) noexcept {
    static constexpr std::pair<std::string_view, int> table[] = {
        {"emerg", 0}, {"panic", 0},   {"alert", 1},  {"crit", 2},   {"err", 3},
        {"error", 3}, {"warning", 4}, {"warn", 4},   {"notice", 5}, {"info", 6},
        {"debug", 7}};
    try {
        auto s = lower_name(name);
        for (auto& [n, c] : table)
            if (n == s) return c;
    } catch (...) {
    }
    return -1;
}

}  // namespace fastret
