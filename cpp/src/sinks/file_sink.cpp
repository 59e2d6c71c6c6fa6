// file sink: JSON lines appended to a local file, size-based rotation.
//
// Behaviour:
//  - The file is opened lazily on the first write (O_WRONLY|O_APPEND|O_CLOEXEC); a missing
//    file is created with O_EXCL and then fchmod()ed to exactly `mode` (the umask does not
//    narrow an explicitly configured mode); missing parent directories are created with
//    mode 0700 plus read/search (and write) for group/other where `mode` grants read (write).
//  - One batch = one buffer = (normally) one write() call; partial writes and EINTR are
//    continued. With O_APPEND the kernel appends each write() call at the current end of file,
//    so processes sharing the file do not tear each other's batches (local file systems; NFS
//    does not guarantee this).
//  - fsync true: the sink defers its sync (see sink.hpp): write() writes and starts the
//    writeback (sync_file_range), sync() fdatasyncs, and fsyncs the directory after the file
//    was created or rotated, so that a synced batch survives a crash. The runtime syncs once
//    for a group of batches written back to back. Before the sink leaves a file it wrote to
//    (rotation, another process's rotation, close), it fdatasyncs that file; a failed
//    fdatasync is reported by the next sync(), so nothing written since the last sync counts.
//  - Before each batch the path is stat()ed; if it no longer names the open inode (another
//    process rotated or removed it) the sink reopens it.
//  - Rotation: if current size > 0, max_bytes > 0 and size + batch > max_bytes, the sink
//    takes flock(LOCK_EX) on the current file, checks under the lock that the path still
//    names it (else another process has just rotated: reopen instead), then renames
//    path.(N-1) -> path.N ... path -> path.1 (the old path.N is replaced, i.e. dropped) and
//    reopens. With backups = 0 the file is unlinked instead. Files beyond path.N left by an
//    earlier, larger `backups` are not touched. Non-regular files (/dev/stdout, a FIFO) are
//    never rotated or fsynced.
//  - Errors: failures to open/create that only a configuration change can fix (ENOTDIR: a
//    path component is not a directory; EISDIR: path is a directory; ENAMETOOLONG; ELOOP)
//    are fatal. Everything else (EACCES, EPERM, EROFS, ENOSPC, EDQUOT, EIO, EMFILE, ...) is
//    retry: permissions can be fixed, disks freed and file systems remounted while the
//    records wait in the spool.
//  - A batch that failed half-way is rewritten whole on retry (its first lines may then
//    appear twice; record ids identify duplicates). If a failure left an unterminated line,
//    the sink terminates it with '\n' (at once if possible, else before the next batch) so
//    that only the cut line is unreadable, never the following ones.
//  - Hash chain (chain_key set; see docs/architecture.md, "Tamper-evident audit trail"):
//    every line ends in ,"chain":{"seq":N,"prev":"<hex>","mac":"<hex>"}} with
//      mac = HMAC-SHA256(key, B + "\n" + decimal(N) + "\n" + prev)
//    where B is the line's bytes before ,"chain": and prev the mac of record N-1 (64 zeros
//    for N = 1). One chain per path across processes and rotations: every append holds
//    flock(LOCK_EX) on the current file, reads seq/mac of the last chained line from its tail
//    (from path.1's tail when the file is empty after a rotation), appends, and on a failed
//    write truncates the file back to where the batch began (so no cut line breaks the chain).
//    Checkpoints {"time","seq","mac","file","event","backups"} + ,"ckpt_mac":"<hex>"} with
//    ckpt_mac = HMAC-SHA256(key, "checkpoint\n" + bytes before ,"ckpt_mac":) are appended
//    and fsynced to checkpoint_path every checkpoint_every records and before each rotation.
#include "sinks/file_sink.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <ctime>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <new>
#include <system_error>
#include <thread>
#include <utility>

#include "encoders/json_lines.hpp"
#include "fastret/json_writer.hpp"

