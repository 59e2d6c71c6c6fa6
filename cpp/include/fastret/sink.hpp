// The sink contract.
//
// A sink delivers one batch per write() call in one round trip and classifies the outcome;
// the runtime owns everything else (queueing, batching, retry, backoff, spool, counters).
//
//  - write() is never called concurrently for one sink instance, always from the runtime's
//    I/O thread (or the caller's thread during a synchronous drain); it must not start threads.
//  - ok means durable at the other end (committed, written and flushed per policy).
//  - retry: a transient failure (connection lost, busy, 5xx); the same batch is offered again
//    after a backoff.
//  - drop: the batch can never be delivered (constraint or syntax error, HTTP 400); it is
//    counted and reported once, not retried. A sink that can tell which records are at fault
//    stores the others and returns ok with `dropped` set instead.
//  - fatal: the sink cannot work any more (bad credentials, schema missing); it stops
//    accepting and keeps its records in the spool.
//  - write() and close() are noexcept: errors are values on this path.
//  - A sink whose destination makes data durable in a separate, costly step (a local file:
//    write, then fdatasync) may defer that step: defers_sync() true. Its write() ok then
//    means "written", and the runtime calls sync() before it counts anything as delivered,
//    once for a group of batches (several batches written back to back share one
//    fdatasync). sync() ok means every batch written before the call is durable; retry or
//    fatal means none of them may be counted, and the runtime writes them again (a
//    receiver may see some records twice; the record ids identify them).
#pragma once

#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "fastret/config.hpp"
#include "fastret/record.hpp"

namespace fastret {

enum class write_status { ok, retry, drop, fatal };

std::string_view to_string(write_status s) noexcept;

struct write_result {
    write_status status = write_status::ok;
    std::string error;  // human-readable, never contains a secret
    // With ok: records of the batch the sink had to leave out because they can never be
    // stored (the rest is durable); counted as dropped and reported with `error`.
    std::size_t dropped = 0;
    // With retry: the peer asked for at least this pause (HTTP Retry-After); the runtime
    // waits max(its backoff, retry_after), capped at one hour.
    std::chrono::milliseconds retry_after{0};
    static write_result success() { return {}; }
};

class sink {
public:
    virtual ~sink() = default;
    // The backend type name ("file", "sqlite").
    virtual std::string_view type() const noexcept = 0;
    // Deliver the batch (non-empty). One round trip.
    virtual write_result write(std::span<const record> batch) noexcept = 0;
    // Two-phase delivery (see above). Both are called from the thread that calls write().
    virtual bool defers_sync() const noexcept { return false; }
    virtual write_result sync() noexcept { return write_result::success(); }
    // Release connections and files. Called once, from the thread that owns the sink.
    virtual void close() noexcept {}
    // Warnings about the configuration the host's log must show every time the sink starts
    // (e.g. TLS verification turned off); the runtime reports them when the sink is added.
    virtual std::vector<std::string> warnings() const { return {}; }
};

class job_store;

// Sink registry: one line per backend in sink_registry.cpp.
struct sink_type_info {
    std::string type;
    std::string summary;
    const std::vector<option_spec>* option_table;  // the backend's own options
    // Builds a sink from validated options (own table merged with common_sink_options()).
    std::unique_ptr<sink> (*create)(const std::string& name, const options& opts);
    // Database backends only (nullptr otherwise): opens the job store for reads, from the same
    // validated options (see fastret/job_store.hpp), and gives the schema's DDL.
    std::unique_ptr<job_store> (*open_store)(const options& opts) = nullptr;
    std::string (*schema)(const std::string& writer_role, const std::string& reader_role) = nullptr;
    void (*apply_schema)(const options& opts, const std::string& writer_role,
                         const std::string& reader_role) = nullptr;
};

const std::vector<sink_type_info>& sink_types();
const sink_type_info* find_sink_type(std::string_view type);

// Validates `raw` against the backend's table plus the common options (throws config_error,
// naming `name`). Without building anything.
options validate_sink_options(const std::string& name, const sink_type_info& info,
                              const config_map& raw);

// Validates `raw` against the backend's table plus the common options and builds the sink.
// Throws config_error (unknown type, unknown key, wrong type, out of range).
std::unique_ptr<sink> make_sink(const std::string& name, const std::string& type,
                                const config_map& raw, options* validated_out = nullptr);

}  // namespace fastret
