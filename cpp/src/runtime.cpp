// The runtime: one io_context and one I/O thread per process; per sink a worker that runs on
// its own strand. Callback style: each step is an on_<step> handler.
#include "fastret/runtime.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include "fastret/json_writer.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

namespace asio = boost::asio;

namespace fastret {

sink_policy policy_from_options(const options& o, const std::string& sink_name,
                                const std::string& spool_root) {
    using std::chrono::milliseconds;
    sink_policy p;
    p.batch_max_records = static_cast<std::size_t>(o.get_int("batch_max_records"));
    p.batch_max_bytes = static_cast<std::size_t>(o.get_int("batch_max_bytes"));
    p.batch_max_delay = milliseconds(o.get_int("batch_max_delay_ms"));
    p.retry_initial = milliseconds(o.get_int("retry_initial_ms"));
    p.retry_max = milliseconds(o.get_int("retry_max_ms"));
    p.queue_max_records = static_cast<std::size_t>(o.get_int("queue_max_records"));
    const auto& overflow = o.get_string("overflow");
    p.overflow = overflow == "block"         ? overflow_policy::block
                 : overflow == "drop_oldest" ? overflow_policy::drop_oldest
                                             : overflow_policy::drop_newest;
    p.block_timeout = milliseconds(o.get_int("block_timeout_ms"));
    p.max_record_bytes = static_cast<std::size_t>(o.get_int("max_record_bytes"));
    if (o.get_bool("spool")) {
        spool_options s;
        const auto& dir = o.get_string("spool_dir");
        if (!dir.empty()) {
            s.dir = dir;
        } else {
            if (spool_root.empty())
                throw config_error(fmt::format(
                    "sink '{}': option 'spool_dir' is empty and no spool root is known; set "
                    "spool_dir or spool false",
                    sink_name));
            s.dir = std::filesystem::path(spool_root) / sink_name;
        }
        const auto& fs = o.get_string("spool_fsync");
        s.fsync = fs == "never" ? fsync_policy::never
                  : fs == "batch" ? fsync_policy::batch
                                  : fsync_policy::interval;
        s.fsync_interval_ms = static_cast<std::uint32_t>(o.get_int("spool_fsync_interval_ms"));
        s.max_bytes = static_cast<std::uint64_t>(o.get_int("spool_max_bytes"));
        s.segment_bytes = static_cast<std::uint64_t>(o.get_int("spool_segment_bytes"));
        s.full_policy = o.get_string("spool_full_policy") == "drop_oldest"
                            ? spool_full_policy::drop_oldest
                            : spool_full_policy::reject_new;
        p.spool = s;
    }
    return p;
}

namespace {

constexpr std::size_t max_messages = 256;
constexpr auto housekeeping_period = std::chrono::seconds(5);

std::chrono::milliseconds full_jitter_backoff(const sink_policy& p, unsigned attempt) {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    auto cap = p.retry_max.count();
    auto base = p.retry_initial.count();
    long long ceiling = base;
    for (unsigned i = 1; i < attempt && ceiling < cap; ++i) ceiling *= 2;
    ceiling = std::min<long long>(ceiling, cap);
    std::uniform_int_distribution<long long> dist(0, ceiling);
    return std::chrono::milliseconds(dist(rng));
}

}  // namespace

// The batch in flight. Retiring it keeps its records, and the next batch overwrites them, so
// that their strings keep their storage: in the steady state filling a batch from the spool
// allocates nothing.
class record_batch {
public:
    // A record to overwrite, appended to the batch.
    record& add() {
        if (size_ == items_.size()) items_.emplace_back();
        return items_[size_++];
    }
    void drop_last() noexcept { --size_; }
    void clear() noexcept {
        // A batch of huge records leaves no huge buffers behind.
        for (std::size_t i = 0; i < size_; ++i)
            if (items_[i].payload.capacity() > (std::size_t{1} << 20)) std::string().swap(items_[i].payload);
        size_ = 0;
    }
    bool empty() const noexcept { return size_ == 0; }
    std::size_t size() const noexcept { return size_; }
    std::span<const record> records() const noexcept { return {items_.data(), size_}; }
    record* begin() noexcept { return items_.data(); }
    record* end() noexcept { return items_.data() + size_; }
    const record* begin() const noexcept { return items_.data(); }
    const record* end() const noexcept { return items_.data() + size_; }

private:
    std::vector<record> items_;
    std::size_t size_ = 0;
};

// One sink's queue, batcher and retry loop. Fields marked (io) are touched only on the strand;
// the rest under mu_.
class sink_worker {
public:
    sink_worker(asio::io_context& io, std::string name, std::unique_ptr<sink> s, sink_policy p,
                std::function<void(int, std::string)> report)
        : strand_(asio::make_strand(io)), timer_(strand_), housekeeping_(strand_),
          name_(std::move(name)), sink_(std::move(s)), policy_(std::move(p)),
          report_(std::move(report)) {
        stats_.name = name_;
        stats_.type = std::string(sink_->type());
        if (policy_.spool) spool_ = std::make_unique<spool>(*policy_.spool);
        adopted_pending_ = spool_ != nullptr;
    }

