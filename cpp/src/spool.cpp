// The durable spool (see fastret/spool.hpp for the contract and the on-disk layout).
//
// In memory the spool keeps one small record per segment it holds (its own segments and the
// adopted ones), in read order: adopted segments (oldest first), then own segments. Each
// record has the segment's valid end, its acknowledged offset, its read cursor and frame
// counters; the only per-frame state is `inflight`, the end offsets of frames handed out by
// read() and not yet acknowledged (bounded by what the worker has in flight). Frame payloads
// are never kept: read() preads them back (page cache) through a small read-ahead window.
//
// Invariants:
//   * `current` (the segment appended to) is always the last element of `segs_`.
//   * segments with read progress (read_off > base) form a prefix of `segs_`, and all of them
//     except the last are fully read; newly adopted segments are inserted right after that
//     prefix (sealing the current segment first if it has progress), so ack(pos) can treat
//     every segment before pos's segment as delivered.
#include "fastret/spool.hpp"

#include <dirent.h>
#include <pthread.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <system_error>
#include <unordered_set>
#include <utility>

namespace fastret {

// ---------------------------------------------------------------------------------------------
// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), slicing-by-8, tables built at compile
// time. Byte order independent (loads are assembled from bytes).

namespace {

using crc_tables = std::array<std::array<std::uint32_t, 256>, 8>;

constexpr crc_tables make_crc_tables() {
    crc_tables t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
        t[0][i] = c;
    }
    for (std::size_t s = 1; s < 8; ++s)
        for (std::size_t i = 0; i < 256; ++i)
            t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xffu];
    return t;
}

constexpr crc_tables kCrc = make_crc_tables();

inline std::uint32_t load_le32(const unsigned char* p) noexcept {
    return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
           (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}

inline std::uint64_t load_le64(const unsigned char* p) noexcept {
    return static_cast<std::uint64_t>(load_le32(p)) |
           (static_cast<std::uint64_t>(load_le32(p + 4)) << 32);
}

inline void store_le32(unsigned char* p, std::uint32_t v) noexcept {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>((v >> (8 * i)) & 0xffu);
}

inline void store_le64(unsigned char* p, std::uint64_t v) noexcept {
    for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>((v >> (8 * i)) & 0xffu);
}

}  // namespace