namespace fastret {

const std::vector<option_spec>& file_sink_options() {
    using T = option_type;
    static const std::vector<option_spec> table = {
        {"path", T::string, "", true, INT64_MIN, INT64_MAX, {},
         "file to append JSON lines to"},
        {"max_bytes", T::integer, "104857600", false, 0, INT64_MAX, {},
         "rotate when the file would grow beyond this many bytes; 0 = no rotation"},
        {"backups", T::integer, "5", false, 0, 1000, {},
         "rotated files kept as path.1 ... path.N, path.1 newest; 0 = truncate on rotation"},
        {"fsync", T::boolean, "true", false, INT64_MIN, INT64_MAX, {},
         "fsync after each batch, so that a written batch survives a crash"},
        {"mode", T::integer, "384", false, 0, 511, {},
         "permission bits of the file when the sink creates it (384 = 0o600)"},
        {"chain_key", T::string, "", false, INT64_MIN, INT64_MAX, {},
         "HMAC-SHA256 key of the tamper-evident hash chain (every line carries seq, prev and "
         "mac; check with `fastret verify`); empty = no chain. Give it as chain_key_file",
         true},
        {"checkpoint_path", T::string, "", false, INT64_MIN, INT64_MAX, {},
         "file the chain's checkpoints are appended to (with a chain); empty = "
         "<path>.checkpoints"},
        {"checkpoint_every", T::integer, "1000", false, 1, INT64_MAX, {},
         "write a checkpoint after every this many chained records (and before each rotation)"},
    };
    return table;
}

namespace {

struct file_settings {
    std::string path;  // absolute
    std::uint64_t max_bytes = 104857600;
    int backups = 5;
    bool fsync = true;
    mode_t mode = 0600;
    std::string chain_key;        // empty: no chain
    std::string checkpoint_path;  // absolute
    std::uint64_t checkpoint_every = 1000;
};

constexpr std::string_view chain_marker = ",\"chain\":";
constexpr std::string_view ckpt_marker = ",\"ckpt_mac\":";
constexpr std::string_view zero_mac =
    "0000000000000000000000000000000000000000000000000000000000000000";

// The position of the chain state in the last chained line.
struct chain_state {
    std::uint64_t seq = 0;                 // 0: nothing chained yet (the next record is seq 1)
    std::string mac{zero_mac};             // 64 lowercase hex digits
};

std::string hmac_hex(const std::string& key, std::string_view msg) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (::HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
               reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), md, &len) ==
        nullptr)
        throw std::runtime_error("HMAC-SHA256 failed");
    static constexpr char hex[] = "0123456789abcdef";
    std::string out(2 * len, '0');
    for (unsigned int i = 0; i < len; ++i) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    return out;
}

bool is_hex64(std::string_view s) {
    if (s.size() != 64) return false;
    for (char c : s)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    return true;
}

// Parses the chain member at the end of `line` (without its '\n'):
// ...,"chain":{"seq":N,"prev":"<64 hex>","mac":"<64 hex>"}}
bool parse_chain_suffix(std::string_view line, chain_state& out) {
    constexpr std::string_view seq_key = "{\"seq\":";
    auto at = line.rfind(chain_marker);
    if (at == std::string_view::npos) return false;
    std::string_view rest = line.substr(at + chain_marker.size());
    if (!rest.starts_with(seq_key)) return false;
    rest.remove_prefix(seq_key.size());
    std::uint64_t seq = 0;
    auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), seq);
    if (ec != std::errc() || seq == 0) return false;
    rest.remove_prefix(static_cast<std::size_t>(p - rest.data()));
    constexpr std::string_view prev_key = ",\"prev\":\"", mac_key = "\",\"mac\":\"";
    if (!rest.starts_with(prev_key)) return false;
    rest.remove_prefix(prev_key.size());
    if (rest.size() < 64 || !is_hex64(rest.substr(0, 64))) return false;
    rest.remove_prefix(64);
    if (!rest.starts_with(mac_key)) return false;
    rest.remove_prefix(mac_key.size());
    if (rest.size() != 64 + 3 || !is_hex64(rest.substr(0, 64)) || rest.substr(64) != "\"}}")
        return false;
    out.seq = seq;
    out.mac = std::string(rest.substr(0, 64));
    return true;
}