    const std::string& name() const { return name_; }

    // Called once the I/O thread runs: replay what earlier processes left, start housekeeping.
    void start() {
        asio::post(strand_, [this] {
            if (spool_) {
                try {
                    spool_->adopt_orphans();
                } catch (const std::exception& e) {
                    report(40, fmt::format("spool: cannot adopt earlier segments: {}", e.what()));
                }
            }
            schedule_housekeeping();
            std::lock_guard lk(mu_);
            request_pump_locked(true);
        });
    }

    // Records the worker may take (moved into the memory queue).
    std::uint64_t enqueue(std::vector<record>& records) {
        if (policy_.spool) return enqueue_spool(records);
        std::size_t truncated = 0;
        for (auto& r : records) truncated += cut_if_too_large(r) ? 1 : 0;
        return enqueue_memory(records, truncated);
    }

    // Records the caller keeps (serialized into the spool, or copied).
    std::uint64_t enqueue(std::span<const record> records) {
        if (policy_.spool) return enqueue_spool(records);
        std::vector<record> copy(records.begin(), records.end());
        return enqueue(copy);
    }

    bool flush_until(std::uint64_t ticket, std::chrono::milliseconds timeout) {
        std::unique_lock lk(mu_);
        request_pump_locked(true);
        return cv_.wait_for(lk, timeout, [&] { return acked_locked() >= ticket || stats_.fatal || closed_; }) &&
               acked_locked() >= ticket;
    }

    std::uint64_t failures() {
        std::lock_guard lk(mu_);
        return stats_.retried + stats_.failed;
    }

    runtime::wait_result wait_delivered(std::uint64_t ticket, std::chrono::milliseconds timeout,
                                        std::uint64_t failures_before) {
        std::unique_lock lk(mu_);
        request_pump_locked(true);
        const auto failed = [&] { return stats_.fatal || stats_.retried + stats_.failed > failures_before; };
        cv_.wait_for(lk, timeout, [&] { return acked_locked() >= ticket || failed() || closed_; });
        if (acked_locked() >= ticket) return runtime::wait_result::delivered;
        return failed() ? runtime::wait_result::failed : runtime::wait_result::timed_out;
    }

    // Idle with nothing pending, own or adopted.
    bool wait_drained(std::chrono::steady_clock::time_point deadline) {
        std::unique_lock lk(mu_);
        request_pump_locked(true);
        return cv_.wait_until(lk, deadline, [&] {
            return stats_.fatal || closed_ ||
                   (state_ == pump_state::idle && pending_locked() == 0 && !adopted_pending_);
        }) && !stats_.fatal && pending_locked() == 0 && !adopted_pending_;
    }

    std::uint64_t last_ticket() {
        std::lock_guard lk(mu_);
        return ticket_;
    }

    sink_stats stats() {
        std::lock_guard lk(mu_);
        auto s = stats_;
        s.queue_depth = pending_locked();
        return s;
    }

    // Stop timers and close the sink, on the strand. The caller then stops the io_context.
    void close_on_strand(std::shared_ptr<std::promise<void>> done) {
        asio::post(strand_, [this, done] {
            {
                // First: no pump pass, delay or backoff is requested after this point.
                std::lock_guard lk(mu_);
                closed_ = true;
            }
            ++timer_gen_;
            timer_.cancel();
            housekeeping_.cancel();
            // Written batches that were not synced yet: made durable if the sink can, else
            // they stay in the spool and the next process writes them again.
            if (group_.batches > 0 && sink_->sync().status == write_status::ok)
                acknowledge(group_.end, group_.frames, group_.records, group_.bytes, true,
                            group_.left_out_error, group_.left_out);
            group_ = {};
            sink_->close();
            cv_.notify_all();
            done->set_value();
        });
    }

    // After the I/O thread has stopped: release the spool (locks, fully acknowledged segments).
    void release() {
        std::unique_lock lk(mu_);
        closed_ = true;
        // enqueue_spool() appends outside mu_; the spool must outlive every append that started
        // before closed_ was set (later ones are refused).
        cv_.wait(lk, [&] { return appenders_ == 0; });
        if (spool_) {
            if (state_ != pump_state::fatal) {
                try {
                    spool_->sync();
                } catch (...) {
                }
            }
        } else if (pending_ > 0) {
            // Without a spool, what was not delivered by now is lost: count and say so.
            stats_.dropped += pending_;
            report(40, fmt::format("closed with {} undelivered record(s); dropped (no spool)", pending_));
            pending_ = 0;
        }
        spool_.reset();
        cv_.notify_all();
    }

private:
    // idle: nothing requested. delayed: a pass will run when the batching delay ends (or a
    // flush cuts it short). scheduled: a pass is posted. writing: a pass runs. backoff: waiting
    // to retry the batch in flight. fatal: stopped for good.
    enum class pump_state { idle, delayed, scheduled, writing, backoff, fatal };

    void report(int level, std::string text) { report_(level, fmt::format("fastret sink '{}': {}", name_, text)); }

    std::uint64_t acked_locked() const { return policy_.spool ? spool_acked_ : processed_; }

