// The per-process runtime: one io_context and one I/O thread, created on first use, and per
// sink a worker that batches records from the sink's spool (or bounded memory queue), writes
// them, retries with capped full-jitter backoff and keeps counters.
//
// Fork: the runtime remembers the pid that created it. runtime::instance() in a child (pid
// changed) abandons the parent's runtime object without touching it (its thread does not
// exist in the child, its mutexes may be held) and builds a fresh one. Sinks must be added
// again in the child; the Python layer does that per pid.
//
// No thread is started until the first sink is added. No destructor joins a thread: close()
// does, and an atexit hook in the Python layer calls it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fastret/config.hpp"
#include "fastret/record.hpp"
#include "fastret/sink.hpp"
#include "fastret/spool.hpp"

namespace fastret {

enum class overflow_policy { block, drop_newest, drop_oldest };

struct sink_policy {
    // batching
    std::size_t batch_max_records = 500;
    std::size_t batch_max_bytes = 4u << 20;
    std::chrono::milliseconds batch_max_delay{20};
    // retry: capped exponential backoff with full jitter
    std::chrono::milliseconds retry_initial{100};
    std::chrono::milliseconds retry_max{30000};
    // memory queue (used when the spool is off)
    std::size_t queue_max_records = 100000;
    overflow_policy overflow = overflow_policy::drop_newest;
    std::chrono::milliseconds block_timeout{1000};
    // spool (write-ahead); when unset, the bounded memory queue is used
    std::optional<spool_options> spool;
    // records larger than this (payload bytes) are replaced by a truncation marker
    std::size_t max_record_bytes = 16u << 20;
};

// Builds a policy from validated common options (see common_sink_options()). `spool_root` is
// the directory under which the sink's spool directory <spool_root>/<sink name> is placed
// when the options leave spool.dir empty.
sink_policy policy_from_options(const options& opts, const std::string& sink_name,
                                const std::string& spool_root);

struct sink_stats {
    std::string name;
    std::string type;
    std::uint64_t accepted = 0;    // records handed to enqueue() and kept
    std::uint64_t delivered = 0;   // records acknowledged by the sink (write ok)
    std::uint64_t retried = 0;     // write attempts that returned retry
    std::uint64_t spooled = 0;     // records written to the spool
    std::uint64_t replayed = 0;    // records delivered from segments of earlier processes
    std::uint64_t dropped = 0;     // records lost on purpose: overflow, spool full, drop outcome
    std::uint64_t failed = 0;      // write attempts that returned drop or fatal
    std::uint64_t truncated = 0;   // records whose payload was replaced by a truncation marker
    std::uint64_t bytes = 0;       // payload bytes delivered
    std::uint64_t queue_depth = 0; // records accepted but not yet delivered
    std::string last_error;
    bool fatal = false;
};

using sink_id = std::size_t;

class runtime {
public:
    // The process's runtime; created on first call, rebuilt after fork.
    static runtime& instance();

    // Registers a sink (takes ownership) and starts the I/O thread if needed. Records left in
    // the sink's spool directory by earlier processes are replayed first.
    sink_id add_sink(std::string name, std::unique_ptr<sink> s, sink_policy policy);

    // Hands records to a sink. Applies the size limit (a cut record gets its id here, over
    // its original content); other records without an id get one on the I/O thread, before
    // the sink sees them. Never blocks on
    // the sink's I/O (only, with overflow=block and no spool, up to block_timeout on a full
    // queue). Returns a ticket: the sequence number flush_until() can wait for.
    std::uint64_t enqueue(sink_id id, std::vector<record> records);
    // The same for records the caller keeps: they are serialized into the spool (or copied
    // into the memory queue), never changed; one batch can go to several sinks this way.
    std::uint64_t enqueue(sink_id id, std::span<const record> records);

    // Waits until every record enqueued to `id` up to `ticket` is acknowledged by the sink, or
    // the timeout passes. Returns true if delivered. Records not delivered stay queued (and in
    // the spool, when it is on).
    bool flush_until(sink_id id, std::uint64_t ticket, std::chrono::milliseconds timeout);

    // Write and sync attempts of sink `id` that failed so far (retried, dropped or fatal).
    std::uint64_t failures(sink_id id);
    enum class wait_result { delivered, failed, timed_out };
    // Like flush_until(), but also stops as soon as the sink's failure count exceeds
    // `failures_before` (a write failed since the caller took that count): a caller that need
    // not wait for a sink that is down (its records are durable in the spool) returns at once.
    wait_result wait_delivered(sink_id id, std::uint64_t ticket, std::chrono::milliseconds timeout,
                               std::uint64_t failures_before);
    // Waits until all sinks have delivered everything accepted so far, or the timeout.
    bool flush(std::chrono::milliseconds timeout);

    // Waits until every sink has nothing left to deliver: its own records and the segments of
    // earlier processes that it adopted (what `fastret spool drain` needs). False on timeout or
    // when a sink stopped with a fatal error.
    bool drain(std::chrono::milliseconds timeout);

    // Writes out what the sinks have pending (up to the timeout), stops the I/O thread, closes
    // the sinks. Undelivered records stay in the spool for the next process. Idempotent.
    void close(std::chrono::milliseconds timeout);

    std::vector<sink_stats> stats() const;

    // Messages for the host's log (failures, drops, spool full), oldest first; each is reported
    // once. Bounded: past 256 unread messages the oldest are discarded and counted in a final
    // "N messages discarded" entry. level: 30 warning, 40 error (Python logging levels).
    struct log_message {
        int level;
        std::string text;
    };
    std::vector<log_message> take_messages();
    std::optional<sink_id> find(const std::string& name) const;
    std::size_t sink_count() const;
    bool is_closed() const;

    ~runtime();
    runtime(const runtime&) = delete;
    runtime& operator=(const runtime&) = delete;

    // For tests: a runtime that is not the process singleton.
    runtime();

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace fastret