// The chain state of the last chained line of the open file `fd` (size `size`), reading
// backwards in blocks; lines without a chain member (written before the chain was enabled)
// are skipped. Returns false on a read error (errno set).
bool read_chain_tail(int fd, std::uint64_t size, chain_state& out, bool& found) {
    found = false;
    constexpr std::size_t block = 64 * 1024;
    std::string tail;  // the bytes [pos, size) read so far
    std::uint64_t pos = size;
    while (pos > 0) {
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(block, pos));
        std::string chunk(n, '\0');
        std::size_t got = 0;
        while (got < n) {
            ssize_t r = ::pread(fd, chunk.data() + got, n - got,
                                static_cast<off_t>(pos - n + got));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) {
                if (r == 0) errno = EIO;
                return false;
            }
            got += static_cast<std::size_t>(r);
        }
        pos -= n;
        tail.insert(0, chunk);
        // Complete lines in `tail`: those after its first '\n' (or all, at the file start).
        std::size_t end = tail.size();
        if (end > 0 && tail[end - 1] == '\n') --end;  // the file's final newline
        for (;;) {
            auto nl = end == 0 ? std::string::npos : tail.rfind('\n', end - 1);
            if (nl == std::string::npos && pos > 0) break;  // this line may begin earlier
            const std::size_t begin = nl == std::string::npos ? 0 : nl + 1;
            if (parse_chain_suffix(std::string_view(tail).substr(begin, end - begin), out)) {
                found = true;
                return true;
            }
            if (nl == std::string::npos) break;
            end = nl;
        }
        tail.resize(end);
    }
    return true;
}


std::string errno_text(int err) { return std::generic_category().message(err); }

// Open/create errors no retry can cure: the configured path itself is wrong.
bool is_config_errno(int err) noexcept {
    return err == ENOTDIR || err == EISDIR || err == ENAMETOOLONG || err == ELOOP;
}