    // Own records accepted and not yet retired. Spool mode derives it from the sequences rather
    // than keeping a counter: the worker can deliver (and ack) frames before the appending
    // caller gets mu_ back to count them, so increments and decrements arrive in either order.
    // ticket_ - acked is right again as soon as the caller has updated ticket_. Frames dropped
    // by drop_oldest are covered once a later frame is acknowledged.
    std::uint64_t pending_locked() const {
        if (!policy_.spool) return pending_;
        const auto acked = acked_locked();
        return ticket_ > acked ? ticket_ - acked : 0;
    }

    // After close nothing is queued any more (the I/O thread is gone or going, the spool is
    // being released): the records are counted as dropped, and reported the first time.
    std::uint64_t refuse_closed_locked(std::size_t n) {
        stats_.dropped += n;
        if (!reported_closed_ && n > 0) {
            reported_closed_ = true;
            report(40, fmt::format("runtime closed: {} record(s) dropped (further drops after close are only counted)", n));
        }
        return ticket_;
    }

    // Applies the size limit. The id of a cut record is taken over what it was, so that two
    // different large payloads with the same head stay two records. Other records get their
    // id on the I/O thread (assign_ids): hashing costs about half a microsecond a record,
    // which callers (Salt's processes) should not pay.
    bool cut_if_too_large(record& r) const {
        if (r.payload.size() <= policy_.max_record_bytes) return false;
        if (r.id.empty()) r.id = compute_record_id(r);
        limit_payload_size(r.payload, policy_.max_record_bytes);
        return true;
    }

    // The serialized records of one enqueue_spool() call. A thread's next call reuses the
    // buffer, so that appending a batch allocates nothing.
    struct spool_frames {
        std::string bytes;
        std::vector<std::size_t> ends;
        std::vector<std::string_view> views;
        void clear() {
            if (bytes.capacity() > (std::size_t{8} << 20)) std::string().swap(bytes);
            bytes.clear();
            ends.clear();
            views.clear();
        }
    };

    std::uint64_t enqueue_spool(std::span<const record> records) {
        thread_local spool_frames buf;
        buf.clear();
        std::size_t truncated = 0;
        for (const auto& r : records) {
            if (r.payload.size() > policy_.max_record_bytes) {
                record cut = r;
                cut_if_too_large(cut);
                serialize_to(cut, buf.bytes);
                ++truncated;
            } else {
                serialize_to(r, buf.bytes);
            }
            buf.ends.push_back(buf.bytes.size());
        }
        std::size_t start = 0;
        for (auto end : buf.ends) {
            buf.views.emplace_back(buf.bytes.data() + start, end - start);
            start = end;
        }
        const std::span<const std::string_view> frames(buf.views);
        {
            std::lock_guard lk(mu_);
            if (closed_) return refuse_closed_locked(frames.size());
            ++appenders_;  // keeps spool_ alive: release() waits for appenders_ == 0
        }
        spool_append_result res{};
        std::string error;
        try {
            res = spool_->append(frames);
        } catch (const std::exception& e) {
            error = e.what();
            res.rejected = frames.size();
        }
        std::lock_guard lk(mu_);
        if (--appenders_ == 0 && closed_) cv_.notify_all();
        // Appended frames are counted even if close() began meanwhile: they are in the spool
        // and the next process replays them.
        stats_.accepted += res.appended;
        stats_.spooled += res.appended;
        stats_.truncated += truncated;
        stats_.dropped += res.rejected + res.dropped_old;
        // Concurrent callers may get here in either order: the ticket never goes backwards.
        if (res.appended) ticket_ = std::max(ticket_, res.sequence);
        if (!error.empty()) {
            stats_.last_error = "spool write failed: " + error;
            report(40, fmt::format("{} record(s) lost: spool write failed: {}", res.rejected, error));
        } else if (res.rejected) {
            stats_.last_error = "spool full";
            report(40, fmt::format("spool full: {} new record(s) refused", res.rejected));
        }
        if (res.dropped_old) report(30, fmt::format("spool full: {} oldest record(s) dropped", res.dropped_old));
        request_pump_locked(false);
        return res.appended ? res.sequence : ticket_;
    }