namespace {

std::uint32_t crc32c_table(const unsigned char* p, std::size_t n, std::uint32_t crc) noexcept {
    while (n >= 8) {
        const std::uint32_t lo = load_le32(p) ^ crc;
        const std::uint32_t hi = load_le32(p + 4);
        crc = kCrc[7][lo & 0xffu] ^ kCrc[6][(lo >> 8) & 0xffu] ^ kCrc[5][(lo >> 16) & 0xffu] ^
              kCrc[4][lo >> 24] ^ kCrc[3][hi & 0xffu] ^ kCrc[2][(hi >> 8) & 0xffu] ^
              kCrc[1][(hi >> 16) & 0xffu] ^ kCrc[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ kCrc[0][(crc ^ *p++) & 0xffu];
    return crc;
}

#if defined(__x86_64__)
// SSE4.2 has a CRC32C instruction (8 bytes per step); every frame is checksummed twice (on
// append and on read), so it shows in profiles. Chosen at run time: the build must run on any
// x86-64.
__attribute__((target("sse4.2"))) std::uint32_t crc32c_sse42(const unsigned char* p,
                                                             std::size_t n,
                                                             std::uint32_t crc) noexcept {
    std::uint64_t c = crc;
    while (n >= 8) {
        std::uint64_t v;
        std::memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    auto c32 = static_cast<std::uint32_t>(c);
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}

const bool have_sse42 = __builtin_cpu_supports("sse4.2");
#endif

}  // namespace

std::uint32_t crc32c(std::string_view data, std::uint32_t crc) noexcept {
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
#if defined(__x86_64__)
    if (have_sse42) return ~crc32c_sse42(p, data.size(), ~crc);
#endif
    return ~crc32c_table(p, data.size(), ~crc);
}

std::uint32_t frame_crc(std::string_view payload, std::uint32_t seed) noexcept {
    const auto n = static_cast<std::uint32_t>(payload.size());
    const char len[4] = {static_cast<char>(n & 0xff), static_cast<char>((n >> 8) & 0xff),
                         static_cast<char>((n >> 16) & 0xff), static_cast<char>((n >> 24) & 0xff)};
    return crc32c(payload, crc32c(std::string_view(len, 4), seed));
}

std::uint32_t segment_seed(std::string_view segment_name) noexcept { return crc32c(segment_name); }

// ---------------------------------------------------------------------------------------------

namespace {

namespace fs = std::filesystem;

// FRSPOOL1: frame checksums unseeded, the file ends where the frames end.
// FRSPOOL2: checksums seeded by the segment's name and an end marker after the last frame, so
// that a segment file can be reused under a new name: its old frames no longer check, and the
// marker tells a clean end from a torn one.
constexpr char kMagicV1[8] = {'F', 'R', 'S', 'P', 'O', 'O', 'L', '1'};
constexpr char kMagicV2[8] = {'F', 'R', 'S', 'P', 'O', 'O', 'L', '2'};
constexpr std::uint64_t kHeaderSize = 8;
constexpr std::uint64_t kFrameHeader = 8;
constexpr std::uint32_t kEndMarkerLen = 0xFFFFFFFFu;  // never a payload length (append refuses it)
// Delivered segments kept open for reuse (more than this, left by a burst, are deleted):
// rewriting a file's cached pages costs a fraction of allocating new ones, and deleting a file
// costs a truncate (and a discard on some mounts). At most 8 x spool_segment_bytes of disk.
constexpr std::size_t kMaxSpares = 8;
constexpr std::size_t kWindow = 256 * 1024;          // read-ahead window for read()
constexpr std::size_t kWindowKeep = 4 * 1024 * 1024;  // shrink the window buffer past this
constexpr std::size_t kMaxBatchFrames = 512;          // frames per pwritev (2 iovecs each)
constexpr std::size_t kMaxBatchBytes = 4 * 1024 * 1024;
constexpr std::uint64_t kPreallocStep = 1024 * 1024;  // disk blocks reserved ahead of appends
// Adopted segments held at once (each holds a file descriptor, for its lock); the rest are
// adopted by later read()s as these are delivered.
constexpr std::size_t kMaxAdopted = 128;

[[noreturn]] void throw_errno(int err, const std::string& what) {
    throw std::system_error(err, std::generic_category(), "fastret spool: " + what);
}

bool is_digits(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// <20 digits>-<digits>-<digits>.seg
bool is_segment_name(std::string_view s) {
    if (s.size() < 20 + 1 + 1 + 1 + 1 + 4) return false;
    if (s.substr(s.size() - 4) != ".seg") return false;
    s.remove_suffix(4);
    if (!is_digits(s.substr(0, 20)) || s[20] != '-') return false;
    s.remove_prefix(21);
    const auto dash = s.find('-');
    if (dash == std::string_view::npos) return false;
    return is_digits(s.substr(0, dash)) && is_digits(s.substr(dash + 1));
}

std::string ack_name_of(std::string_view seg_name) {
    std::string r(seg_name.substr(0, seg_name.size() - 4));
    r += ".ack";
    return r;
}

std::atomic<std::uint64_t> g_last_stamp{0};
std::atomic<std::uint64_t> g_name_counter{0};

// A fresh segment name; the stamp is strictly increasing within the process.
std::string make_segment_name() {
    const auto now = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(
            std::chrono::system_clock::now().time_since_epoch())
            .count());
    std::uint64_t last = g_last_stamp.load(std::memory_order_relaxed);
    std::uint64_t stamp;
    do {
        stamp = std::max(now, last + 1);
    } while (!g_last_stamp.compare_exchange_weak(last, stamp, std::memory_order_relaxed));
    const std::uint64_t n = g_name_counter.fetch_add(1, std::memory_order_relaxed);
    char buf[96];
    std::snprintf(buf, sizeof buf, "%020llu-%ld-%llu.seg", static_cast<unsigned long long>(stamp),
                  static_cast<long>(::getpid()), static_cast<unsigned long long>(n));
    return buf;
}

// Returns 0 or an errno value.
int pwrite_all(int fd, const void* data, std::size_t len, std::uint64_t off) {
    const char* p = static_cast<const char*>(data);
    while (len > 0) {
        const ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(off));
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (n == 0) return EIO;
        p += n;
        len -= static_cast<std::size_t>(n);
        off += static_cast<std::uint64_t>(n);
    }
    return 0;
}

// Returns 0 or an errno value. Consumes `iov` (entries are advanced on short writes).
int pwritev_all(int fd, std::vector<iovec>& iov, std::uint64_t off) {
    std::size_t idx = 0;
    while (idx < iov.size()) {
        const int cnt = static_cast<int>(std::min<std::size_t>(iov.size() - idx, IOV_MAX));
        const ssize_t n = ::pwritev(fd, iov.data() + idx, cnt, static_cast<off_t>(off));
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (n == 0) return EIO;
        off += static_cast<std::uint64_t>(n);
        auto left = static_cast<std::size_t>(n);
        while (idx < iov.size() && left >= iov[idx].iov_len) {
            left -= iov[idx].iov_len;
            ++idx;
        }
        if (left > 0) {
            iov[idx].iov_base = static_cast<char*>(iov[idx].iov_base) + left;
            iov[idx].iov_len -= left;
        }
        while (idx < iov.size() && iov[idx].iov_len == 0) ++idx;
    }
    return 0;
}

// Bytes read (short only at end of file), or -1 with errno set.
ssize_t pread_all(int fd, void* data, std::size_t len, std::uint64_t off) {
    char* p = static_cast<char*>(data);
    std::size_t got = 0;
    while (got < len) {
        const ssize_t n = ::pread(fd, p + got, len - got, static_cast<off_t>(off + got));
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) break;
        got += static_cast<std::size_t>(n);
    }
    return static_cast<ssize_t>(got);
}

// The acknowledged offset stored in an ack file; the segment's start when the file is
// missing or torn (the worst case is a re-delivery, never a loss).
std::uint64_t read_ack_at(const fs::path& ack_path, std::uint64_t seg_size) {
    const int fd = ::open(ack_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return kHeaderSize;
    unsigned char buf[16];
    const ssize_t got = pread_all(fd, buf, sizeof buf, 0);
    ::close(fd);
    if (got != 12) return kHeaderSize;
    const std::uint64_t off = load_le64(buf);
    const std::uint32_t crc = load_le32(buf + 8);
    if (crc32c(std::string_view(reinterpret_cast<const char*>(buf), 8)) != crc) return kHeaderSize;
    if (off < kHeaderSize || off > seg_size) return kHeaderSize;
    return off;
}

void close_fd(int& fd) noexcept {
    if (fd >= 0) {
        ::close(fd);
        fd = -1;
    }
}

bool is_full_errno(int err) { return err == ENOSPC || err == EDQUOT; }

// The header's format version: 1, 2, or 0 for anything else.
int magic_version(const char* hdr) {
    if (std::memcmp(hdr, kMagicV2, sizeof kMagicV2) == 0) return 2;
    if (std::memcmp(hdr, kMagicV1, sizeof kMagicV1) == 0) return 1;
    return 0;
}

// A header cut short: a prefix of either magic.
bool is_magic_prefix(const char* hdr, std::size_t n) {
    return std::memcmp(hdr, kMagicV1, n) == 0 || std::memcmp(hdr, kMagicV2, n) == 0;
}

// The 8-byte end marker of an FRSPOOL2 segment with checksum seed `seed`.
void store_end_marker(unsigned char* h, std::uint32_t seed) {
    store_le32(h, kEndMarkerLen);
    store_le32(h + 4, crc32c(std::string_view(reinterpret_cast<const char*>(h), 4), seed));
}

bool is_end_marker(const unsigned char* h, std::uint32_t seed) {
    unsigned char m[kFrameHeader];
    store_end_marker(m, seed);
    return std::memcmp(h, m, sizeof m) == 0;
}

// Descriptors of segments this process holds locked. A forked child inherits them, and with
// them the locks (a flock belongs to the open file, which the child now shares): the parent's
// backlog could not be adopted after the parent died until the child exited too. The child
// never uses its parent's spool objects (the runtime is rebuilt after a fork), so at fork
// time the child closes its copies; the parent keeps its locks. Slots hold fd + 1 (0 = free)
// so that the zero-initialized array is empty; the fork handler only reads atomics and calls
// close(), both safe in a child of a threaded process.
constexpr std::size_t kMaxLockedFds = 1024;
std::atomic<int> g_locked_fds[kMaxLockedFds];

void close_inherited_locks() noexcept {
    for (auto& slot : g_locked_fds)
        if (int v = slot.exchange(0); v > 0) ::close(v - 1);
}

void track_locked_fd(int fd) noexcept {
    static std::once_flag once;
    std::call_once(once, [] { ::pthread_atfork(nullptr, nullptr, &close_inherited_locks); });
    for (auto& slot : g_locked_fds) {
        int expected = 0;
        if (slot.compare_exchange_strong(expected, fd + 1)) return;
    }
    // Full: this descriptor stays open in children (the behaviour without tracking).
}

void untrack_locked_fd(int fd) noexcept {
    if (fd < 0) return;
    for (auto& slot : g_locked_fds) {
        int expected = fd + 1;
        if (slot.compare_exchange_strong(expected, 0)) return;
    }
}

// Closes a segment's locked descriptor (releasing the lock).
void close_locked_fd(int& fd) noexcept {
    untrack_locked_fd(fd);
    close_fd(fd);
}

struct segment {
    std::string name;
    int fd = -1;
    int ack_fd = -1;
    bool own = false;
    bool v2 = false;          // FRSPOOL2: seeded checksums, end marker
    std::uint32_t seed = 0;   // checksum seed (v2: segment_seed(name))
    bool dirty = false;       // data written since the last fsync
    bool ack_dirty = false;   // ack file written since the last fsync
    bool ack_fresh = false;   // ack file opened, not yet cut to its 12 bytes
    std::uint64_t base = kHeaderSize;       // where frame counting starts (header / adopted ack)
    std::uint64_t end = kHeaderSize;        // end of the valid frames
    std::uint64_t file_size = kHeaderSize;  // bytes of the file, as counted in bytes_used_
    std::uint64_t acked = kHeaderSize;      // acknowledged offset
    std::uint64_t read_off = kHeaderSize;   // read cursor
    std::uint64_t scanned = kHeaderSize;    // adopted: frames in [base, scanned) are counted in `frames`
    std::uint64_t frames = 0;        // own: frames appended; adopted: frames seen after `base`
    std::uint64_t acked_frames = 0;  // frames in [base, acked)
    std::uint64_t first_seq = 0;     // own: sequence number of the first frame
    std::uint64_t allocated = 0;     // own: disk blocks reserved up to here (see preallocate())
    std::deque<std::uint64_t> inflight;  // end offsets of frames in (acked, read_off]
};

enum class frame_status { ok, end, torn, corrupt };

}  // namespace

// ---------------------------------------------------------------------------------------------

struct spool::impl {
    spool_options opts;
    mutable std::mutex mu;
    std::vector<std::unique_ptr<segment>> segs;  // read order; `current` is last when set
    segment* current = nullptr;
    // Own delivered segments kept for reuse (still locked, still on disk and counted in
    // bytes_used): create_segment() renames one instead of creating a file.
    std::vector<std::unique_ptr<segment>> spares;
    std::unordered_set<std::string> bad_names;  // malformed segments this object gave up on

    bool usage_known = false;
    std::uint64_t bytes_used = 0;  // segment bytes in dir (all writers), tracked incrementally
    bool adopted_once = false;
    bool more_orphans = false;  // the last adoption stopped at kMaxAdopted

    std::uint64_t next_seq = 1;
    std::uint64_t acked_seq = 0;
    std::uint64_t torn = 0;
    std::uint64_t corrupt = 0;
    std::uint64_t adopted = 0;

    std::chrono::steady_clock::time_point last_sync = std::chrono::steady_clock::now();
    bool prealloc_works = true;  // false once fallocate() proved unsupported here

    // read-ahead window over one segment
    std::unique_ptr<char[]> win;
    std::size_t win_cap = 0;
    const segment* win_seg = nullptr;
    std::uint64_t win_off = 0;
    std::size_t win_len = 0;

    explicit impl(spool_options o) : opts(std::move(o)) {}

    // ---- paths ----

    std::string path_of(std::string_view name) const { return (opts.dir / name).string(); }

    // ---- disk usage ----

    static std::uint64_t scan_usage(const fs::path& dir) {
        std::uint64_t total = 0;
        DIR* d = ::opendir(dir.c_str());
        if (!d) return 0;
        const int dfd = ::dirfd(d);
        while (const dirent* e = ::readdir(d)) {
            if (!is_segment_name(e->d_name)) continue;
            struct stat st {};
            if (::fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
                total += static_cast<std::uint64_t>(st.st_size);
        }
        ::closedir(d);
        return total;
    }

    void ensure_usage() {
        if (!usage_known) {
            bytes_used = scan_usage(opts.dir);
            usage_known = true;
        }
    }

    void sub_used(std::uint64_t n) { bytes_used -= std::min(bytes_used, n); }

    void fsync_dir() {
        const int dfd = ::open(opts.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            ::fsync(dfd);
            ::close(dfd);
        }
    }

    // ---- fsync ----

    // fsyncs everything written since the last sync. Returns 0 or the first errno. With
    // `release` (a lock held on mu), the lock is released while the device flushes, so that
    // appends are not held up by it: the descriptors are duplicated first (a segment may be
    // retired and its descriptor closed meanwhile), and it returns with the lock held again.
    int sync_all(std::unique_lock<std::mutex>* release = nullptr) {
        std::vector<int> fds;
        for (auto* list : {&segs, &spares})
            for (auto& up : *list) {
                segment& s = *up;
                if (s.dirty && s.fd >= 0) fds.push_back(s.fd);
                if (s.ack_dirty && s.ack_fd >= 0) fds.push_back(s.ack_fd);
                s.dirty = s.ack_dirty = false;
            }
        last_sync = std::chrono::steady_clock::now();
        if (fds.empty()) return 0;
        if (release) {
            // A duplicate shares the segment's flock: it is tracked like the segment's own
            // descriptor, so that a child forked during the flush does not keep the lock.
            for (int& fd : fds) {
                fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
                if (fd >= 0) track_locked_fd(fd);
            }
            release->unlock();
        }
        int first_err = 0;
        for (int fd : fds) {
            if (fd < 0) continue;
            if (::fdatasync(fd) != 0 && !first_err) first_err = errno;
            if (release) close_locked_fd(fd);
        }
        if (release) release->lock();
        return first_err;
    }

    int maybe_interval_sync(std::unique_lock<std::mutex>& lock) {
        if (opts.fsync != fsync_policy::interval) return 0;
        const auto now = std::chrono::steady_clock::now();
        if (now - last_sync < std::chrono::milliseconds(opts.fsync_interval_ms)) return 0;
        return sync_all(&lock);
    }

    // ---- segment lifetime ----

    std::size_t index_of(const segment* s) const {
        for (std::size_t i = 0; i < segs.size(); ++i)
            if (segs[i].get() == s) return i;
        return segs.size();
    }

    void invalidate_window(const segment* s) {
        if (win_seg == s) win_seg = nullptr;
    }

    // Unlinks a segment's file and ack file (while still holding its lock), then closes them.
    void discard_files(segment& s) {
        ::unlink(path_of(s.name).c_str());
        ::unlink(path_of(ack_name_of(s.name)).c_str());
        close_fd(s.ack_fd);
        close_locked_fd(s.fd);
        sub_used(s.file_size);
    }

    // Deletes segs[i]: its files, and its place in the read order.
    void delete_segment_at(std::size_t i) {
        segment* s = segs[i].get();
        discard_files(*s);
        invalidate_window(s);
        if (current == s) current = nullptr;
        segs.erase(segs.begin() + static_cast<std::ptrdiff_t>(i));
    }

    void delete_segment(const segment* s) {
        const std::size_t i = index_of(s);
        if (i < segs.size()) delete_segment_at(i);
    }

    // A delivered segment leaves the read order: an own FRSPOOL2 segment of a normal size
    // becomes a spare (while there is room for one), anything else is deleted.
    void retire_segment_at(std::size_t i) {
        segment* s = segs[i].get();
        // Spares hold disk that counts against the cap of a directory other processes share:
        // together at most a sixteenth of it.
        std::uint64_t spare_bytes = s->file_size;
        for (const auto& sp : spares) spare_bytes += sp->file_size;
        if (!s->own || !s->v2 || s == current || spares.size() >= kMaxSpares ||
            s->file_size > opts.segment_bytes + kMaxBatchBytes + kFrameHeader ||
            spare_bytes > opts.max_bytes / 16) {
            delete_segment_at(i);
            return;
        }
        invalidate_window(s);
        // Its ack file must say "all delivered", whatever it said last (a segment before an
        // acknowledged position counts as delivered without its own ack being written, and
        // one acknowledged after it was sealed is retired before its ack is written): a
        // process killed while holding a spare must not make the next one deliver it again.
        s->acked = std::max(s->acked, s->end);
        write_ack(s);
        spares.push_back(std::move(segs[i]));
        segs.erase(segs.begin() + static_cast<std::ptrdiff_t>(i));
    }

    void retire_segment(const segment* s) {
        const std::size_t i = index_of(s);
        if (i < segs.size()) retire_segment_at(i);
    }

    void delete_spares() {
        for (auto& s : spares) discard_files(*s);
        spares.clear();
    }

    // Stop appending to the current segment; retire it if it is fully acknowledged.
    void seal_current() {
        segment* s = current;
        if (!s) return;
        current = nullptr;
        if (s->acked >= s->end) retire_segment(s);
    }

    // Makes a spare the current segment under a fresh name. Its old frames stay in the file
    // but no longer check under the new name's seed; an end marker at the start says it holds
    // nothing yet, and is written before the rename so that no name ever shows old frames as
    // new. false: no spare could be reused (the caller creates a file).
    bool reuse_spare() {
        while (!spares.empty()) {
            std::unique_ptr<segment> seg = std::move(spares.back());
            spares.pop_back();
            const std::string old_name = seg->name;
            const std::string name = make_segment_name();
            unsigned char marker[kFrameHeader];
            const std::uint32_t seed = segment_seed(name);
            store_end_marker(marker, seed);
            // The marker goes first (and, with fsync batch, to disk): under the old name it
            // is an invalid frame where the old name's ack file says all is delivered anyway.
            int rc = -1;
            if (pwrite_all(seg->fd, marker, sizeof marker, kHeaderSize) == 0) {
                if (opts.fsync == fsync_policy::batch) ::fdatasync(seg->fd);
                rc = ::renameat2(AT_FDCWD, path_of(old_name).c_str(), AT_FDCWD, path_of(name).c_str(),
                                 RENAME_NOREPLACE);
            }
            if (rc != 0) {  // give it up: delete it like any delivered segment
                discard_files(*seg);
                continue;
            }
            if (opts.fsync == fsync_policy::batch) fsync_dir();
            // Then its ack file (if it has one) is set back to "nothing delivered" and renamed
            // along, rewriting 12 bytes in place being cheaper than deleting and creating a
            // file. A crash in between leaves an ack file without its segment, which the next
            // adoption deletes; the new name without an ack file reads from its start, where
            // the marker is.
            int ack_fd = seg->ack_fd;
            seg->ack_fd = -1;
            if (ack_fd >= 0) {
                unsigned char ack[12];
                store_le64(ack, kHeaderSize);
                store_le32(ack + 8, crc32c(std::string_view(reinterpret_cast<const char*>(ack), 8)));
                if (pwrite_all(ack_fd, ack, sizeof ack, 0) != 0 ||
                    ::rename(path_of(ack_name_of(old_name)).c_str(), path_of(ack_name_of(name)).c_str()) != 0) {
                    close_fd(ack_fd);
                    ::unlink(path_of(ack_name_of(old_name)).c_str());
                }
            }
            const std::uint64_t file_size = std::max(seg->file_size, kHeaderSize + kFrameHeader);
            bytes_used += file_size - seg->file_size;
            const std::uint64_t allocated = std::max(seg->allocated, file_size);
            const int fd = seg->fd;
            *seg = segment{};
            seg->name = name;
            seg->fd = fd;
            seg->ack_fd = ack_fd;
            seg->ack_dirty = ack_fd >= 0 && opts.fsync == fsync_policy::interval;
            seg->own = true;
            seg->v2 = true;
            seg->seed = seed;
            seg->file_size = file_size;
            seg->allocated = allocated;
            seg->first_seq = next_seq;
            current = seg.get();
            segs.push_back(std::move(seg));
            return true;
        }
        return false;
    }

    // Creates and locks a new own segment (as <name>.tmp, renamed once it has its header, so an
    // adopter never sees an unlocked segment). false: the disk is full.
    bool create_segment() {
        if (reuse_spare()) return true;
        for (int attempt = 0; attempt < 8; ++attempt) {
            const std::string name = make_segment_name();
            const std::string path = path_of(name);
            const std::string tmp = path + ".tmp";
            int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (fd < 0) {
                const int err = errno;
                if (err == EEXIST) continue;
                if (is_full_errno(err)) return false;
                throw_errno(err, "create segment " + tmp);
            }
            while (::flock(fd, LOCK_EX) != 0) {
                if (errno == EINTR) continue;
                const int err = errno;
                ::unlink(tmp.c_str());
                close_fd(fd);
                throw_errno(err, "lock segment " + tmp);
            }
            unsigned char head[kHeaderSize + kFrameHeader];
            std::memcpy(head, kMagicV2, kHeaderSize);
            store_end_marker(head + kHeaderSize, segment_seed(name));
            if (const int err = pwrite_all(fd, head, sizeof head, 0)) {
                ::unlink(tmp.c_str());
                close_fd(fd);
                if (is_full_errno(err)) return false;
                throw_errno(err, "write segment header " + tmp);
            }
            if (opts.fsync == fsync_policy::batch) ::fdatasync(fd);
            int rc = ::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE);
            if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) {
                // filesystem without RENAME_NOREPLACE: names are unique per process anyway
                struct stat st {};
                if (::stat(path.c_str(), &st) == 0) {
                    errno = EEXIST;
                } else {
                    rc = ::rename(tmp.c_str(), path.c_str());
                }
            }
            if (rc != 0) {
                const int err = errno;
                ::unlink(tmp.c_str());
                close_fd(fd);
                // ENOENT: an adopter cleaned up our tmp file in the instant before we locked it
                if (err == EEXIST || err == ENOENT) continue;
                if (is_full_errno(err)) return false;
                throw_errno(err, "rename segment " + tmp);
            }
            if (opts.fsync == fsync_policy::batch) fsync_dir();
            constexpr std::uint64_t seg_bytes_new = kHeaderSize + kFrameHeader;
            auto seg = std::make_unique<segment>();
            seg->name = name;
            seg->fd = fd;
            track_locked_fd(fd);
            seg->own = true;
            seg->v2 = true;
            seg->seed = segment_seed(name);
            seg->file_size = kHeaderSize + kFrameHeader;
            seg->first_seq = next_seq;
            current = seg.get();
            segs.push_back(std::move(seg));
            bytes_used += seg_bytes_new;
            return true;
        }
        throw_errno(EEXIST, "could not create a unique segment name");
    }

    // ---- reading frames ----

    // Makes [off, off + len) of segment `s` available in the window (reading ahead up to
    // s->end). nullptr if the file is shorter than that or cannot be read.
    const char* fill(const segment* s, std::uint64_t off, std::size_t len) {
        static const char empty = 0;
        if (len == 0) return &empty;
        if (win_seg == s && off >= win_off && off + len <= win_off + win_len)
            return win.get() + (off - win_off);
        const std::uint64_t avail = s->end > off ? s->end - off : 0;
        const std::size_t want =
            std::max<std::size_t>(len, static_cast<std::size_t>(std::min<std::uint64_t>(kWindow, avail)));
        if (want > win_cap) {
            win.reset(new char[want]);
            win_cap = want;
        }
        win_seg = nullptr;
        const ssize_t got = pread_all(s->fd, win.get(), want, off);
        if (got < 0) return nullptr;
        win_seg = s;
        win_off = off;
        win_len = static_cast<std::size_t>(got);
        if (win_len < len) return nullptr;
        return win.get();
    }

    void shrink_window() {
        if (win_cap > kWindowKeep) {
            win.reset();
            win_cap = 0;
            win_seg = nullptr;
        }
    }

    // Parses the frame at `off`. On ok, `payload` views the window and `next` is its end.
    frame_status parse_frame(const segment* s, std::uint64_t off, std::string_view& payload,
                             std::uint64_t& next) {
        const std::uint64_t limit = s->end;
        if (off > limit || limit - off < kFrameHeader) return frame_status::torn;
        const char* h = fill(s, off, kFrameHeader);
        if (!h) return frame_status::torn;
        const auto* uh = reinterpret_cast<const unsigned char*>(h);
        if (s->v2 && is_end_marker(uh, s->seed)) return frame_status::end;
        const std::uint32_t len = load_le32(uh);
        const std::uint32_t crc = load_le32(uh + 4);
        if (len > limit - off - kFrameHeader) return frame_status::torn;
        const char* p = fill(s, off + kFrameHeader, len);
        if (!p) return frame_status::torn;
        payload = std::string_view(p, len);
        next = off + kFrameHeader + len;
        if (frame_crc(payload, s->seed) == crc) return frame_status::ok;
        // A zero length with a wrong checksum is what a zero-filled tail (power loss after the size
        // grew, before the data landed) looks like: torn, not corrupt.
        if (next == limit || len == 0) return frame_status::torn;
        // In a v2 segment a frame that does not check is bit rot only if what follows it does
        // (a frame or the end marker); otherwise a write was cut short over older bytes.
        if (s->v2 && !checks_at(s, next)) return frame_status::torn;
        return frame_status::corrupt;
    }

    // A whole frame with a valid checksum, or the end marker, starts at `off` (v2 segments).
    bool checks_at(const segment* s, std::uint64_t off) {
        if (off > s->end || s->end - off < kFrameHeader) return false;
        const char* h = fill(s, off, kFrameHeader);
        if (!h) return false;
        const auto* uh = reinterpret_cast<const unsigned char*>(h);
        if (is_end_marker(uh, s->seed)) return true;
        const std::uint32_t len = load_le32(uh);
        const std::uint32_t crc = load_le32(uh + 4);
        if (len > s->end - off - kFrameHeader) return false;
        const char* p = fill(s, off + kFrameHeader, len);
        return p && frame_crc(std::string_view(p, len), s->seed) == crc;
    }

    // Counts frames in [from, to) by walking their headers (no CRC check). `exact`: the walk
    // ended exactly at `to`.
    std::uint64_t count_frames(const segment* s, std::uint64_t from, std::uint64_t to, bool& exact) {
        std::uint64_t n = 0;
        std::uint64_t off = from;
        exact = false;
        while (off < to) {
            if (s->end - off < kFrameHeader) return n;
            const char* h = fill(s, off, kFrameHeader);
            if (!h) return n;
            const std::uint32_t len = load_le32(reinterpret_cast<const unsigned char*>(h));
            if (s->v2 && len == kEndMarkerLen) return n;
            const std::uint64_t next = off + kFrameHeader + len;
            if (next > to) return n;
            off = next;
            ++n;
        }
        exact = off == to;
        return n;
    }

    // Cuts a torn tail of an adopted segment at `off`.
    void cut_tail(segment* s, std::uint64_t off) {
        invalidate_window(s);
        struct stat st {};
        if (::fstat(s->fd, &st) == 0 && static_cast<std::uint64_t>(st.st_size) > off) {
            if (::ftruncate(s->fd, static_cast<off_t>(off)) == 0) {
                if (opts.fsync != fsync_policy::never) ::fdatasync(s->fd);
            }
        }
        if (s->file_size > off) {
            sub_used(s->file_size - off);
            s->file_size = off;
        }
        s->end = off;
        ++torn;
    }

    // Frames of `s` not yet acknowledged (reads headers of adopted data never read).
    std::uint64_t unacked_frames(segment* s) {
        std::uint64_t n = s->frames - std::min(s->frames, s->acked_frames);
        if (!s->own && s->scanned < s->end) {
            bool exact = false;
            n += count_frames(s, s->scanned, s->end, exact);
        }
        return n;
    }

    // ---- adoption ----

    std::uint64_t read_ack_file(const std::string& seg_name, std::uint64_t seg_size) {
        return read_ack_at(path_of(ack_name_of(seg_name)), seg_size);
    }

    bool holds(const std::string& name) const {
        for (const auto& s : segs)
            if (s->name == name) return true;
        for (const auto& s : spares)
            if (s->name == name) return true;
        return false;
    }

    std::size_t adopt() {
        adopted_once = true;
        std::vector<std::string> seg_names, tmp_names, ack_names;
        {
            DIR* d = ::opendir(opts.dir.c_str());
            if (!d) return 0;
            while (const dirent* e = ::readdir(d)) {
                const std::string_view n = e->d_name;
                if (is_segment_name(n)) {
                    seg_names.emplace_back(n);
                } else if (n.size() > 4 && n.substr(n.size() - 4) == ".tmp" &&
                           is_segment_name(n.substr(0, n.size() - 4))) {
                    tmp_names.emplace_back(n);
                } else if (n.size() > 4 && n.substr(n.size() - 4) == ".ack") {
                    std::string seg(n.substr(0, n.size() - 4));
                    seg += ".seg";
                    if (is_segment_name(seg)) ack_names.emplace_back(n);
                }
            }
            ::closedir(d);
        }
        std::sort(seg_names.begin(), seg_names.end());

        std::size_t room = kMaxAdopted;
        for (const auto& s : segs)
            if (!s->own && room > 0) --room;
        more_orphans = false;
        std::vector<std::unique_ptr<segment>> fresh;
        for (const std::string& name : seg_names) {
            if (bad_names.count(name) || holds(name)) continue;
            if (fresh.size() >= room) {
                more_orphans = true;
                break;
            }
            const std::string path = path_of(name);
            int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
            if (fd < 0) continue;
            if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {  // a live writer (or adopter) owns it
                close_fd(fd);
                continue;
            }
            // The previous holder may have deleted (or renamed) it just before releasing it.
            struct stat st {}, st2 {};
            if (::fstat(fd, &st) != 0 || st.st_nlink == 0 || !S_ISREG(st.st_mode) ||
                ::stat(path.c_str(), &st2) != 0 || st2.st_ino != st.st_ino || st2.st_dev != st.st_dev) {
                close_fd(fd);
                continue;
            }
            const auto size = static_cast<std::uint64_t>(st.st_size);
            char hdr[kHeaderSize] = {};
            const ssize_t got = pread_all(fd, hdr, sizeof hdr, 0);
            if (got >= 0 && static_cast<std::uint64_t>(got) < kHeaderSize &&
                is_magic_prefix(hdr, static_cast<std::size_t>(got))) {
                // never got its full header (created and cut short): nothing to replay
                if (got > 0) ++torn;
                ::unlink(path.c_str());
                ::unlink(path_of(ack_name_of(name)).c_str());
                close_fd(fd);
                continue;
            }
            const int version = got == static_cast<ssize_t>(kHeaderSize) ? magic_version(hdr) : 0;
            if (version == 0) {
                // not a segment: set it aside so nobody retries it, and count it
                ++corrupt;
                if (::rename(path.c_str(), (path + ".bad").c_str()) != 0) bad_names.insert(name);
                close_fd(fd);
                continue;
            }
            const std::uint64_t acked = read_ack_file(name, size);
            if (acked >= size) {  // fully delivered; its writer did not get to delete it
                ::unlink(path.c_str());
                ::unlink(path_of(ack_name_of(name)).c_str());
                close_fd(fd);
                continue;
            }
            auto s = std::make_unique<segment>();
            s->name = name;
            s->fd = fd;
            track_locked_fd(fd);
            s->own = false;
            s->v2 = version == 2;
            s->seed = s->v2 ? segment_seed(name) : 0;
            s->base = s->acked = s->read_off = s->scanned = acked;
            s->end = s->file_size = size;
            fresh.push_back(std::move(s));
        }

        // Leftovers of writers killed while creating a segment.
        for (const std::string& name : tmp_names) {
            const std::string path = path_of(name);
            int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            if (fd < 0) continue;
            struct stat st {}, st2 {};
            if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && ::fstat(fd, &st) == 0 && st.st_nlink > 0 &&
                ::stat(path.c_str(), &st2) == 0 && st2.st_ino == st.st_ino && st2.st_dev == st.st_dev)
                ::unlink(path.c_str());
            close_fd(fd);
        }
        // Ack files whose segment is gone (deleted by a writer that died in between).
        for (const std::string& name : ack_names) {
            std::string seg = name.substr(0, name.size() - 4) + ".seg";
            struct stat st {};
            if (::stat(path_of(seg).c_str(), &st) != 0 && errno == ENOENT) ::unlink(path_of(name).c_str());
        }

        const std::size_t count = fresh.size();
        if (count > 0) {
            // Insert after the segments with read progress; the current segment must not be
            // written to once something is read after it, so it is sealed if it has progress.
            if (current && current->read_off > current->base) seal_current();
            std::size_t at = 0;
            for (std::size_t i = 0; i < segs.size(); ++i)
                if (segs[i]->read_off > segs[i]->base) at = i + 1;
            segs.insert(segs.begin() + static_cast<std::ptrdiff_t>(at), std::make_move_iterator(fresh.begin()),
                        std::make_move_iterator(fresh.end()));
            adopted += count;
        }
        bytes_used = scan_usage(opts.dir);
        usage_known = true;
        return count;
    }

