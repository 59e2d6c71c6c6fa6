// Records for the encoder fuzzers (fuzz_json_lines, fuzz_syslog, fuzz_siem): fields taken from
// the input (arbitrary bytes in the string fields, any kind byte, time, success, retcode) and a
// payload that is valid JSON written by json_writer, sometimes pretty-printed with CR/LF between
// tokens, sometimes cut by limit_payload_size, sometimes empty. Also a reference reader of the
// RFC 3339 times the encoders write. cpp/fuzz/make_seeds.py mirrors the order of consumption.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "fastret/json_writer.hpp"
#include "fastret/record.hpp"
#include "fuzz_common.hpp"

namespace fuzz {

// Whitespace between the tokens of compact JSON text (outside strings), as a pretty-printer
// with CRLF line ends would leave it.
inline std::string spread(const std::string& json, FuzzedDataProvider& fdp) {
    static const char* ws[] = {" ", "\n", "\r\n", "\t", "\r", "  \n    "};
    std::string out = fdp.ConsumeBool() ? "\r\n" : "";
    bool in_string = false, escaped = false;
    for (char c : json) {
        out += c;
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"')
            in_string = true;
        else if ((c == '{' || c == '[' || c == ',' || c == ':') && fdp.ConsumeBool())
            out += ws[fdp.ConsumeIntegralInRange(0, 5)];
    }
    if (fdp.ConsumeBool()) out += "\n";
    return out;
}

inline std::int64_t parse_digits(std::string_view s) {
    std::int64_t v = 0;
    for (char c : s) v = v * 10 + (c - '0');
    return v;
}

// "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" to Unix microseconds, or fail.
inline std::int64_t read_rfc3339_us(const std::string& t) {
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    FUZZ_CHECK(t.size() == sizeof shape - 1, "time " + show(t));
    for (std::size_t i = 0; i < t.size(); ++i)
        FUZZ_CHECK(shape[i] == 'd' ? (t[i] >= '0' && t[i] <= '9') : t[i] == shape[i],
                   "time " + show(t));
    using namespace std::chrono;
    const year_month_day ymd{year{static_cast<int>(parse_digits(t.substr(0, 4)))},
                             month{static_cast<unsigned>(parse_digits(t.substr(5, 2)))},
                             day{static_cast<unsigned>(parse_digits(t.substr(8, 2)))}};
    FUZZ_CHECK(ymd.ok(), "not a date: " + show(t));
    const auto hh = parse_digits(t.substr(11, 2)), mm = parse_digits(t.substr(14, 2)),
               ss = parse_digits(t.substr(17, 2));
    FUZZ_CHECK(hh < 24 && mm < 60 && ss < 60, "not a time of day: " + show(t));
    const std::int64_t days = sys_days{ymd}.time_since_epoch().count();
    return ((days * 24 + hh) * 60 + mm) * 60 * 1000000 + ss * 1000000 +
           parse_digits(t.substr(20, 6));
}

struct fuzzed_record {
    fastret::record rec;
    jvalue data;  // what "data" must parse to
};

inline fuzzed_record make_record(FuzzedDataProvider& fdp) {
    fuzzed_record f;
    auto& r = f.rec;
    // Any byte: an unknown kind must still give a line ("unknown").
    r.kind = static_cast<fastret::record_kind>(
        fdp.ConsumeBool() ? fdp.ConsumeIntegralInRange(1, 5) : fdp.ConsumeIntegral<std::uint8_t>());
    switch (fdp.ConsumeIntegralInRange(0, 3)) {
        case 0:
            r.ts_us = fdp.ConsumeIntegral<std::int64_t>();
            break;
        case 1:
            r.ts_us = fdp.ConsumeIntegralInRange<std::int64_t>(-62135596800LL * 1000000 - 5,
                                                               253402300800LL * 1000000 + 5);
            break;
        default:
            r.ts_us = fdp.ConsumeIntegralInRange<std::int64_t>(-86400LL * 1000000 * 800,
                                                               86400LL * 1000000 * 40000);
    }
    r.success = fdp.ConsumeIntegral<std::int8_t>();
    if (fdp.ConsumeBool()) r.retcode = fdp.ConsumeIntegral<std::int64_t>();
    if (fdp.ConsumeBool()) r.id = fdp.ConsumeRandomLengthString(40);
    r.jid = any_string(fdp, 32);
    r.minion = any_string(fdp, 32);
    r.fun = any_string(fdp, 32);
    r.tag = any_string(fdp, 64);
    switch (fdp.ConsumeIntegralInRange(0, 3)) {
        case 0:
            f.data = jvalue::null();
            break;  // empty payload
        default: {
            fastret::json_writer w;
            json_generator gen(fdp, 24, 6);
            gen.value(w);
            r.payload = w.take();
            if (fdp.ConsumeBool())
                fastret::limit_payload_size(r.payload,
                                            fdp.ConsumeIntegralInRange<std::size_t>(0, 64), 16);
            if (fdp.ConsumeBool()) r.payload = spread(r.payload, fdp);
            f.data = must_parse(r.payload, "generated payload");
        }
    }
    return f;
}


}  // namespace fuzz