    std::uint64_t enqueue_memory(std::vector<record>& records, std::size_t truncated) {
        std::unique_lock lk(mu_);
        if (closed_) return refuse_closed_locked(records.size());
        stats_.truncated += truncated;
        std::size_t refused = 0, evicted = 0, lost = 0;
        // overflow=block: one block_timeout for the whole call, not one per record, so a caller
        // is never held longer than the configured time.
        std::optional<std::chrono::steady_clock::time_point> deadline;
        for (auto& r : records) {
            // A stopped sink (fatal, no spool) never drains its queue: do not keep records in it.
            if (closed_ || stats_.fatal) {
                ++lost;
                continue;
            }
            if (queue_.size() >= policy_.queue_max_records && policy_.overflow == overflow_policy::block) {
                if (!deadline) deadline = std::chrono::steady_clock::now() + policy_.block_timeout;
                request_pump_locked(true);
                cv_.wait_until(lk, *deadline, [&] {
                    return queue_.size() < policy_.queue_max_records || closed_ || stats_.fatal;
                });
                if (closed_ || stats_.fatal) {
                    ++lost;
                    continue;
                }
            }
            if (queue_.size() >= policy_.queue_max_records) {
                if (policy_.overflow == overflow_policy::drop_oldest) {
                    queue_.pop_front();
                    // processed_ counts retired tickets in order. The batch in flight holds the
                    // tickets just below the evicted one and is not retired yet; counting the
                    // eviction now would make flush_until() report that batch as delivered.
                    if (taken_ > 0)
                        ++evicted_behind_;
                    else
                        ++processed_;
                    --pending_;
                    ++evicted;
                } else {
                    ++refused;
                    continue;
                }
            }
            queue_.push_back(std::move(r));
            ++pending_;
            ++stats_.accepted;
            ++ticket_;
        }
        if (refused + evicted) {
            stats_.dropped += refused + evicted;
            stats_.last_error = "queue full";
            report(40, fmt::format("queue full: {} record(s) dropped", refused + evicted));
        }
        if (lost) stats_.dropped += lost;  // the fatal stop (or close) was reported already
        if (evicted) cv_.notify_all();     // processed_ may have reached a waiter's ticket
        request_pump_locked(false);
        return ticket_;
    }

    // Ask for a pump pass unless one is pending, running, or waiting out a backoff. `now` (a
    // flush, a blocked producer) also cuts a pending batching delay short. Called from any
    // thread under mu_, so it never touches timer_ itself (an asio timer must not be used from
    // two threads at once): the delay is armed and cancelled on the strand.
    void request_pump_locked(bool now) {
        if (closed_) return;
        // The batching delay waits for a batch to fill; once it is full, waiting longer only
        // leaves the worker idle while records pile up.
        if (state_ == pump_state::delayed && pending_locked() >= policy_.batch_max_records) now = true;
        if (now && state_ == pump_state::delayed) {
            state_ = pump_state::scheduled;
            asio::post(strand_, [this] {
                ++timer_gen_;  // a delay that already expired must not start a second pass
                timer_.cancel();
                on_pump();
            });
            return;
        }
        if (state_ == pump_state::writing) {
            // The running pass may already have looked for records: it must look again.
            repump_ = true;
            return;
        }
        if (state_ != pump_state::idle) return;
        const auto pending = pending_locked();
        if (pending == 0 && !(spool_ && adopted_pending_)) return;
        if (now || policy_.batch_max_delay.count() == 0 || pending >= policy_.batch_max_records) {
            state_ = pump_state::scheduled;
            asio::post(strand_, [this] { on_pump(); });
        } else {
            state_ = pump_state::delayed;
            asio::post(strand_, [this] { arm_batch_delay(); });
        }
    }

    // (io) Start the batching delay, unless a flush cut it short before it began.
    void arm_batch_delay() {
        {
            std::lock_guard lk(mu_);
            if (state_ != pump_state::delayed || closed_) return;
        }
        arm_timer(policy_.batch_max_delay, pump_state::delayed);
    }

    // (io) After `delay`, run a pump pass if the worker is still `waiting` (a flush may have
    // moved it on); arming the timer again supersedes an earlier arming.
    void arm_timer(std::chrono::milliseconds delay, pump_state waiting) {
        auto gen = ++timer_gen_;
        timer_.expires_after(delay);
        timer_.async_wait([this, gen, waiting](boost::system::error_code ec) {
            if (ec || gen != timer_gen_) return;
            {
                std::lock_guard lk(mu_);
                if (state_ != waiting) return;
                state_ = pump_state::scheduled;
            }
            on_pump();
        });
    }

    // (io) the deterministic record ids, for records of the batch (from `first` on) that came
    // without one.
    void assign_ids(std::size_t first = 0) {
        for (auto* r = inflight_.begin() + first; r != inflight_.end(); ++r)
            if (r->id.empty()) compute_record_id(*r, r->id);
    }

    // (io) take the next batch, or keep the one that is waiting for a retry.
    bool fill_batch() {
        if (!inflight_.empty()) return true;
        if (spool_) {
            // Read a chunk at a time, hashing each chunk before the next: the spool's lock is
            // held while frames are read, and callers' appends wait for it.
            constexpr std::size_t read_chunk = 256;
            std::size_t frames = 0, bad = 0, bytes = 0, hashed = 0;
            const auto take = [&](std::string_view payload) {
                bytes += payload.size();
                if (!deserialize(payload, inflight_.add())) {
                    inflight_.drop_last();
                    ++bad;
                }
            };
            while (frames < policy_.batch_max_records && (frames == 0 || bytes < policy_.batch_max_bytes)) {
                std::size_t n = 0;
                try {
                    n = spool_->read(std::min(read_chunk, policy_.batch_max_records - frames),
                                     policy_.batch_max_bytes - std::min(bytes, policy_.batch_max_bytes),
                                     take, inflight_end_);
                } catch (const std::exception& e) {
                    report(40, fmt::format("spool read failed: {}", e.what()));
                    if (frames == 0) {
                        inflight_.clear();
                        return false;
                    }
                    break;  // deliver what was read
                }
                if (n == 0) break;
                frames += n;
                assign_ids(hashed);
                hashed = inflight_.size();
            }
            if (frames == 0) return false;
            inflight_frames_ = frames;
            if (bad) {
                std::lock_guard lk(mu_);
                stats_.dropped += bad;
                report(40, fmt::format("{} spooled record(s) could not be decoded and were skipped", bad));
            }
            return true;
        }
        {
            std::lock_guard lk(mu_);
            std::size_t bytes = 0;
            while (!queue_.empty() && inflight_.size() < policy_.batch_max_records) {
                auto sz = record_size(queue_.front());
                if (!inflight_.empty() && bytes + sz > policy_.batch_max_bytes) break;
                bytes += sz;
                inflight_.add() = std::move(queue_.front());
                queue_.pop_front();
            }
            inflight_frames_ = inflight_.size();
            taken_ = inflight_.size();
            if (taken_) cv_.notify_all();  // room in the queue: wake producers blocked on overflow
        }
        assign_ids();
        return !inflight_.empty();
    }