    // ---- append ----

    struct pending_batch {
        std::vector<unsigned char> headers;  // 8 bytes per frame; reserved, never reallocated
        unsigned char marker[kFrameHeader];  // the end marker written after the frames
        std::vector<iovec> iov;
        std::size_t frames = 0;
        std::uint64_t bytes = 0;
        pending_batch() {
            headers.resize(kMaxBatchFrames * kFrameHeader);
            iov.reserve(kMaxBatchFrames * 2 + 1);
        }
        void clear() {
            iov.clear();
            frames = 0;
            bytes = 0;
        }
    };

    // Reserves the current segment's disk blocks ahead of the write position, a step at a
    // time (best effort: a file system without fallocate, or a full disk, just skips it).
    // Appending into reserved blocks spares the caller the file system's per-page work of
    // delayed allocation, which costs more than copying the data. The size of the file is
    // not changed (readers see only what was written); a segment is deleted after delivery,
    // and with it whatever it reserved.
    // Never beyond the segment's size limit (or the batch that crosses it): with small
    // segments the reservation must not multiply the disk a spool occupies past its cap.
    void preallocate(segment* s, std::uint64_t upto) {
        if (upto <= s->allocated || !prealloc_works) return;
        const std::uint64_t limit = std::max(opts.segment_bytes, upto);
        const std::uint64_t len =
            std::min(std::max(upto - s->allocated, kPreallocStep), limit - s->allocated);
        if (::fallocate(s->fd, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(s->allocated),
                        static_cast<off_t>(len)) == 0) {
            s->allocated += len;
        } else if (errno == EOPNOTSUPP || errno == ENOSYS) {
            prealloc_works = false;
        } else {
            s->allocated = UINT64_MAX;  // no room now: this segment goes without
        }
    }

