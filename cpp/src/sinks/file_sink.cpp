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
#include "sinks/file_sink.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <new>
#include <system_error>
#include <utility>

#include "encoders/json_lines.hpp"

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
};

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
        // buf_[0] is a '\n' sent only when an earlier failure left an unterminated line.
        buf_.assign(1, '\n');
        encode_json_lines(batch, buf_);
        const std::uint64_t batch_bytes = buf_.size() - 1;

        int rotations = 0;
        for (;;) {
            if (auto r = ensure_current(); r.status != write_status::ok) return r;
            if (rotations >= 2 || !needs_rotation(batch_bytes)) break;
            if (auto r = rotate(); r.status != write_status::ok) return r;
            ++rotations;
        }

        const std::size_t start = partial_line_ ? 0 : 1;
        if (s_.fsync && regular_) unsynced_ = true;  // from the first byte written on
        if (auto r = write_all(buf_.data() + start, buf_.size() - start);
            r.status != write_status::ok)
            return r;
        partial_line_ = false;
        // The disk can work on the batch while the next one is prepared: sync() then waits
        // for less.
        if (unsynced_) (void)::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
        if (buf_.capacity() > (std::size_t{16} << 20)) std::string().swap(buf_);
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
            int fd = ::open(s_.path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
            if (fd >= 0) return adopt(fd);
            int err = errno;
            if (err == EINTR) continue;
            if (err != ENOENT) return open_failure("open", err);

            fd = ::open(s_.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC,
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
        return write_result::success();
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

    write_result rotate() {
        // Serialize rotation between processes sharing the file. The lock is on the inode
        // being rotated: a process that waited for it finds the path renamed and reopens.
        bool locked = false;
        for (;;) {
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
    bool regular_ = true;
    bool partial_line_ = false;  // the file ends in a line we cut (write failed half-way)
    bool dir_dirty_ = false;     // directory entries changed since the last directory fsync
    bool unsynced_ = false;      // fd_ has data written since its last fdatasync (fsync true)
    int sync_error_ = 0;         // errno of a failed fdatasync not yet reported by sync()
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
    return std::make_unique<file_sink>(name, std::move(s));
}

}  // namespace fastret