    // (io) Acknowledge frames up to `end` (spool mode) and count what they held: `records`
    // delivered (less `left_out`, records the sink reported it could not store: ok with
    // write_result::dropped), or dropped when !delivered.
    void acknowledge(const spool_position& end, std::size_t frames, std::size_t records,
                     std::uint64_t bytes, bool delivered, const std::string& error,
                     std::size_t left_out) {
        std::uint64_t own_before = spool_ ? spool_->acked_sequence() : 0;
        if (spool_) {
            try {
                spool_->ack(end);
            } catch (const std::exception& e) {
                report(40, fmt::format("spool ack failed (records may be delivered again): {}", e.what()));
            }
        }
        std::lock_guard lk(mu_);
        if (spool_) {
            // Waiters see the ack only now, with the counters: after flush_until() returns true,
            // stats() shows the records as delivered.
            spool_acked_ = spool_->acked_sequence();
            auto own = spool_acked_ - own_before;
            auto earlier = frames > own ? frames - own : 0;  // frames from segments of earlier processes
            if (delivered) stats_.replayed += earlier;
            adopted_pending_ = spool_->has_unread();
        } else {
            processed_ += frames + evicted_behind_;  // see enqueue_memory()
            evicted_behind_ = 0;
            taken_ = 0;
            pending_ -= std::min<std::uint64_t>(pending_, frames);
        }
        if (delivered) {
            left_out = std::min(left_out, records);
            stats_.delivered += records - left_out;
            stats_.bytes += bytes;
            if (left_out) {
                stats_.dropped += left_out;
                stats_.last_error = error;
                report(40, fmt::format("{} record(s) of a batch dropped, the sink refused them: {}",
                                       left_out, error));
            }
        } else {
            stats_.dropped += frames;
            stats_.failed += 1;
            stats_.last_error = error;
            report(40, fmt::format("{} record(s) dropped, the sink refused them: {}", frames, error));
        }
        cv_.notify_all();
    }

    std::uint64_t inflight_bytes() const {
        std::uint64_t bytes = 0;
        for (const auto& r : inflight_) bytes += r.payload.size();
        return bytes;
    }

    void clear_inflight() {
        inflight_.clear();
        inflight_frames_ = 0;
        attempt_ = 0;
    }

    // (io) retire the in-flight batch after ok or drop (see acknowledge()).
    void retire_batch(bool delivered, const std::string& error, std::size_t left_out = 0) {
        acknowledge(inflight_end_, inflight_frames_, inflight_.size(), inflight_bytes(), delivered,
                    error, left_out);
        clear_inflight();
    }

    // (io) The batch in flight was written by a sink that defers its sync: it joins the group
    // of batches the next sync() makes durable.
    void join_group(const write_result& res) {
        if (group_.batches == 0) group_.first_write = std::chrono::steady_clock::now();
        ++group_.batches;
        group_.end = inflight_end_;
        group_.frames += inflight_frames_;
        group_.records += inflight_.size();
        group_.bytes += inflight_bytes();
        group_.left_out += res.dropped;
        if (res.dropped) group_.left_out_error = res.error;
        clear_inflight();
    }

    // (io) Sync the group once it is large or old enough: the bound on how long its records
    // wait to count as delivered, and on what a failed sync makes the worker write again.
    bool group_due() const {
        return group_.bytes >= 4 * policy_.batch_max_bytes ||
               std::chrono::steady_clock::now() - group_.first_write >= policy_.batch_max_delay;
    }

    // (io) Make the group durable and acknowledge it. false: the sync failed; nothing of the
    // group counts, its records (and the batch in flight) are read from the spool again
    // after a backoff, or stay there when the sink stopped.
    bool sync_group() {
        if (group_.batches == 0) return true;
        auto res = sink_->sync();
        if (res.status == write_status::ok) {
            acknowledge(group_.end, group_.frames, group_.records, group_.bytes, true,
                        group_.left_out_error, group_.left_out);
            group_ = {};
            return true;
        }
        if (res.status == write_status::drop) res.status = write_status::retry;  // no such outcome here
        group_ = {};
        clear_inflight();
        spool_->rewind();
        on_failure(res, "sync");
        return false;
    }

