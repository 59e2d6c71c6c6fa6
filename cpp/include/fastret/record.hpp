// A record: what one Salt call produces, encoded once, delivered to one or more sinks.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace fastret {

enum class record_kind : std::uint8_t {
    job_return = 1,   // a minion's return (returner())
    job_load = 2,     // a publish load (save_load()); payload = the load as JSON
    job_minions = 3,  // the minion list of a job (save_load()/save_minions()); payload = JSON array
    event = 4,        // an event from the master's event bus (event_return())
    job_endtime = 5,  // update_endtime(); payload = JSON string of the time
};

std::string_view to_string(record_kind kind) noexcept;
std::optional<record_kind> record_kind_from_string(std::string_view name) noexcept;

struct record {
    record_kind kind = record_kind::job_return;
    std::int64_t ts_us = 0;      // creation time, Unix microseconds (UTC)
    std::string jid;
    std::string minion;          // minion id (or master id for events)
    std::string fun;
    std::string tag;             // event tag
    std::int8_t success = -1;    // -1 unknown, 0 false, 1 true
    std::optional<std::int64_t> retcode;
    std::string payload;         // valid UTF-8 JSON text
    std::string id;              // deterministic record id, 32 lowercase hex digits
};

// The record id: SHA-256 over kind, jid, minion, fun, tag and payload (length-prefixed, so
// no two field splits collide), first 128 bits as hex. Same content, same id: a record
// delivered twice can be de-duplicated by the receiver.
std::string compute_record_id(const record& rec);
// The same, into `out` (its storage is reused).
void compute_record_id(const record& rec, std::string& out);

// Current time as Unix microseconds.
std::int64_t now_us() noexcept;

// Binary form used by the spool. serialize() never fails; deserialize() returns false on
// malformed input (it never reads outside `data`).
std::string serialize(const record& rec);
// Appends the binary form of `rec` to `out`.
void serialize_to(const record& rec, std::string& out);
// Overwrites every field of `out` (reusing its strings' storage).
bool deserialize(std::string_view data, record& out);

// Approximate in-memory / wire size of a record, used for batching by bytes.
std::size_t record_size(const record& rec) noexcept;

}  // namespace fastret
