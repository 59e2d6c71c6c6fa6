#include "net/http_date.hpp"

#include <array>
#include <chrono>

namespace fastret::net {

namespace {

constexpr std::array<std::string_view, 7> short_days = {"Mon", "Tue", "Wed", "Thu",
                                                        "Fri", "Sat", "Sun"};
constexpr std::array<std::string_view, 7> long_days = {"Monday", "Tuesday",  "Wednesday",
                                                       "Thursday", "Friday", "Saturday",
                                                       "Sunday"};
constexpr std::array<std::string_view, 12> months = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// A cursor over the text; every step either consumes exactly what the grammar allows or
// fails the whole parse.
struct reader {
    std::string_view s;
    bool ok = true;

    bool lit(std::string_view t) {
        if (ok && s.starts_with(t)) {
            s.remove_prefix(t.size());
            return true;
        }
        ok = false;
        return false;
    }
    // Exactly `n` digits.
    int digits(std::size_t n) {
        int v = 0;
        if (!ok || s.size() < n) {
            ok = false;
            return 0;
        }
        for (std::size_t i = 0; i < n; ++i) {
            if (s[i] < '0' || s[i] > '9') {
                ok = false;
                return 0;
            }
            v = v * 10 + (s[i] - '0');
        }
        s.remove_prefix(n);
        return v;
    }
    template <std::size_t N>
    int one_of(const std::array<std::string_view, N>& names) {
        for (std::size_t i = 0; ok && i < N; ++i)
            if (s.starts_with(names[i])) {
                s.remove_prefix(names[i].size());
                return static_cast<int>(i);
            }
        ok = false;
        return -1;
    }
    // time-of-day = hour ":" minute ":" second
    void time_of_day(int& h, int& m, int& sec) {
        h = digits(2);
        lit(":");
        m = digits(2);
        lit(":");
        sec = digits(2);
    }
};

std::optional<std::int64_t> to_unix(int year, int month, int day, int h, int m, int s) {
    using namespace std::chrono;
    const year_month_day ymd{std::chrono::year{year}, std::chrono::month{static_cast<unsigned>(month)},
                             std::chrono::day{static_cast<unsigned>(day)}};
    // second 60: a leap second, which the grammar allows
    if (!ymd.ok() || h > 23 || m > 59 || s > 60) return std::nullopt;
    const std::int64_t days = sys_days{ymd}.time_since_epoch().count();
    return ((days * 24 + h) * 60 + m) * 60 + s;
}

}  // namespace

std::optional<std::int64_t> parse_http_date(std::string_view text, int now_year) {
    int h = 0, mi = 0, sec = 0;
    {  // IMF-fixdate: day-name "," SP date1 SP time-of-day SP GMT, date1 = day SP month SP year
        reader r{text};
        r.one_of(short_days);
        r.lit(", ");
        const int day = r.digits(2);
        r.lit(" ");
        const int mon = r.one_of(months);
        r.lit(" ");
        const int year = r.digits(4);
        r.lit(" ");
        r.time_of_day(h, mi, sec);
        r.lit(" GMT");
        if (r.ok && r.s.empty()) return to_unix(year, mon + 1, day, h, mi, sec);
    }
    {  // rfc850-date: day-name-l "," SP date2 SP time-of-day SP GMT, date2 = day "-" month "-" 2DIGIT
        reader r{text};
        r.one_of(long_days);
        r.lit(", ");
        const int day = r.digits(2);
        r.lit("-");
        const int mon = r.one_of(months);
        r.lit("-");
        const int yy = r.digits(2);
        r.lit(" ");
        r.time_of_day(h, mi, sec);
        r.lit(" GMT");
        if (r.ok && r.s.empty()) {
            // The year in the current century with those digits, moved back a century when
            // that is more than 50 years ahead.
            int year = now_year - now_year % 100 + yy;
            if (year > now_year + 50) year -= 100;
            return to_unix(year, mon + 1, day, h, mi, sec);
        }
    }
    {  // asctime-date: day-name SP date3 SP time-of-day SP year, date3 = month SP (2DIGIT / (SP DIGIT))
        reader r{text};
        r.one_of(short_days);
        r.lit(" ");
        const int mon = r.one_of(months);
        r.lit(" ");
        int day = 0;
        if (r.ok && r.s.starts_with(' ')) {
            r.lit(" ");
            day = r.digits(1);
        } else {
            day = r.digits(2);
        }
        r.lit(" ");
        r.time_of_day(h, mi, sec);
        r.lit(" ");
        const int year = r.digits(4);
        if (r.ok && r.s.empty()) return to_unix(year, mon + 1, day, h, mi, sec);
    }
    return std::nullopt;
}

std::optional<std::chrono::seconds> parse_retry_after(std::string_view value,
                                                      std::optional<std::string_view> date_header,
                                                      std::chrono::system_clock::time_point now) {
    using std::chrono::seconds;
    if (value.empty()) return std::nullopt;
    if (value.find_first_not_of("0123456789") == std::string_view::npos) {
        // delta-seconds; anything longer than the cap's digits is over the cap anyway
        if (value.size() > 9) return max_retry_after;
        std::int64_t v = 0;
        for (char c : value) v = v * 10 + (c - '0');
        return std::min(seconds(v), max_retry_after);
    }
    const auto now_s = std::chrono::duration_cast<seconds>(now.time_since_epoch()).count();
    const int now_year = static_cast<int>(
        std::chrono::year_month_day{std::chrono::floor<std::chrono::days>(now)}.year());
    const auto at = parse_http_date(value, now_year);
    if (!at) return std::nullopt;
    std::int64_t base = now_s;
    if (date_header)
        if (auto d = parse_http_date(*date_header, now_year)) base = *d;
    const std::int64_t wait = *at - base;
    if (wait <= 0) return seconds(0);
    return std::min(seconds(wait), max_retry_after);
}

}  // namespace fastret::net