    // (io) A write or sync that failed: back off and retry (the batch in flight, if any, is
    // offered again), or stop for good.
    void on_failure(const write_result& res, std::string_view what) {
        if (res.status == write_status::retry) {
            ++attempt_;
            // A peer's Retry-After is honoured (capped at an hour), never undercut.
            auto delay = std::max<std::chrono::milliseconds>(
                full_jitter_backoff(policy_, attempt_),
                std::min<std::chrono::milliseconds>(res.retry_after, std::chrono::hours(1)));
            {
                std::lock_guard lk(mu_);
                ++stats_.retried;
                if (stats_.last_error != res.error || attempt_ == 1)
                    report(30, fmt::format("{} failed, retrying in {} ms (attempt {}): {}", what,
                                           delay.count(), attempt_, res.error));
                stats_.last_error = res.error;
                state_ = pump_state::backoff;
            }
            cv_.notify_all();  // wait_delivered() stops at a failure
            arm_timer(delay, pump_state::backoff);
            return;
        }
        if (spool_) spool_->rewind();
        std::lock_guard lk(mu_);
        ++stats_.failed;
        stats_.fatal = true;
        stats_.last_error = res.error;
        state_ = pump_state::fatal;
        if (spool_) {
            report(40, fmt::format("sink stopped (fatal): {}; records stay in the spool", res.error));
        } else {
            // Without a spool there is nowhere to keep them.
            auto lost = inflight_.size() + queue_.size();
            stats_.dropped += lost;
            queue_.clear();
            pending_ = 0;
            taken_ = 0;
            evicted_behind_ = 0;
            report(40, fmt::format("sink stopped (fatal): {}; {} queued record(s) dropped (no spool)",
                                   res.error, lost));
        }
        inflight_.clear();
        cv_.notify_all();
    }

    void on_pump() {
        {
            std::lock_guard lk(mu_);
            if (closed_ || state_ == pump_state::fatal) return;
            state_ = pump_state::writing;
            repump_ = false;
        }
        if (!fill_batch()) {
            // Nothing more to write: what was written is made durable now.
            if (!sync_group()) return;
            std::lock_guard lk(mu_);
            if (repump_) return schedule_pass_locked();
            state_ = pump_state::idle;
            if (spool_) adopted_pending_ = false;
            cv_.notify_all();
            return;
        }
        write_result res;
        if (inflight_.empty()) {
            res = write_result::success();  // every frame of the batch was undecodable
        } else {
            res = sink_->write(inflight_.records());
        }
        if (res.status == write_status::ok && sink_->defers_sync()) {
            if (spool_) {
                // Batches written back to back share one sync (group commit): the next pass
                // writes the next batch, and the pass that finds nothing more syncs.
                join_group(res);
                if (group_due() && !sync_group()) return;
            } else {
                // Without a spool, the records of a batch that failed to sync exist only in
                // the batch: it is synced alone, and written again if that fails.
                auto synced = sink_->sync();
                if (synced.status != write_status::ok) {
                    if (synced.status == write_status::drop) synced.status = write_status::retry;
                    on_failure(synced, "sync");
                    return;
                }
                retire_batch(true, res.error, res.dropped);
            }
        } else if (res.status == write_status::ok) {
            retire_batch(true, res.error, res.dropped);
        } else {
            // The group goes first: its acknowledgement must not follow this batch's.
            if (!sync_group()) return;
            if (res.status != write_status::drop) {
                on_failure(res, "write");
                return;
            }
            retire_batch(false, res.error);
        }
        std::lock_guard lk(mu_);
        state_ = pump_state::idle;
        bool more = pending_locked() > 0 || adopted_pending_ || repump_ || group_.batches > 0;
        if (more) {
            schedule_pass_locked();
        } else {
            // wait_drained() waits for idle; retire_batch() notified while still writing.
            cv_.notify_all();
        }
    }

    void schedule_pass_locked() {
        state_ = pump_state::scheduled;
        asio::post(strand_, [this] { on_pump(); });
    }

    // (io) every few seconds: adopt segments that other processes left behind, fsync on
    // schedule even when no call comes.
    void schedule_housekeeping() {
        // With fsync=interval the spool is synced here too (appends leave it to this thread):
        // at least every spool_fsync_interval_ms.
        auto period = std::chrono::duration_cast<std::chrono::milliseconds>(housekeeping_period);
        if (spool_ && spool_->options().fsync == fsync_policy::interval)
            period = std::min<std::chrono::milliseconds>(
                period, std::chrono::milliseconds(std::max<std::uint32_t>(spool_->options().fsync_interval_ms, 10)));
        housekeeping_.expires_after(period);
        housekeeping_.async_wait([this](boost::system::error_code ec) {
            if (ec) return;
            on_housekeeping();
        });
    }