    // Writes the pending frames to the current segment. false: disk full (nothing of the batch
    // is kept). Throws on other I/O errors.
    bool flush(pending_batch& b, std::size_t& committed) {
        if (b.frames == 0) return true;
        segment* s = current;
        store_end_marker(b.marker, s->seed);
        b.iov.push_back({b.marker, kFrameHeader});
        preallocate(s, s->end + b.bytes + kFrameHeader);
        if (const int err = pwritev_all(s->fd, b.iov, s->end)) {
            // Cut what was written of the batch (and with it the marker: the file now ends
            // where the frames end, which reads as a clean end too).
            if (::ftruncate(s->fd, static_cast<off_t>(s->end)) == 0 && s->file_size > s->end) {
                sub_used(s->file_size - s->end);
                s->file_size = s->end;
                s->allocated = std::min(s->allocated, s->end);
            }
            b.clear();
            if (is_full_errno(err)) return false;
            throw_errno(err, "write segment " + s->name);
        }
        s->end += b.bytes;
        if (s->end + kFrameHeader > s->file_size) {
            bytes_used += s->end + kFrameHeader - s->file_size;
            s->file_size = s->end + kFrameHeader;
        }
        s->frames += b.frames;
        s->dirty = true;
        next_seq += b.frames;
        committed += b.frames;
        b.clear();
        return true;
    }

