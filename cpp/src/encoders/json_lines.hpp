// JSON-lines encoding of records: a pure function, records in, bytes out.
#pragma once
#include <span>
#include <string>

#include "fastret/record.hpp"

namespace fastret {
// Appends one line (terminated by '\n') per record to `out`:
// {"id":"<record id>","kind":"job_return","time":"2026-11-27T08:15:52.123456Z","jid":"...",
//  "minion":"...","fun":"...","tag":"...","success":true,"retcode":0,"data":<payload>}
// Empty string fields are omitted; success is omitted when unknown, retcode when absent.
// The payload is already valid JSON and is embedded as is.
void encode_json_lines(std::span<const record> batch, std::string& out);
// RFC 3339 UTC time with microseconds, e.g. 2026-11-27T08:15:52.123456Z
std::string format_rfc3339_us(std::int64_t ts_us);
// The same into p[0 .. rfc3339_us_size).
inline constexpr std::size_t rfc3339_us_size = 27;
void write_rfc3339_us(std::int64_t ts_us, char* p) noexcept;
}  // namespace fastret