std::string parent_dir(const std::string& path) {
    auto slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

class file_sink final : public sink {
public:
    file_sink(std::string name, file_settings s)
        : name_(std::move(name)), s_(std::move(s)), dir_(parent_dir(s_.path)) {}
    ~file_sink() override { close_fd(); }

    std::string_view type() const noexcept override { return "file"; }

    bool defers_sync() const noexcept override { return s_.fsync; }

    write_result sync() noexcept override {
        try {
            sync_fd();
            if (const int err = std::exchange(sync_error_, 0)) return io_failure("fsync", err);
            if (dir_dirty_ && regular_) return sync_dir();
            return write_result::success();
        } catch (...) {  // only an allocation of the message can throw
            return {write_status::retry, "file sink: out of memory"};
        }
    }

    write_result write(std::span<const record> batch) noexcept override {
        try {
            return write_batch(batch);
        } catch (const std::bad_alloc&) {
            return {write_status::retry, prefix() + "out of memory encoding the batch"};
        } catch (const std::exception& e) {
            return {write_status::retry, prefix() + e.what()};
        } catch (...) {
            return {write_status::retry, prefix() + "unexpected error"};
        }
    }

    void close() noexcept override {
        close_fd();
        std::string().swap(buf_);
    }

private:
    std::string prefix() const { return "file sink '" + name_ + "': "; }

    write_result failure(write_status st, std::string_view what, const std::string& target,
                         int err) const {
        std::string msg = prefix();
        msg.append(what).append(" ").append(target).append(": ").append(errno_text(err));
        return {st, std::move(msg)};
    }
    write_result io_failure(std::string_view what, int err) const {
        return failure(write_status::retry, what, s_.path, err);
    }

    write_result write_batch(std::span<const record> batch) {
        if (!s_.chain_key.empty()) return write_chained(batch);
        // buf_[0] is a '\n' sent only when an earlier failure left an unterminated line.
        buf_.assign(1, '\n');
        encode_json_lines(batch, buf_);
        const std::uint64_t batch_bytes = buf_.size() - 1;

        // A writer killed in the middle of a write (this process or another one appending to
        // the same file) leaves its last line cut: that line gets its '\n' before this batch,
        // so that this batch's lines stay whole. Other writers' whole batches cannot come in
        // between the look at the tail and the write while the lock is held (the chained path
        // checks the same under its own lock). A file that ends where this process's last
        // write ended needs no look. The lock is also what another process's rotation holds:
        // once it is ours, the path must still name the file, or the file was rotated away
        // while this writer waited.
        file_lock held;
        for (int attempt = 0;; ++attempt) {
            if (attempt >= 64)
                return {write_status::retry,
                        prefix() + "the file keeps being rotated, giving up for now"};
            int rotations = 0;
            for (;;) {
                if (auto r = ensure_current(); r.status != write_status::ok) return r;
                if (rotations >= 2 || !needs_rotation(batch_bytes)) break;
                if (auto r = rotate(); r.status != write_status::ok) return r;
                ++rotations;
            }
            if (!regular_ || !lock_for_append()) break;
            held.fd = fd_;
            if (still_current(held)) break;
        }
        off_t size_before = 0;
        if (regular_) {
            struct stat st;
            if (::fstat(fd_, &st) != 0) return io_failure("stat", errno);
            size_before = st.st_size;
            if (size_before > 0 && size_before != own_end_ && ends_mid_line(fd_, size_before))
                partial_line_ = true;
        }
        const std::size_t start = partial_line_ ? 0 : 1;
        if (s_.fsync && regular_) unsynced_ = true;  // from the first byte written on
        if (auto r = write_all(buf_.data() + start, buf_.size() - start);
            r.status != write_status::ok)
            return r;
        if (regular_) own_end_ = size_before + static_cast<off_t>(buf_.size() - start);
        partial_line_ = false;
        // The disk can work on the batch while the next one is prepared: sync() then waits
        // for less.
        if (unsynced_) (void)::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
        if (buf_.capacity() > (std::size_t{16} << 20)) std::string().swap(buf_);
        return write_result::success();
    }

    // Releases flock on fd_ when it goes out of scope (if fd_ is still that file).
    struct file_lock {
        int fd = -1;
        ~file_lock() {
            if (fd >= 0) ::flock(fd, LOCK_UN);
        }
    };

    // flock(LOCK_EX) on fd_ for an unchained append, waiting about a second at most. False
    // when the file system has no flock (NFS without lockd, some FUSE mounts) or another
    // holder keeps it (a stopped process): the append then goes on without it, as appends
    // did before there was a lock, rather than stall the sink.
    bool lock_for_append() const noexcept {
        std::chrono::milliseconds waited{0}, step{1};
        for (;;) {
            if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return true;
            if (errno == EINTR) continue;
            if (errno != EWOULDBLOCK || waited >= std::chrono::seconds(1)) return false;
            std::this_thread::sleep_for(step);
            waited += step;
            step = std::min(step * 2, std::chrono::milliseconds(50));
        }
    }

    // Takes flock(LOCK_EX) on fd_; false with errno on failure.
    bool lock_fd() const noexcept {
        for (;;) {
            if (::flock(fd_, LOCK_EX) == 0) return true;
            if (errno != EINTR) return false;
        }
    }

    bool path_names_fd() const noexcept {
        struct stat st;
        return ::stat(s_.path.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_;
    }

    // The chain state after the last chained record of the trail, read under the lock: the
    // current file's tail or, when it holds no chained line (just rotated), path.1's tail.
    write_result chain_tail(std::uint64_t size, chain_state& st) {
        bool found = false;
        if (!read_chain_tail(fd_, size, st, found)) return io_failure("read chain tail of", errno);
        if (found || s_.backups == 0) return write_result::success();
        const std::string prev = backup_name(1);
        int fd;
        do fd = ::open(prev.c_str(), O_RDONLY | O_CLOEXEC);
        while (fd < 0 && errno == EINTR);
        if (fd < 0) {
            if (errno == ENOENT) return write_result::success();  // a new trail: seq 1
            return failure(write_status::retry, "open", prev, errno);
        }
        struct stat pst;
        bool ok = ::fstat(fd, &pst) == 0 &&
                  read_chain_tail(fd, static_cast<std::uint64_t>(pst.st_size), st, found);
        const int err = errno;
        ::close(fd);
        if (!ok) return failure(write_status::retry, "read chain tail of", prev, err);
        return write_result::success();
    }

    // Appends one checkpoint line to checkpoint_path and fsyncs it.
    bool write_checkpoint(const chain_state& st, std::string_view event) noexcept {
        try {
            char ts[rfc3339_us_size];
            timespec now{};
            ::clock_gettime(CLOCK_REALTIME, &now);
            write_rfc3339_us(static_cast<std::int64_t>(now.tv_sec) * 1000000 + now.tv_nsec / 1000,
                             ts);
            std::string line = "{\"time\":\"";
            line.append(ts, rfc3339_us_size).append("\",\"seq\":").append(std::to_string(st.seq));
            line.append(",\"mac\":\"").append(st.mac).append("\",\"file\":");
            json_appender(line).string(s_.path);
            line.append(",\"event\":\"").append(event).append("\",\"backups\":");
            line.append(std::to_string(s_.backups));
            const std::string mac = hmac_hex(s_.chain_key, "checkpoint\n" + line);
            line.append(ckpt_marker).append("\"").append(mac).append("\"}\n");
            int fd;
            do fd = ::open(s_.checkpoint_path.c_str(),
                           O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, s_.mode);
            while (fd < 0 && errno == EINTR);
            if (fd < 0) return false;
            const char* p = line.data();
            std::size_t left = line.size();
            bool ok = true;
            while (left > 0) {
                ssize_t n = ::write(fd, p, left);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) {
                    ok = false;
                    break;
                }
                p += n;
                left -= static_cast<std::size_t>(n);
            }
            if (ok && ::fsync(fd) != 0) ok = false;
            ::close(fd);
            return ok;
        } catch (...) {
            return false;
        }
    }

    // With a chain: lock, (rotate,) read the tail's chain state, append, checkpoint, unlock.
    write_result write_chained(std::span<const record> batch) {
        std::string& plain = scratch_;
        plain.clear();
        encode_json_lines(batch, plain);

        file_lock held;
        std::uint64_t size = 0;
        for (int attempt = 0;; ++attempt) {
            // Each lap means another process rotated (made progress); only a storm of them
            // sends the batch back to the runtime for a retry.
            if (attempt >= 64)
                return {write_status::retry,
                        prefix() + "the file keeps being rotated, giving up for now"};
            if (auto r = ensure_current(); r.status != write_status::ok) return r;
            if (!lock_fd()) return io_failure("lock", errno);
            held.fd = fd_;
            if (!still_current(held)) continue;
            struct stat st;
            if (::fstat(fd_, &st) != 0) return io_failure("stat", errno);
            size = static_cast<std::uint64_t>(st.st_size);
            if (attempt < 2 && needs_rotation(plain.size())) {
                chain_state last;
                if (auto r = chain_tail(size, last); r.status != write_status::ok) return r;
                if (last.seq > 0 && !write_checkpoint(last, "rotate"))
                    return failure(write_status::retry, "write checkpoint (before rotating) to",
                                   s_.checkpoint_path, errno ? errno : EIO);
                held.fd = -1;  // rotate() unlocks (closing fd_)
                if (auto r = rotate(true); r.status != write_status::ok) return r;
                continue;
            }
            break;
        }

        chain_state st;
        if (auto r = chain_tail(size, st); r.status != write_status::ok) return r;
        const std::uint64_t first_seq = st.seq + 1;

        // A file not ending in '\n' (a line cut by a crash) gets one first.
        buf_.clear();
        if (size > 0 && ends_mid_line(fd_, static_cast<off_t>(size))) buf_.push_back('\n');
        std::string_view rest(plain);
        std::string msg;
        while (!rest.empty()) {
            const auto nl = rest.find('\n');
            std::string_view line = rest.substr(0, nl);
            rest.remove_prefix(nl + 1);
            line.remove_suffix(1);  // the closing '}'
            const std::string seq = std::to_string(++st.seq);
            msg.assign(line).append("\n").append(seq).append("\n").append(st.mac);
            std::string mac = hmac_hex(s_.chain_key, msg);
            buf_.append(line).append(chain_marker).append("{\"seq\":").append(seq);
            buf_.append(",\"prev\":\"").append(st.mac).append("\",\"mac\":\"").append(mac);
            buf_.append("\"}}\n");
            st.mac = std::move(mac);
        }

        if (s_.fsync && regular_) unsynced_ = true;
        if (auto r = write_all(buf_.data(), buf_.size()); r.status != write_status::ok) {
            // Under the lock nobody else appended: cut the file back to where we began, so
            // that the retry continues an unbroken chain.
            if (regular_ && ::ftruncate(fd_, static_cast<off_t>(size)) == 0) partial_line_ = false;
            return r;
        }
        partial_line_ = false;
        if (unsynced_) (void)::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE);

        if (pending_checkpoint_.seq > 0 && pending_checkpoint_.seq < first_seq &&
            write_checkpoint(pending_checkpoint_, "every"))
            pending_checkpoint_ = chain_state{};
        if (st.seq / s_.checkpoint_every != (first_seq - 1) / s_.checkpoint_every) {
            // The checkpoint must not claim a record that is not durable yet.
            sync_fd();
            // A checkpoint not written now is tried again with the next batch.
            if (sync_error_ != 0 || !write_checkpoint(st, "every")) pending_checkpoint_ = st;
        }
        if (buf_.capacity() > (std::size_t{16} << 20)) std::string().swap(buf_);
        if (scratch_.capacity() > (std::size_t{16} << 20)) std::string().swap(scratch_);
        return write_result::success();
    }

    // fdatasync of what was written to fd_ since the last one. After a failed fdatasync the
    // kernel may have dropped the dirty pages: the error is kept for sync() (so that the
    // runtime writes those batches again) and the descriptor closed (the rewrite starts from
    // a fresh one).
    void sync_fd() noexcept {
        if (!unsynced_) return;
        unsynced_ = false;
        if (fd_ < 0) return;
        if (::fdatasync(fd_) != 0) {
            sync_error_ = errno;
            close_fd();
        }
    }

    // Make fd_ refer to the inode the path names now (opening or reopening as needed).
    write_result ensure_current() {
        if (fd_ >= 0) {
            struct stat st;
            if (::stat(s_.path.c_str(), &st) != 0 || st.st_dev != dev_ || st.st_ino != ino_)
                close_fd();  // rotated or removed by someone else
        }
        if (fd_ >= 0) return write_result::success();
        return open_file();
    }

    write_result open_file() {
        bool made_dirs = false;
        for (int attempt = 0; attempt < 16; ++attempt) {
            // With a chain the tail is read back (pread) for the chain state.
            const int rw = s_.chain_key.empty() ? O_WRONLY : O_RDWR;
            int fd = ::open(s_.path.c_str(), rw | O_APPEND | O_CLOEXEC);
            if (fd >= 0) return adopt(fd);
            int err = errno;
            if (err == EINTR) continue;
            if (err != ENOENT) return open_failure("open", err);

            fd = ::open(s_.path.c_str(), rw | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC,
                        s_.mode);
            if (fd >= 0) {
                // Exactly the configured bits, whatever the umask.
                (void)::fchmod(fd, s_.mode);
                dir_dirty_ = true;
                return adopt(fd);
            }
            err = errno;
            if (err == EEXIST || err == EINTR) continue;  // another process created it first
            if (err == ENOENT && !made_dirs) {
                if (auto r = make_dirs(); r.status != write_status::ok) return r;
                made_dirs = true;
                continue;
            }
            return open_failure("create", err);
        }
        return {write_status::retry,
                prefix() + "open " + s_.path + ": the file keeps disappearing, giving up for now"};
    }

    write_result open_failure(std::string_view what, int err) const {
        return failure(is_config_errno(err) ? write_status::fatal : write_status::retry, what,
                       s_.path, err);
    }

    write_result adopt(int fd) {
        struct stat st;
        if (::fstat(fd, &st) != 0) {
            int err = errno;
            ::close(fd);
            return io_failure("stat", err);
        }
        fd_ = fd;
        dev_ = st.st_dev;
        ino_ = st.st_ino;
        regular_ = S_ISREG(st.st_mode);
        own_end_ = -1;
        return write_result::success();
    }

    // Whether the last byte of the file open as `fd` (`size` bytes, more than 0) is not '\n'.
    // A write-only `fd` (the unchained sink's) is opened again read-only through /proc; false
    // if that is not possible.
    static bool ends_mid_line(int fd, off_t size) {
        const auto last_byte = [size](int from, char& last) {
            ssize_t n;
            do n = ::pread(from, &last, 1, size - 1);
            while (n < 0 && errno == EINTR);
            return n == 1;
        };
        char last = '\n';
        if (last_byte(fd, last)) return last != '\n';
        if (errno != EBADF) return false;
        const std::string self = "/proc/self/fd/" + std::to_string(fd);
        int rfd;
        do rfd = ::open(self.c_str(), O_RDONLY | O_CLOEXEC);
        while (rfd < 0 && errno == EINTR);
        if (rfd < 0) return false;
        const bool read = last_byte(rfd, last);
        ::close(rfd);
        return read && last != '\n';
    }

    // After taking the lock on fd_: true if the path still names fd_'s file. Otherwise
    // (another process rotated it while this one waited for the lock) the lock is released
    // and fd_ closed, for the caller to follow the path.
    bool still_current(file_lock& held) {
        if (path_names_fd()) return true;
        ::flock(fd_, LOCK_UN);
        held.fd = -1;
        close_fd();
        return false;
    }

    // mkdir -p of the parent directory.
    write_result make_dirs() {
        const mode_t dmode = S_IRWXU | (s_.mode & 0066) | ((s_.mode & 0044) >> 2);
        const std::string& dir = dir_;
        for (std::size_t pos = 1; pos <= dir.size(); ++pos) {
            if (pos != dir.size() && dir[pos] != '/') continue;
            if (dir[pos - 1] == '/') continue;  // "//" or trailing slash
            std::string prefix_path = dir.substr(0, pos);
            if (::mkdir(prefix_path.c_str(), dmode) == 0) {
                continue;
            }
            int err = errno;
            if (err == EEXIST) continue;  // a directory, or a file (then open says ENOTDIR)
            struct stat st;
            if (::stat(prefix_path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) continue;
            return failure(is_config_errno(err) ? write_status::fatal : write_status::retry,
                           "create directory", prefix_path, err);
        }
        return write_result::success();
    }

    bool needs_rotation(std::uint64_t batch_bytes) const {
        if (s_.max_bytes == 0 || !regular_) return false;
        struct stat st;
        if (::fstat(fd_, &st) != 0) return false;  // the write will report the problem
        const auto size = static_cast<std::uint64_t>(st.st_size);
        return size > 0 && size + batch_bytes > s_.max_bytes;
    }

    std::string backup_name(int i) const { return s_.path + "." + std::to_string(i); }

    write_result rotate(bool already_locked = false) {
        // Serialize rotation between processes sharing the file. The lock is on the inode
        // being rotated: a process that waited for it finds the path renamed and reopens.
        bool locked = already_locked;
        while (!locked) {
            if (::flock(fd_, LOCK_EX) == 0) {
                locked = true;
                break;
            }
            if (errno != EINTR) break;  // no locking here (ENOLCK...): rotate unlocked
        }
        struct stat st;
        if (::stat(s_.path.c_str(), &st) != 0 || st.st_dev != dev_ || st.st_ino != ino_) {
            close_fd();  // someone else rotated while we waited; reopen, do not rotate again
            return write_result::success();
        }
        auto fail = [&](std::string_view what, const std::string& target, int err) {
            if (locked) ::flock(fd_, LOCK_UN);
            return failure(write_status::retry, what, target, err);
        };
        if (s_.backups == 0) {
            if (::unlink(s_.path.c_str()) != 0 && errno != ENOENT)
                return fail("rotate: remove", s_.path, errno);
        } else {
            for (int i = s_.backups - 1; i >= 1; --i) {
                auto from = backup_name(i);
                if (::rename(from.c_str(), backup_name(i + 1).c_str()) != 0 && errno != ENOENT)
                    return fail("rotate: rename", from, errno);
            }
            if (::rename(s_.path.c_str(), backup_name(1).c_str()) != 0 && errno != ENOENT)
                return fail("rotate: rename", s_.path, errno);
        }
        dir_dirty_ = true;
        close_fd();  // also releases the lock
        return write_result::success();
    }

    write_result write_all(const char* p, std::size_t left) {
        bool wrote_any = false;
        char last = '\n';
        while (left > 0) {
            const std::size_t chunk = std::min<std::size_t>(left, std::size_t{1} << 30);
            ssize_t n = ::write(fd_, p, chunk);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                int err = n < 0 ? errno : EIO;
                if (wrote_any && last != '\n') {
                    // Terminate the cut line now if the file takes one more byte.
                    ssize_t m;
                    do m = ::write(fd_, "\n", 1);
                    while (m < 0 && errno == EINTR);
                    partial_line_ = m != 1;
                } else if (wrote_any) {
                    partial_line_ = false;
                }
                return io_failure("write", err);
            }
            wrote_any = true;
            last = p[n - 1];
            p += n;
            left -= static_cast<std::size_t>(n);
        }
        return write_result::success();
    }

    write_result sync_dir() {
        int dfd;
        do dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        while (dfd < 0 && errno == EINTR);
        if (dfd < 0) return failure(write_status::retry, "open directory", dir_, errno);
        int rc = ::fsync(dfd);
        int err = errno;
        ::close(dfd);
        // Some file systems cannot fsync a directory (EINVAL); nothing more to be done there.
        if (rc != 0 && err != EINVAL) return failure(write_status::retry, "fsync directory", dir_, err);
        dir_dirty_ = false;
        return write_result::success();
    }

    void close_fd() noexcept {
        if (fd_ < 0) return;
        sync_fd();  // a later sync() reaches only the file open then
        if (fd_ < 0) return;
        if (partial_line_) {
            // Last chance to terminate a cut line in the file we are leaving.
            ssize_t m;
            do m = ::write(fd_, "\n", 1);
            while (m < 0 && errno == EINTR);
            partial_line_ = false;
        }
        ::close(fd_);
        fd_ = -1;
    }

    std::string name_;
    file_settings s_;
    std::string dir_;
    std::string buf_;
    int fd_ = -1;
    dev_t dev_ = 0;
    ino_t ino_ = 0;
    off_t own_end_ = -1;  // the file's size after this process's last whole write (unchained)
    bool regular_ = true;
    bool partial_line_ = false;  // the file ends in a line we cut (write failed half-way)
    bool dir_dirty_ = false;     // directory entries changed since the last directory fsync
    bool unsynced_ = false;      // fd_ has data written since its last fdatasync (fsync true)
    int sync_error_ = 0;         // errno of a failed fdatasync not yet reported by sync()
    std::string scratch_;              // the batch's lines before chaining
    chain_state pending_checkpoint_;   // a periodic checkpoint that could not be written yet
};

}  // namespace