    // A reused segment that holds no frame yet still has the old file's size: cut it to its
    // header and end marker (at the cap, where those bytes are wanted back).
    void shrink_empty_current() {
        segment* s = current;
        if (!s || s->end != kHeaderSize || s->file_size <= kHeaderSize + kFrameHeader) return;
        if (::ftruncate(s->fd, static_cast<off_t>(kHeaderSize + kFrameHeader)) != 0) return;
        sub_used(s->file_size - (kHeaderSize + kFrameHeader));
        s->file_size = kHeaderSize + kFrameHeader;
        s->allocated = std::min(s->allocated, s->file_size);
        invalidate_window(s);
    }

    // Makes room for `frame` bytes (plus a segment header if there is no current segment).
    // false: the frame cannot be written (the caller rejects it and the rest).
    bool make_room(std::uint64_t frame, pending_batch& b, std::size_t& committed, bool& rescanned,
                   spool_append_result& r) {
        auto need = [&] { return frame + (current ? 0 : kHeaderSize + kFrameHeader); };
        auto fits = [&] { return bytes_used + b.bytes + need() <= opts.max_bytes; };
        if (fits()) return true;
        if (frame + kHeaderSize + kFrameHeader > opts.max_bytes) return false;  // can never fit
        if (!flush(b, committed)) return false;
        if (!rescanned) {  // other writers may have freed space
            rescanned = true;
            const std::uint64_t on_disk = scan_usage(opts.dir);
            bytes_used = on_disk;
            if (fits()) return true;
        }
        // A fully acknowledged current segment is just waiting for rotation, and delivered
        // segments kept for reuse are spare: free them.
        if (current && current->acked >= current->end && current->end > kHeaderSize) seal_current();
        if (!spares.empty()) delete_spares();
        shrink_empty_current();
        if (fits()) return true;
        if (opts.full_policy != spool_full_policy::drop_oldest) return false;
        while (!fits()) {
            segment* victim = nullptr;
            for (auto& s : segs)
                if (s.get() != current) {
                    victim = s.get();
                    break;
                }
            if (!victim) {
                if (current && current->end > kHeaderSize) {
                    seal_current();  // make the current segment droppable too
                    continue;
                }
                return false;
            }
            r.dropped_old += unacked_frames(victim);
            delete_segment(victim);
        }
        return true;
    }

