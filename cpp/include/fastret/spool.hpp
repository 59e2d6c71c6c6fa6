// The durable spool: one directory per sink, holding append-only segment files.
//
// Every record a sink accepts is appended here first (write-ahead); the runtime's worker
// reads frames back in order, delivers them and acknowledges the position it reached. Memory
// stays bounded however long a sink is down: the spool holds the backlog, not a queue.
//
// Layout of <dir>:
//   <seq>-<pid>-<n>.seg    segment: a header ("FRSPOOL2") then frames:
//                            u32 little-endian payload length, u32 frame_crc (CRC32C, seeded
//                            with the CRC32C of the file name, of the length bytes, then the
//                            payload), payload bytes; then an end marker (length 0xFFFFFFFF,
//                            CRC32C of those 4 bytes with the same seed) that the next append
//                            overwrites. The length is covered so that a zero-filled tail
//                            (power loss) is not a valid run of empty frames. A delivered
//                            segment file may be renamed and written again from the start:
//                            the seed makes its older frames invalid under the new name, and
//                            the marker tells the clean end of the new frames from a torn
//                            one. Segments with the header "FRSPOOL1" (unseeded checksums, no
//                            marker, written by earlier versions) are still read.
//   <seq>-<pid>-<n>.ack    u64 offset up to which the segment's frames are delivered,
//                            followed by its u32 CRC32C (a torn ack file reads as 0 = nothing
//                            acknowledged, so the worst case is a re-delivery, never a loss)
//   <seq> is a zero-padded microsecond timestamp, so names sort in creation order.
//
// Ownership: a process writes only to segments it created, and holds an exclusive flock on
// each segment while it owns it. A segment whose lock can be taken belongs to nobody (its
// writer exited or was killed) and is adopted by the next reader; adoption is what replays a
// crashed or exited process's backlog. Fully acknowledged segments that nobody writes are
// deleted.
//
// A torn tail (length or CRC mismatch at the end of a segment, after kill -9 or power loss) is
// detected on read, counted, and cut off (the file is truncated to the last whole frame);
// it is never delivered as garbage. A bad frame in the middle (bit rot) ends that segment's
// replay at that point and is counted as corrupt.
//
// Thread safety: all methods are safe to call from several threads (an internal mutex);
// append() is called by Python callers, read()/ack() by the runtime's worker.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fastret {

enum class fsync_policy { never, batch, interval };
enum class spool_full_policy { reject_new, drop_oldest };

struct spool_options {
    std::filesystem::path dir;
    fsync_policy fsync = fsync_policy::interval;
    std::uint32_t fsync_interval_ms = 1000;
    std::uint64_t max_bytes = 1ull << 30;        // cap on all segment bytes in `dir`
    std::uint64_t segment_bytes = 4ull << 20;    // start a new segment past this size
    spool_full_policy full_policy = spool_full_policy::reject_new;
};

// Where a frame ends: the reader's cursor. Opaque to callers except for ordering.
struct spool_position {
    std::string segment;   // file name of the segment (no directory)
    std::uint64_t offset = 0;
};

struct spool_entry {
    std::string payload;
    spool_position end;    // position just after this frame; ack(end) acknowledges it
};

struct spool_append_result {
    std::size_t appended = 0;   // frames written (the first `appended` of the input)
    std::size_t rejected = 0;   // frames refused because the spool is full (reject_new)
    std::size_t dropped_old = 0;  // old unacknowledged frames deleted to make room (drop_oldest)
    std::uint64_t sequence = 0;   // sequence number of the last appended frame (see acked_sequence)
};

struct spool_stats {
    std::uint64_t bytes_on_disk = 0;
    std::uint64_t segments = 0;
    std::uint64_t pending_frames = 0;    // appended or adopted, not yet acknowledged (this process's view)
    std::uint64_t torn_tails_cut = 0;
    std::uint64_t corrupt_frames = 0;
    std::uint64_t adopted_segments = 0;
};

class spool {
public:
    // Creates `dir` if needed. Throws std::system_error if it cannot. Opens nothing else yet.
    explicit spool(spool_options opts);
    ~spool();  // closes files and releases locks; deletes own fully acknowledged segments
    spool(const spool&) = delete;
    spool& operator=(const spool&) = delete;

    // Append each payload as one frame, in order, to this process's current segment (created on
    // first use). Applies the fsync policy (batch: fsync before returning). Throws
    // std::system_error only on I/O errors other than the cap (disk full counts as full).
    spool_append_result append(std::span<const std::string> payloads);
    spool_append_result append(std::span<const std::string_view> payloads);

    // Frames not yet handed out, in order: first adopted segments (oldest first), then own
    // segments. Returns at most max_frames frames and stops before exceeding max_bytes (but
    // always returns at least one frame if any is available). Advances an in-memory read
    // cursor; frames handed out but never acknowledged are handed out again only after
    // rewind() (e.g. the worker gave up on a batch) or in a new process.
    std::vector<spool_entry> read(std::size_t max_frames, std::size_t max_bytes);
    // The same without copying: each frame's payload is handed to `take`, valid only during
    // that call (which must not call into the spool). Returns how many frames were read; when
    // any, `end` is the position after the last one (for ack()).
    std::size_t read(std::size_t max_frames, std::size_t max_bytes,
                     const std::function<void(std::string_view)>& take, spool_position& end);

    // Put the read cursor back to the acknowledged position.
    void rewind();

    // Acknowledge every frame up to and including the one ending at `pos`. Persists the ack
    // (fsync per policy). Segments fully acknowledged and no longer written are deleted.
    void ack(const spool_position& pos);

    // Take over segments of writers that are gone (their lock is free). Returns how many.
    // Also called implicitly by the first read().
    std::size_t adopt_orphans();

    // Sequence numbers count frames appended by this spool object (1, 2, ...); acked_sequence()
    // is the highest one acknowledged. A caller that appended up to sequence S waits until
    // acked_sequence() >= S to know its records were delivered.
    std::uint64_t acked_sequence() const;
    // Frames available to read() now (own unread + adopted unread), without I/O.
    bool has_unread() const;

    void sync();  // fsync the current segment and ack files now
    spool_stats stats() const;
    const spool_options& options() const noexcept;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// Calls `fn` with the payload of every frame in `dir` that is not acknowledged yet, segment by
// segment in creation order, without taking a lock or changing a file: for readers in another
// process (job-cache reads while the database is down). A segment's scan stops at its first
// incomplete or bad frame. Returns the frames visited. Never throws for a missing directory.
std::size_t scan_unacknowledged(const std::filesystem::path& dir,
                                const std::function<void(std::string_view)>& fn);

// What scan_unacknowledged would visit, counted: for `fastret spool status` in any process.
struct spool_backlog {
    std::uint64_t segments = 0;
    std::uint64_t bytes_on_disk = 0;  // segment file sizes
    std::uint64_t frames = 0;         // unacknowledged frames
    std::uint64_t bytes = 0;          // their bytes, frame headers included
};
spool_backlog backlog_of(const std::filesystem::path& dir);

// CRC32C (Castagnoli).
std::uint32_t crc32c(std::string_view data, std::uint32_t crc = 0) noexcept;
// The checksum stored in a frame header: CRC32C, started from `seed`, over the 4 little-endian
// length bytes, then the payload. Seed 0 in FRSPOOL1 segments, segment_seed(name) in FRSPOOL2.
std::uint32_t frame_crc(std::string_view payload, std::uint32_t seed = 0) noexcept;
std::uint32_t segment_seed(std::string_view segment_name) noexcept;

}  // namespace fastret
