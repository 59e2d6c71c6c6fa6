// JSON-lines encoding of records (see json_lines.hpp). Pure functions: no I/O, no locale,
// no allocation beyond the output string, which is written through a json_appender.
#include "encoders/json_lines.hpp"

#include <cstring>

#include <charconv>
#include <cstdint>
#include <string_view>

#include "fastret/json_writer.hpp"

namespace fastret {

namespace {

// Days since 1970-01-01 to a proleptic Gregorian civil date (H. Hinnant's algorithm).
void civil_from_days(std::int64_t z, std::int64_t& y, unsigned& m, unsigned& d) noexcept {
    z += 719468;
    const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const auto doe = static_cast<unsigned>(z - era * 146097);                    // [0, 146096]
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;  // [0, 399]
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);                // [0, 365]
    const unsigned mp = (5 * doy + 2) / 153;                                     // [0, 11]
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y = static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2 ? 1 : 0);
}

// Writes `v` zero-padded to exactly `width` digits (v < 10^width).
void put_digits(char* p, std::uint64_t v, int width) noexcept {
    for (int i = width - 1; i >= 0; --i) {
        p[i] = static_cast<char>('0' + v % 10);
        v /= 10;
    }
}

// RFC 3339 can only express years 0000..9999; clamp to the representable range so that the
// output is always a valid timestamp (a record with such a time is garbage anyway).
constexpr std::int64_t min_ts_us = -62135596800LL * 1000000;                  // 0001-01-01T00:00:00Z
constexpr std::int64_t max_ts_us = 253402300799LL * 1000000 + 999999;         // 9999-12-31T23:59:59.999999Z

}  // namespace

void write_rfc3339_us(std::int64_t ts_us, char* p) noexcept {
    if (ts_us < min_ts_us) ts_us = min_ts_us;
    if (ts_us > max_ts_us) ts_us = max_ts_us;
    // Floor division: times before the epoch count backwards from the previous second.
    std::int64_t secs = ts_us / 1000000;
    std::int64_t us = ts_us % 1000000;
    if (us < 0) {
        us += 1000000;
        secs -= 1;
    }
    std::int64_t days = secs / 86400;
    std::int64_t sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days -= 1;
    }
    std::int64_t y = 0;
    unsigned m = 0, d = 0;
    civil_from_days(days, y, m, d);

    // YYYY-MM-DDTHH:MM:SS.uuuuuuZ
    put_digits(p, static_cast<std::uint64_t>(y), 4);
    p[4] = '-';
    put_digits(p + 5, m, 2);
    p[7] = '-';
    put_digits(p + 8, d, 2);
    p[10] = 'T';
    put_digits(p + 11, static_cast<std::uint64_t>(sod / 3600), 2);
    p[13] = ':';
    put_digits(p + 14, static_cast<std::uint64_t>(sod / 60 % 60), 2);
    p[16] = ':';
    put_digits(p + 17, static_cast<std::uint64_t>(sod % 60), 2);
    p[19] = '.';
    put_digits(p + 20, static_cast<std::uint64_t>(us), 6);
    p[26] = 'Z';
}

std::string format_rfc3339_us(std::int64_t ts_us) {
    std::string s(rfc3339_us_size, '\0');
    write_rfc3339_us(ts_us, s.data());
    return s;
}

void encode_json_lines(std::span<const record> batch, std::string& out) {
    std::size_t need = 0;
    for (const auto& r : batch)
        need += 160 + r.id.size() + r.jid.size() + r.minion.size() + r.fun.size() +
                r.tag.size() + r.payload.size();
    out.reserve(out.size() + need);

    json_appender w(out);
    // "<sep>"key":"<escaped value>" for a non-empty string field.
    const auto string_field = [&](std::string_view key, std::string_view value) {
        if (value.empty()) return;
        w.put(key);
        w.string(value);
    };
    for (const auto& r : batch) {
        // "kind" and "time" are always present, so every later field can lead with a comma;
        // "id" goes first and is omitted only when empty.
        w.put('{');
        if (!r.id.empty()) {
            w.put("\"id\":");
            w.string(r.id);
            w.put(',');
        }
        w.put("\"kind\":");
        w.string(to_string(r.kind));
        w.put(",\"time\":\"");
        write_rfc3339_us(r.ts_us, w.room(rfc3339_us_size));
        w.advance(rfc3339_us_size);
        w.put('"');
        string_field(",\"jid\":", r.jid);
        string_field(",\"minion\":", r.minion);
        string_field(",\"fun\":", r.fun);
        string_field(",\"tag\":", r.tag);
        if (r.success >= 0) w.put(r.success ? ",\"success\":true" : ",\"success\":false");
        if (r.retcode) {
            w.put(",\"retcode\":");
            char* p = w.room(24);
            w.advance(static_cast<std::size_t>(std::to_chars(p, p + 24, *r.retcode).ptr - p));
        }
        // The payload is valid JSON by contract and embedded as is. An empty payload is not
        // JSON at all; write null rather than emit a line no reader could parse.
        w.put(",\"data\":");
        if (r.payload.empty()) {
            w.put("null");
        } else {
            const std::size_t start = w.size();
            w.put(r.payload);
            // Pretty-printed JSON may contain raw CR/LF; in valid JSON they can only be
            // insignificant whitespace (inside strings they must be escaped), so turning them
            // into spaces keeps one record per line without changing the value.
            // (Two memchr scans: find_first_of with a set calls memchr once per byte.)
            const auto* data = r.payload.data();
            const auto size = r.payload.size();
            if (std::memchr(data, '\n', size) || std::memchr(data, '\r', size))
                for (char* p = w.data() + start; p != w.data() + w.size(); ++p)
                    if (*p == '\n' || *p == '\r') *p = ' ';
        }
        w.put("}\n");
    }
}

}  // namespace fastret