    void on_housekeeping() {
        if (spool_) {
            try {
                spool_->sync();
                if (spool_->adopt_orphans() > 0 || spool_->has_unread()) {
                    std::lock_guard lk(mu_);
                    adopted_pending_ = true;
                    request_pump_locked(true);
                }
            } catch (const std::exception& e) {
                report(40, fmt::format("spool housekeeping failed: {}", e.what()));
            }
        }
        schedule_housekeeping();
    }

    asio::strand<asio::io_context::executor_type> strand_;
    asio::steady_timer timer_;         // batching delay and retry backoff (io)
    asio::steady_timer housekeeping_;  // (io)
    std::string name_;
    std::unique_ptr<sink> sink_;
    sink_policy policy_;
    std::function<void(int, std::string)> report_;
    std::unique_ptr<spool> spool_;

    // (io)
    record_batch inflight_;
    spool_position inflight_end_;
    std::size_t inflight_frames_ = 0;
    unsigned attempt_ = 0;
    // Batches written but not yet made durable (sinks that defer their sync, spool mode).
    struct unsynced_group {
        std::size_t batches = 0;
        spool_position end;       // after the group's last frame
        std::size_t frames = 0;
        std::size_t records = 0;
        std::uint64_t bytes = 0;
        std::size_t left_out = 0;  // records the sink could not store (ok with dropped)
        std::string left_out_error;
        std::chrono::steady_clock::time_point first_write;
    } group_;
    std::uint64_t timer_gen_ = 0;  // bumped whenever timer_ is re-armed or cancelled

    // under mu_
    std::mutex mu_;
    std::condition_variable cv_;
    sink_stats stats_;
    pump_state state_ = pump_state::idle;
    std::deque<record> queue_;      // memory mode
    std::uint64_t ticket_ = 0;      // last sequence handed out
    std::uint64_t processed_ = 0;   // memory mode: records retired
    std::uint64_t pending_ = 0;     // memory mode: accepted, not retired (see pending_locked())
    std::size_t taken_ = 0;         // memory mode: records taken from queue_ for the batch in flight
    std::uint64_t evicted_behind_ = 0;  // memory mode: drop_oldest evictions behind that batch
    std::uint64_t spool_acked_ = 0;     // spool mode: spool_->acked_sequence() as of the last
                                        // retire_batch(), published together with the counters
    std::size_t appenders_ = 0;     // spool appends in progress outside mu_
    bool adopted_pending_ = true;   // spool mode: earlier processes' frames may be waiting
    bool reported_closed_ = false;
    bool closed_ = false;
    bool repump_ = false;  // records were requested while a pass ran: it must look again
};

// Sinks deliver in parallel up to this many I/O threads (one per sink): with two sinks, a
// returner waits for the slower commit, not for the sum of both. Each sink stays on its own
// strand, so a sink is still never called concurrently.
constexpr std::size_t max_io_threads = 4;
// How long close() waits for a sink's current write before it gives up on that sink.
constexpr auto stuck_sink_wait = std::chrono::seconds(5);

struct runtime::impl {
    asio::io_context io;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
    std::vector<std::thread> threads;
    mutable std::mutex mu;  // guards workers, messages, closed
    std::vector<std::unique_ptr<sink_worker>> workers;
    std::deque<log_message> messages;
    std::size_t discarded_messages = 0;
    bool closed = false;
    bool abandoned = false;  // close() gave up on a stuck sink and detached the I/O threads
    std::mutex close_mu;  // serialises close(): two closers must not both stop and join

    void report(int level, std::string text) {
        std::lock_guard lk(msg_mu);
        if (messages.size() >= max_messages) {
            messages.pop_front();
            ++discarded_messages;
        }
        messages.push_back({level, std::move(text)});
    }
    std::mutex msg_mu;