    template <class Get>
    spool_append_result append(std::size_t n, Get get) {
        std::lock_guard<std::mutex> lock(mu);
        ensure_usage();
        spool_append_result r;
        pending_batch b;
        std::size_t committed = 0;
        bool rescanned = false;
        bool full = false;
        for (std::size_t i = 0; i < n; ++i) {
            const std::string_view p = get(i);
            if (p.size() >= kEndMarkerLen) {
                full = true;
                break;
            }
            const std::uint64_t frame = kFrameHeader + p.size();
            if (current) {
                const std::uint64_t seg_size = current->end + b.bytes;
                // (the end marker counts: a segment file stays within segment_bytes)
                if (seg_size > kHeaderSize && seg_size + frame + kFrameHeader > opts.segment_bytes) {
                    if (!flush(b, committed)) {
                        full = true;
                        break;
                    }
                    seal_current();
                }
            }
            if (!make_room(frame, b, committed, rescanned, r)) {
                full = true;
                break;
            }
            if (!current && !create_segment()) {
                full = true;
                break;
            }
            unsigned char* h = b.headers.data() + b.frames * kFrameHeader;
            store_le32(h, static_cast<std::uint32_t>(p.size()));
            store_le32(h + 4, frame_crc(p, current->seed));
            b.iov.push_back({h, kFrameHeader});
            if (!p.empty()) b.iov.push_back({const_cast<char*>(p.data()), p.size()});
            ++b.frames;
            b.bytes += frame;
            if (b.frames == kMaxBatchFrames || b.bytes >= kMaxBatchBytes) {
                if (!flush(b, committed)) {
                    full = true;
                    break;
                }
            }
        }
        // frames buffered before a refusal fit in the cap: they are still written
        if (!flush(b, committed)) full = true;
        (void)full;
        r.appended = committed;
        r.rejected = n - committed;
        r.sequence = committed > 0 ? next_seq - 1 : 0;
        if (committed > 0) {
            // interval: the owner's I/O thread syncs (ack(), or sync() on a timer); a caller
            // appending is never held up by a flush of the device's cache.
            if (opts.fsync == fsync_policy::batch) {
                if (const int err = sync_all()) throw_errno(err, "fsync segment");
            }
        }
        return r;
    }