std::unique_ptr<sink> make_file_sink(const std::string& name, const options& opts) {
    const std::string owner = "sink '" + name + "' (file)";
    file_settings s;
    s.path = opts.get_string("path");
    if (s.path.empty()) throw config_error(owner + ": option 'path' must not be empty");
    if (s.path.back() == '/')
        throw config_error(owner + ": option 'path' must name a file, not a directory: " + s.path);
    if (s.path.find('\0') != std::string::npos)
        throw config_error(owner + ": option 'path' contains a NUL byte");
    if (s.path.front() != '/') {
        // Resolve now: the process may chdir later.
        std::error_code ec;
        auto abs = std::filesystem::absolute(s.path, ec);
        if (!ec) s.path = abs.string();
    }
    s.max_bytes = static_cast<std::uint64_t>(std::max<std::int64_t>(0, opts.get_int("max_bytes")));
    s.backups = static_cast<int>(std::clamp<std::int64_t>(opts.get_int("backups"), 0, 1000));
    s.fsync = opts.get_bool("fsync");
    s.mode = static_cast<mode_t>(std::clamp<std::int64_t>(opts.get_int("mode"), 0, 0777));
    s.chain_key = opts.get_string("chain_key");
    s.checkpoint_every =
        static_cast<std::uint64_t>(std::max<std::int64_t>(1, opts.get_int("checkpoint_every")));
    s.checkpoint_path = opts.get_string("checkpoint_path");
    if (s.checkpoint_path.empty()) s.checkpoint_path = s.path + ".checkpoints";
    if (s.checkpoint_path.front() != '/') {
        std::error_code ec;
        auto abs = std::filesystem::absolute(s.checkpoint_path, ec);
        if (!ec) s.checkpoint_path = abs.string();
    }
    if (!s.chain_key.empty() && s.backups == 0 && s.max_bytes > 0)
        throw config_error(owner + ": option 'chain_key' needs 'backups' >= 1 (or max_bytes 0): "
                           "with backups 0 rotation deletes the records the chain continues from");
    if (!s.chain_key.empty() && s.checkpoint_path == s.path)
        throw config_error(owner + ": option 'checkpoint_path' must differ from 'path'");
    return std::make_unique<file_sink>(name, std::move(s));
}

}  // namespace fastret
