// Syslog encoding of records: RFC 5424 with structured data (or RFC 3164 on request) and the
// stream framings of RFC 6587/5425. Pure functions: records in, bytes out.
//
// RFC 5424 message:
//   <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [salt@32473 id=".." kind=".." jid=".."
//   minion=".." fun=".." tag=".." success="true" retcode="0"] MSG
// MSG is the record's payload (JSON; raw CR/LF, only possible as JSON whitespace, become
// spaces). Header fields keep to PRINTUSASCII (other bytes become '_') and their RFC lengths
// (HOSTNAME 255, APP-NAME 48, PROCID 128, MSGID 32); an empty field is "-". SD-PARAM values
// escape '"', '\' and ']' with a backslash; each maximal ill-formed UTF-8 subpart and each
// control character becomes U+FFFD; a value longer than 128 characters is cut to 128 and
// ends with "...". 32473 is the example enterprise number of RFC 5612 (documentation use).
//
// A message longer than max_bytes is never cut silently: with split, MSG is divided into
// parts (at UTF-8 boundaries), each a complete message with part="i/n" in its structured
// data; with truncate, one message is sent with truncated="<original MSG bytes>" in its
// structured data (RFC 3164: MSG ends with " [fastret: truncated, N bytes]").
//
// RFC 3164 message: <PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PROCID]: MSG, time in UTC, TAG at most
// 32 characters; TAG and PROCID keep only PRINTUSASCII other than ':', '[' and ']' (the bytes
// that end them), and "[PROCID]" is left out when that leaves nothing; MSG is the record as
// one JSON line (the json_lines encoding), since 3164 has no structured data.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "fastret/record.hpp"

namespace fastret {

struct syslog_format {
    bool rfc3164 = false;
    int facility = 1;          // user
    int severity = 6;          // info: successful or unknown outcome
    int failure_severity = 3;  // err: success false
    std::string hostname;      // empty: the record's minion id, else local_hostname
    std::string local_hostname = "-";
    std::string app_name = "salt";
    std::string procid = "-";
    std::size_t max_bytes = 8192;  // whole message, without the transport's framing
    bool split = true;             // false: truncate
};

// Calls `emit` once per message of the record (more than once when split).
void encode_syslog(const record& rec, const syslog_format& fmt,
                   const std::function<void(std::string_view)>& emit);

enum class syslog_framing { octet_counting, newline };

// Appends the messages encode_syslog() would emit for `rec`, each framed, to `out`: the same
// bytes as calling frame_octet_counting() / frame_newline() on each. A message that fits (the
// usual case) is written straight into `out`, without building it in a buffer of its own.
void append_syslog_framed(std::string& out, const record& rec, const syslog_format& fmt,
                          syslog_framing framing);

// RFC 5425/6587 octet counting: "<length> <message>".
void frame_octet_counting(std::string& out, std::string_view msg);
// RFC 6587 non-transparent framing: message + '\n' (the message must hold no LF; the encoder
// guarantees that).
void frame_newline(std::string& out, std::string_view msg);

// A header field restricted to PRINTUSASCII (33..126), at most `max` bytes, "-" when empty.
std::string syslog_header_field(std::string_view value, std::size_t max);
// The same, appended to `out`.
void append_header_field(std::string& out, std::string_view value, std::size_t max);
// Appends an SD-PARAM value (without quotes), escaped.
void append_sd_value(std::string& out, std::string_view value);

// Facility/severity names as Salt's stock syslog returner and syslog(3) spell them: "user",
// "LOG_USER", "local0", "LOG_LOCAL0"; "info", "LOG_INFO", "warning", "warn", "err", "error".
// -1 when unknown.
int syslog_facility_code(std::string_view name) noexcept;
int syslog_severity_code(std::string_view name) noexcept;

}  // namespace fastret
