// SIEM encodings of records: ECS-shaped JSON (Elastic Common Schema), GELF 1.1 and CEF.
// Pure functions, records in, bytes out; each appends one document without a terminator
// (the sink frames: '\n' for JSON lines and CEF, NUL for GELF over TCP, a JSON array for HTTP).
//
// ECS (one JSON object):
//   {"@timestamp":"<RFC 3339 UTC, microseconds>","ecs":{"version":"8.11.0"},
//    "event":{"kind":"event","category":[..],"type":[..],"action":"<fun>","outcome":
//             "success|failure|unknown","id":"<record id>","dataset":"salt.<kind>",
//             "module":"salt","duration":<ns>},
//    "host":{"name":"<minion>"},"user":{"name":"<user>"},"message":"<summary>",
//    "salt":{"kind":..,"jid":..,"fun":..,"tag":..,"success":bool,"retcode":n,"data":<payload>}}
//   category/type: functions state.* -> ["configuration"]/["change"]; events without a
//   function -> ["host"]/["info"]; anything else -> ["process"]/["info"].
//   event.duration (nanoseconds): the payload's top-level "duration" (milliseconds, as Salt
//   writes it), else the sum of the "duration" of each state in the payload's "return"
//   mapping; absent when neither exists or the value does not fit int64 nanoseconds. user.name: the payload's top-level "user" string
//   (publish loads and job events carry it); absent otherwise. Empty strings are omitted.
// GELF 1.1: version, host (minion or "-"), short_message, full_message (the payload),
//   timestamp (seconds with microseconds), level (syslog severity: 6, 3 when success is
//   false), _record_id, _salt_kind, _jid, _fun, _tag, _success ("true"/"false"), _retcode.
// CEF:0|SaltStack|fastret|1.0|<kind>|<fun, else tag, else kind>|<severity 3 ok, 7 failed,
//   5 unknown>|rt=<ms> dhost=<minion> act=<fun> outcome=<..> externalId=<record id>
//   cs1Label=jid cs1=<jid> cs2Label=tag cs2=<tag> cn1Label=retcode cn1=<n> msg=<payload>
//   Header fields escape '\' and '|' (CR, LF, NUL become spaces), extension values '\', '='
//   and CR/LF (as \r, \n; NUL becomes U+FFFD); ill-formed UTF-8 becomes U+FFFD everywhere.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "fastret/record.hpp"

namespace fastret {

void encode_ecs(const record& rec, std::string& out);
void encode_gelf(const record& rec, std::string& out);
void encode_cef(const record& rec, std::string& out);

// Helpers over JSON text that is known to be valid (record payloads).
// The raw text of the top-level member `key` of an object, or nullopt.
std::optional<std::string_view> json_member(std::string_view object, std::string_view key);
// event.duration in nanoseconds from a payload, as described above.
std::optional<std::int64_t> payload_duration_ns(std::string_view payload);

}  // namespace fastret