    // ---- read ----

    // Hands up to max_frames frames (at most max_bytes, but at least one) to
    // take(payload, segment, end offset), in order. Returns how many.
    template <class Take>
    std::size_t read(std::size_t max_frames, std::size_t max_bytes, Take&& take) {
        std::lock_guard<std::mutex> lock(mu);
        ensure_usage();
        if (!adopted_once) {
            adopt();
        } else if (more_orphans && std::none_of(segs.begin(), segs.end(), [](const auto& s) {
                       return !s->own && s->read_off < s->end;
                   })) {
            adopt();  // the adopted backlog is read: take the next orphans
        }
        std::size_t count = 0;
        if (max_frames == 0) return count;
        std::size_t bytes = 0;
        bool stop = false;
        for (std::size_t i = 0; i < segs.size() && !stop && count < max_frames;) {
            segment* s = segs[i].get();
            while (s->read_off < s->end && count < max_frames) {
                std::string_view payload;
                std::uint64_t next = 0;
                const frame_status st = parse_frame(s, s->read_off, payload, next);
                if (st == frame_status::ok) {
                    if (count > 0 && bytes + payload.size() > max_bytes) {
                        stop = true;
                        break;
                    }
                    bytes += payload.size();
                    take(payload, s->name, next);
                    ++count;
                    s->read_off = next;
                    s->inflight.push_back(next);
                    if (!s->own && next > s->scanned) {
                        ++s->frames;
                        s->scanned = next;
                    }
                } else if (!s->own && st == frame_status::end) {
                    s->end = s->read_off;  // a clean end before older bytes of a reused file
                    invalidate_window(s);
                } else if (!s->own && st == frame_status::torn) {
                    cut_tail(s, s->read_off);
                } else {
                    // bad frame in the middle (or an own segment changed under us): the rest
                    // of this segment is lost
                    ++corrupt;
                    s->end = s->read_off;
                    invalidate_window(s);
                    if (s == current) current = nullptr;
                }
            }
            if (s != current && s->read_off >= s->end && s->acked >= s->end) {
                retire_segment_at(i);  // nothing left in it (tail cut back to the ack)
                continue;
            }
            ++i;
        }
        shrink_window();
        return count;
    }

    // ---- ack ----

