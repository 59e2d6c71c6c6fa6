// HTTP dates (RFC 9110 section 5.6.7) and the Retry-After header (section 10.2.3). Pure
// functions, no clock of their own.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace fastret::net {

// Seconds since the Unix epoch of an HTTP-date in any of the three forms a recipient must
// accept: IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", the obsolete RFC 850 form
// "Sunday, 06-Nov-94 08:49:37 GMT" (a two-digit year more than 50 years after `now_year` is
// taken as the most recent past year with those digits, as section 5.6.7 requires) and
// asctime "Sun Nov  6 08:49:37 1994". Names are case-sensitive, as the grammar says; the
// day name must be a real one but need not match the date. nullopt for anything else,
// including impossible dates (Feb 30) and times (25:00:00).
std::optional<std::int64_t> parse_http_date(std::string_view text, int now_year);

// The longest wait a Retry-After is allowed to ask for; a longer one is cut to this (a
// misconfigured server must not park a sink for days; the runtime caps at the same value).
inline constexpr std::chrono::seconds max_retry_after{3600};

// The pause a Retry-After value asks for, in [0, max_retry_after]: delta-seconds (digits only)
// as they are, an HTTP-date relative to the reply's own Date header when that is a valid
// HTTP-date (so a skewed local clock does not matter), else relative to `now`. A date in the
// past is 0 (retry at once, after the runtime's own backoff). nullopt when the value is
// neither form (it is then ignored).
std::optional<std::chrono::seconds> parse_retry_after(std::string_view value,
                                                      std::optional<std::string_view> date_header,
                                                      std::chrono::system_clock::time_point now);

}  // namespace fastret::net