    sink_worker& worker(sink_id id) {
        std::lock_guard lk(mu);
        if (id >= workers.size()) throw std::out_of_range("fastret: unknown sink id");
        return *workers[id];
    }
};

runtime::runtime() : impl_(std::make_unique<impl>()) {}

runtime::~runtime() {
    // Only test runtimes are destroyed; the process singleton is left to the OS. Stop without
    // waiting for deliveries.
    if (!is_closed()) close(std::chrono::milliseconds(0));
    // A thread may still be inside a stuck sink's write(): its state must outlive it.
    if (impl_->abandoned) {
        auto* kept = impl_.release();
#if defined(__SANITIZE_ADDRESS__)
        __lsan_ignore_object(kept);  // kept on purpose: not a leak to report
#else
        static_cast<void>(kept);
#endif
    }
}

runtime& runtime::instance() {
    static std::mutex mu;
    static runtime* current = nullptr;
    static pid_t owner = 0;
    std::lock_guard lk(mu);
    pid_t pid = ::getpid();
    if (!current || owner != pid) {
        // In a forked child the parent's runtime is abandoned as is: its thread does not exist
        // here and its locks may be held, so touching it could hang. It is leaked on purpose.
        current = new runtime();
        owner = pid;
    }
    return *current;
}

sink_id runtime::add_sink(std::string name, std::unique_ptr<sink> s, sink_policy policy) {
    std::unique_lock lk(impl_->mu);
    if (impl_->closed) throw std::logic_error("fastret: runtime is closed");
    for (const auto& w : impl_->workers)
        if (w->name() == name)
            throw config_error(fmt::format("sink '{}' is defined twice", name));
    auto* im = impl_.get();
    for (auto& w : s->warnings()) im->report(30, std::move(w));
    impl_->workers.push_back(std::make_unique<sink_worker>(
        impl_->io, name, std::move(s), std::move(policy),
        [im](int level, std::string text) { im->report(level, std::move(text)); }));
    sink_id id = impl_->workers.size() - 1;
    if (!impl_->guard) impl_->guard.emplace(impl_->io.get_executor());
    if (impl_->threads.size() < std::min(impl_->workers.size(), max_io_threads))
        impl_->threads.emplace_back([im] { im->io.run(); });
    impl_->workers.back()->start();
    return id;
}

std::uint64_t runtime::enqueue(sink_id id, std::vector<record> records) {
    auto& w = impl_->worker(id);
    return w.enqueue(records);
}

std::uint64_t runtime::enqueue(sink_id id, std::span<const record> records) {
    return impl_->worker(id).enqueue(records);
}

bool runtime::flush_until(sink_id id, std::uint64_t ticket, std::chrono::milliseconds timeout) {
    return impl_->worker(id).flush_until(ticket, timeout);
}

std::uint64_t runtime::failures(sink_id id) { return impl_->worker(id).failures(); }

runtime::wait_result runtime::wait_delivered(sink_id id, std::uint64_t ticket,
                                             std::chrono::milliseconds timeout,
                                             std::uint64_t failures_before) {
    return impl_->worker(id).wait_delivered(ticket, timeout, failures_before);
}

bool runtime::flush(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::vector<sink_worker*> ws;
    {
        std::lock_guard lk(impl_->mu);
        for (auto& w : impl_->workers) ws.push_back(w.get());
    }
    bool all = true;
    for (auto* w : ws) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() < 0) left = std::chrono::milliseconds(0);
        all = w->flush_until(w->last_ticket(), left) && all;
    }
    return all;
}

bool runtime::drain(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::vector<sink_worker*> ws;
    {
        std::lock_guard lk(impl_->mu);
        for (auto& w : impl_->workers) ws.push_back(w.get());
    }
    bool all = true;
    for (auto* w : ws) all = w->wait_drained(deadline) && all;
    return all;
}

void runtime::close(std::chrono::milliseconds timeout) {
    // A second caller waits for the first to finish, then finds the runtime closed.
    std::lock_guard serial(impl_->close_mu);
    {
        std::lock_guard lk(impl_->mu);
        if (impl_->closed) return;
    }
    if (timeout.count() > 0) flush(timeout);
    std::vector<sink_worker*> ws;
    {
        std::lock_guard lk(impl_->mu);
        impl_->closed = true;
        for (auto& w : impl_->workers) ws.push_back(w.get());
    }
    bool stuck = false;
    if (!impl_->threads.empty()) {
        for (auto* w : ws) {
            auto done = std::make_shared<std::promise<void>>();
            auto f = done->get_future();
            w->close_on_strand(done);
            // A sink stuck in a write cannot be interrupted; give it a bounded wait.
            if (f.wait_for(stuck_sink_wait) != std::future_status::ready) stuck = true;
        }
        impl_->guard.reset();
        impl_->io.stop();
        if (stuck) {
            // Joining would wait for the stuck write, i.e. hang the exiting process. The
            // threads are left running and the runtime's state is never freed (see
            // ~runtime); the spool keeps what was not acknowledged for the next process.
            for (auto& t : impl_->threads) t.detach();
            impl_->abandoned = true;
        } else {
            for (auto& t : impl_->threads) t.join();
        }
        impl_->threads.clear();
    }
    if (!stuck)
        for (auto* w : ws) w->release();
}

std::vector<sink_stats> runtime::stats() const {
    std::vector<sink_worker*> ws;
    {
        std::lock_guard lk(impl_->mu);
        for (auto& w : impl_->workers) ws.push_back(w.get());
    }
    std::vector<sink_stats> out;
    for (auto* w : ws) out.push_back(w->stats());
    return out;
}

std::vector<runtime::log_message> runtime::take_messages() {
    std::lock_guard lk(impl_->msg_mu);
    std::vector<log_message> out(impl_->messages.begin(), impl_->messages.end());
    impl_->messages.clear();
    if (impl_->discarded_messages) {
        out.push_back({30, fmt::format("fastret: {} older log messages discarded", impl_->discarded_messages)});
        impl_->discarded_messages = 0;
    }
    return out;
}

std::optional<sink_id> runtime::find(const std::string& name) const {
    std::lock_guard lk(impl_->mu);
    for (std::size_t i = 0; i < impl_->workers.size(); ++i)
        if (impl_->workers[i]->name() == name) return i;
    return std::nullopt;
}

std::size_t runtime::sink_count() const {
    std::lock_guard lk(impl_->mu);
    return impl_->workers.size();
}

bool runtime::is_closed() const {
    std::lock_guard lk(impl_->mu);
    return impl_->closed;
}

}  // namespace fastret