    void write_ack(segment* s) {
        if (s->ack_fd < 0) {
            s->ack_fd = ::open(path_of(ack_name_of(s->name)).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
            if (s->ack_fd < 0) return;  // best effort: an unpersisted ack means a re-delivery
            s->ack_fresh = true;
        }
        unsigned char buf[12];
        store_le64(buf, s->acked);
        store_le32(buf + 8, crc32c(std::string_view(reinterpret_cast<const char*>(buf), 8)));
        if (pwrite_all(s->ack_fd, buf, sizeof buf, 0) != 0) return;
        if (s->ack_fresh) {  // an old ack file (of an adopted segment) may be longer
            if (::ftruncate(s->ack_fd, sizeof buf) != 0) return;
            s->ack_fresh = false;
        }
        if (opts.fsync == fsync_policy::batch) {
            ::fdatasync(s->ack_fd);
        } else {
            s->ack_dirty = true;
        }
    }

    void ack(const spool_position& pos) {
        std::unique_lock<std::mutex> lock(mu);
        std::size_t idx = segs.size();
        for (std::size_t i = 0; i < segs.size(); ++i)
            if (segs[i]->name == pos.segment) {
                idx = i;
                break;
            }
        if (idx == segs.size()) return;  // already deleted (or dropped), or not ours
        segment* s = segs[idx].get();
        const std::uint64_t x = pos.offset;
        if (x <= s->acked || x > s->end) {
            maybe_interval_sync(lock);
            return;
        }
        std::uint64_t n = 0;
        if (x <= s->read_off) {
            const auto it = std::lower_bound(s->inflight.begin(), s->inflight.end(), x);
            if (it == s->inflight.end() || *it != x) return;  // not a frame end we handed out
            n = static_cast<std::uint64_t>(it - s->inflight.begin()) + 1;
            s->inflight.erase(s->inflight.begin(), it + 1);
        } else {
            // acknowledging past the read cursor (e.g. frames read before a rewind())
            bool exact = false;
            n = count_frames(s, s->acked, x, exact);
            if (!exact) return;
            s->inflight.clear();
            s->read_off = x;
            if (!s->own && x > s->scanned) {
                s->frames = s->acked_frames + n;
                s->scanned = x;
            }
        }
        // Reading is in order: every earlier segment has been delivered.
        for (std::size_t j = 0; j < idx; ++j) {
            const segment* e = segs[j].get();
            if (e->own && e->frames > 0) acked_seq = std::max(acked_seq, e->first_seq + e->frames - 1);
        }
        for (std::size_t j = 0; j < idx; ++j) retire_segment_at(0);
        s->acked = x;
        s->acked_frames += n;
        if (s->own && s->acked_frames > 0) acked_seq = std::max(acked_seq, s->first_seq + s->acked_frames - 1);
        if (s != current && s->acked >= s->end) {
            retire_segment(s);
        } else {
            write_ack(s);
        }
        maybe_interval_sync(lock);
    }

    void rewind() {
        std::lock_guard<std::mutex> lock(mu);
        for (auto& s : segs) {
            s->read_off = s->acked;
            s->inflight.clear();
        }
    }

    void close_all() noexcept {
        std::lock_guard<std::mutex> lock(mu);
        if (opts.fsync != fsync_policy::never) sync_all();
        delete_spares();
        for (std::size_t i = 0; i < segs.size();) {
            segment* s = segs[i].get();
            if (s->acked >= s->end) {
                delete_segment_at(i);
                continue;
            }
            close_fd(s->ack_fd);
            close_locked_fd(s->fd);  // releases the lock: the next process adopts it
            ++i;
        }
        segs.clear();
        current = nullptr;
    }
};

// ---------------------------------------------------------------------------------------------

spool::spool(spool_options opts) {
    if (opts.dir.empty()) throw std::system_error(EINVAL, std::generic_category(), "fastret spool: empty dir");
    std::error_code ec;
    // Spooled records are job returns and events: owner-only, like the files in it (0600).
    if (std::filesystem::create_directories(opts.dir, ec))
        std::filesystem::permissions(opts.dir, std::filesystem::perms::owner_all, ec);
    if (ec) throw std::system_error(ec, "fastret spool: create " + opts.dir.string());
    if (!std::filesystem::is_directory(opts.dir, ec))
        throw std::system_error(ENOTDIR, std::generic_category(), "fastret spool: " + opts.dir.string());
    impl_ = std::make_unique<impl>(std::move(opts));
}

spool::~spool() {
    if (!impl_) return;
    try {
        impl_->close_all();
    } catch (...) {
    }
}

spool_append_result spool::append(std::span<const std::string> payloads) {
    return impl_->append(payloads.size(), [&](std::size_t i) { return std::string_view(payloads[i]); });
}

spool_append_result spool::append(std::span<const std::string_view> payloads) {
    return impl_->append(payloads.size(), [&](std::size_t i) { return payloads[i]; });
}

std::vector<spool_entry> spool::read(std::size_t max_frames, std::size_t max_bytes) {
    std::vector<spool_entry> out;
    impl_->read(max_frames, max_bytes, [&](std::string_view payload, const std::string& seg, std::uint64_t end) {
        out.push_back(spool_entry{std::string(payload), spool_position{seg, end}});
    });
    return out;
}

std::size_t spool::read(std::size_t max_frames, std::size_t max_bytes,
                        const std::function<void(std::string_view)>& take, spool_position& end) {
    return impl_->read(max_frames, max_bytes, [&](std::string_view payload, const std::string& seg, std::uint64_t off) {
        take(payload);
        if (end.segment != seg) end.segment = seg;
        end.offset = off;
    });
}

void spool::rewind() { impl_->rewind(); }

void spool::ack(const spool_position& pos) { impl_->ack(pos); }

std::size_t spool::adopt_orphans() {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->ensure_usage();
    return impl_->adopt();
}

std::uint64_t spool::acked_sequence() const {
    std::lock_guard<std::mutex> lock(impl_->mu);
    return impl_->acked_seq;
}

bool spool::has_unread() const {
    std::lock_guard<std::mutex> lock(impl_->mu);
    for (const auto& s : impl_->segs)
        if (s->read_off < s->end) return true;
    return false;
}

void spool::sync() {
    std::unique_lock<std::mutex> lock(impl_->mu);
    if (const int err = impl_->sync_all(&lock)) throw_errno(err, "fsync");
}

spool_stats spool::stats() const {
    std::lock_guard<std::mutex> lock(impl_->mu);
    spool_stats st;
    st.bytes_on_disk = impl_->bytes_used;
    st.segments = impl_->segs.size();
    for (const auto& s : impl_->segs) st.pending_frames += s->frames - std::min(s->frames, s->acked_frames);
    st.torn_tails_cut = impl_->torn;
    st.corrupt_frames = impl_->corrupt;
    st.adopted_segments = impl_->adopted;
    return st;
}

const spool_options& spool::options() const noexcept { return impl_->opts; }

namespace {

// Visits the unacknowledged frames of one segment file (see scan_unacknowledged); adds the
// bytes they take (headers included) to `bytes`. Returns the frames visited.
std::size_t scan_segment_file(const fs::path& dir, const std::string& name, std::string& buf,
                              const std::function<void(std::string_view)>& fn,
                              std::uint64_t& bytes, std::uint64_t& file_size) {
    const int fd = ::open((dir / name).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;  // acknowledged and deleted meanwhile
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        ::close(fd);
        return 0;
    }
    const auto size = static_cast<std::uint64_t>(st.st_size);
    file_size += size;
    char magic[kHeaderSize];
    std::uint64_t off = read_ack_at(dir / ack_name_of(name), size);
    int version = 0;
    if (pread_all(fd, magic, sizeof magic, 0) == static_cast<ssize_t>(sizeof magic))
        version = magic_version(magic);
    if (version == 0) off = size;  // not (yet) a segment: nothing to read
    const std::uint32_t seed = version == 2 ? segment_seed(name) : 0;
    std::size_t visited = 0;
    while (off + kFrameHeader <= size) {
        unsigned char head[kFrameHeader];
        if (pread_all(fd, head, sizeof head, off) != static_cast<ssize_t>(sizeof head)) break;
        if (version == 2 && is_end_marker(head, seed)) break;
        const std::uint32_t len = load_le32(head);
        if (off + kFrameHeader + len > size) break;  // being appended, or a torn tail
        buf.resize(len);
        if (pread_all(fd, buf.data(), len, off + kFrameHeader) != static_cast<ssize_t>(len)) break;
        if (frame_crc(buf, seed) != load_le32(head + 4)) break;  // torn, corrupt or old: stop
        if (fn) fn(buf);
        ++visited;
        bytes += kFrameHeader + len;
        off += kFrameHeader + len;
    }
    ::close(fd);
    return visited;
}

std::vector<std::string> segment_names(const fs::path& dir) {
    std::error_code ec;
    std::vector<std::string> names;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        auto name = it->path().filename().string();
        if (is_segment_name(name)) names.push_back(std::move(name));
    }
    std::sort(names.begin(), names.end());
    return names;
}

}  // namespace

std::size_t scan_unacknowledged(const std::filesystem::path& dir,
                                const std::function<void(std::string_view)>& fn) {
    std::size_t visited = 0;
    std::string buf;
    std::uint64_t bytes = 0, file_bytes = 0;
    for (const auto& name : segment_names(dir))
        visited += scan_segment_file(dir, name, buf, fn, bytes, file_bytes);
    return visited;
}

spool_backlog backlog_of(const std::filesystem::path& dir) {
    spool_backlog r;
    std::string buf;
    for (const auto& name : segment_names(dir)) {
        ++r.segments;
        r.frames += scan_segment_file(dir, name, buf, nullptr, r.bytes, r.bytes_on_disk);
    }
    return r;
}

}  // namespace fastret
