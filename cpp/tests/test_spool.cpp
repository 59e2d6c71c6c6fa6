// Tests of the durable spool (fastret/spool.hpp): framing, ordering, acknowledgement,
// persistence and adoption across objects and processes, torn tails, corruption, caps.
#include <catch2/catch.hpp>

#include "fastret/spool.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using fastret::spool;
using fastret::spool_entry;
using fastret::spool_options;

namespace {

// A fresh directory under the system temp dir, removed afterwards.
struct temp_dir {
    fs::path path;
    temp_dir() {
        static std::atomic<int> counter{0};
        path = fs::temp_directory_path() /
               ("fastret-spool-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~temp_dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
};

spool_options opts_for(const fs::path& dir) {
    spool_options o;
    o.dir = dir;
    o.fsync = fastret::fsync_policy::never;
    return o;
}

std::string payload(std::size_t i, std::size_t pad = 0) {
    std::string s = "frame-" + std::to_string(i);
    if (s.size() < pad) s.append(pad - s.size(), '.');
    return s;
}

std::vector<std::string> payloads(std::size_t from, std::size_t to, std::size_t pad = 0) {
    std::vector<std::string> v;
    for (std::size_t i = from; i < to; ++i) v.push_back(payload(i, pad));
    return v;
}

fastret::spool_append_result append(spool& sp, const std::vector<std::string>& v) {
    return sp.append(std::span<const std::string>(v));
}

std::vector<spool_entry> read_all(spool& sp, std::size_t batch = 1000) {
    std::vector<spool_entry> all;
    for (;;) {
        auto got = sp.read(batch, 1u << 30);
        if (got.empty()) break;
        for (auto& e : got) all.push_back(std::move(e));
    }
    return all;
}

std::vector<fs::path> files_with_ext(const fs::path& dir, const std::string& ext) {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.path().extension() == ext) out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
}

std::uint64_t seg_bytes_on_disk(const fs::path& dir) {
    std::uint64_t total = 0;
    for (const auto& p : files_with_ext(dir, ".seg")) total += fs::file_size(p);
    return total;
}

void append_raw(const fs::path& file, const std::string& bytes) {
    std::ofstream f(file, std::ios::binary | std::ios::app);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le32(std::uint32_t v) {
    std::string s(4, '\0');
    for (int i = 0; i < 4; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return s;
}

std::string frame(const std::string& p, std::uint32_t seed = 0) {
    return le32(static_cast<std::uint32_t>(p.size())) + le32(fastret::frame_crc(p, seed)) + p;
}

std::string read_file(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_file(const fs::path& p, const std::string& bytes) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Bitwise reference CRC32C.
std::uint32_t crc32c_ref(std::string_view s) {
    std::uint32_t c = 0xffffffffu;
    for (unsigned char b : s) {
        c ^= b;
        for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

}  // namespace

TEST_CASE("crc32c matches the Castagnoli check value and a bitwise reference", "[spool]") {
    CHECK(fastret::crc32c("123456789") == 0xE3069283u);
    CHECK(fastret::crc32c("") == 0u);
    CHECK(fastret::crc32c("6789", fastret::crc32c("12345")) == 0xE3069283u);
    std::string data;
    std::uint32_t x = 12345;
    for (int i = 0; i < 300; ++i) {
        x = x * 1103515245u + 12345u;
        data.push_back(static_cast<char>(x >> 16));
    }
    for (std::size_t len : {1u, 7u, 8u, 9u, 15u, 16u, 17u, 63u, 64u, 255u, 300u})
        CHECK(fastret::crc32c(std::string_view(data).substr(0, len)) == crc32c_ref(std::string_view(data).substr(0, len)));
}

TEST_CASE("appended frames round-trip in order and acking advances acked_sequence", "[spool]") {
    temp_dir d;
    spool sp(opts_for(d.path));
    CHECK_FALSE(sp.has_unread());
    CHECK(sp.read(10, 1 << 20).empty());

    auto r1 = append(sp, payloads(0, 5));
    CHECK(r1.appended == 5);
    CHECK(r1.rejected == 0);
    CHECK(r1.sequence == 5);
    std::vector<std::string_view> views{"frame-5", "frame-6", "frame-7"};
    auto r2 = sp.append(std::span<const std::string_view>(views));
    CHECK(r2.appended == 3);
    CHECK(r2.sequence == 8);
    CHECK(sp.has_unread());
    CHECK(sp.stats().pending_frames == 8);

    auto got = sp.read(6, 1 << 20);
    REQUIRE(got.size() == 6);
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i].payload == payload(i));
    CHECK(sp.acked_sequence() == 0);
    sp.ack(got[3].end);
    CHECK(sp.acked_sequence() == 4);
    sp.ack(got[5].end);
    CHECK(sp.acked_sequence() == 6);
    CHECK(sp.stats().pending_frames == 2);

    auto rest = sp.read(100, 1 << 20);
    REQUIRE(rest.size() == 2);
    CHECK(rest[0].payload == "frame-6");
    CHECK(rest[1].payload == "frame-7");
    CHECK_FALSE(sp.has_unread());
    sp.ack(rest[1].end);
    CHECK(sp.acked_sequence() == 8);
    CHECK(sp.stats().pending_frames == 0);
    CHECK(sp.read(10, 1 << 20).empty());
}

TEST_CASE("empty and large payloads round-trip", "[spool]") {
    temp_dir d;
    spool sp(opts_for(d.path));
    std::string big(3 * 1024 * 1024 + 17, 'x');
    for (std::size_t i = 0; i < big.size(); i += 4093) big[i] = static_cast<char>('a' + i % 26);
    std::vector<std::string> v{"", big, "", "tail"};
    CHECK(append(sp, v).appended == 4);
    auto got = read_all(sp);
    REQUIRE(got.size() == 4);
    for (std::size_t i = 0; i < 4; ++i) CHECK(got[i].payload == v[i]);
}

TEST_CASE("read respects max_frames and max_bytes but returns at least one frame", "[spool]") {
    temp_dir d;
    spool sp(opts_for(d.path));
    append(sp, payloads(0, 10, 100));
    CHECK(sp.read(0, 1 << 20).empty());
    auto a = sp.read(3, 1 << 20);
    CHECK(a.size() == 3);
    auto b = sp.read(100, 250);  // 100-byte payloads: two fit
    CHECK(b.size() == 2);
    auto c = sp.read(100, 10);  // nothing fits, one is returned anyway
    REQUIRE(c.size() == 1);
    CHECK(c[0].payload == payload(5, 100));
    auto e = sp.read(100, 1 << 20);
    CHECK(e.size() == 4);
}

TEST_CASE("order is preserved across segment rotation and acked segments are deleted", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    o.segment_bytes = 256;
    {
        spool sp(o);
        for (std::size_t i = 0; i < 200; i += 10) CHECK(append(sp, payloads(i, i + 10, 40)).appended == 10);
        CHECK(files_with_ext(d.path, ".seg").size() > 10);
        for (const auto& p : files_with_ext(d.path, ".seg")) CHECK(fs::file_size(p) <= 256);

        std::size_t next = 0;
        for (;;) {
            auto got = sp.read(7, 1 << 20);
            if (got.empty()) break;
            for (const auto& e : got) CHECK(e.payload == payload(next++, 40));
            sp.ack(got.back().end);
            CHECK(sp.acked_sequence() == next);
        }
        CHECK(next == 200);
        // only the segment still being written remains, and up to eight delivered segment
        // files kept for reuse
        CHECK(files_with_ext(d.path, ".seg").size() <= 9);
        CHECK(sp.stats().segments == 1);
        CHECK(sp.stats().bytes_on_disk == seg_bytes_on_disk(d.path));
    }
    CHECK(files_with_ext(d.path, ".seg").empty());
    CHECK(files_with_ext(d.path, ".ack").empty());
}

TEST_CASE("unacknowledged frames survive destruction and are adopted in order", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    o.segment_bytes = 512;
    {
        spool sp(o);
        append(sp, payloads(0, 50, 20));
        auto got = sp.read(10, 1 << 20);  // read but never acknowledged
        CHECK(got.size() == 10);
    }
    CHECK(files_with_ext(d.path, ".seg").size() > 1);
    {
        spool sp(o);
        CHECK(sp.adopt_orphans() == files_with_ext(d.path, ".seg").size());
        CHECK(sp.has_unread());
        auto got = read_all(sp, 9);
        REQUIRE(got.size() == 50);
        for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i].payload == payload(i, 20));
        CHECK(sp.stats().adopted_segments > 1);
        CHECK(sp.acked_sequence() == 0);  // adopted frames are not this object's sequence
        sp.ack(got.back().end);
        CHECK(files_with_ext(d.path, ".seg").empty());
    }
    {
        spool sp(o);
        CHECK(sp.read(100, 1 << 20).empty());
    }
    CHECK(files_with_ext(d.path, ".seg").empty());
    CHECK(files_with_ext(d.path, ".ack").empty());
}

TEST_CASE("after a full ack and destruction a new spool reads nothing and the files are gone", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    o.fsync = fastret::fsync_policy::batch;
    {
        spool sp(o);
        append(sp, payloads(0, 20));
        auto got = read_all(sp);
        REQUIRE(got.size() == 20);
        sp.ack(got.back().end);
        CHECK(files_with_ext(d.path, ".seg").size() == 1);  // current segment, until destruction
    }
    CHECK(files_with_ext(d.path, ".seg").empty());
    CHECK(files_with_ext(d.path, ".ack").empty());
    spool sp(o);
    CHECK(sp.adopt_orphans() == 0);
    CHECK(sp.read(100, 1 << 20).empty());
}

TEST_CASE("a partial ack replays only the unacknowledged rest", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    o.fsync = fastret::fsync_policy::batch;
    o.segment_bytes = 300;
    {
        spool sp(o);
        append(sp, payloads(0, 40, 16));
        auto got = sp.read(25, 1 << 20);
        REQUIRE(got.size() == 25);
        sp.ack(got[19].end);  // 0..19 delivered
        CHECK(sp.acked_sequence() == 20);
    }
    {
        spool sp(o);
        auto got = read_all(sp, 4);
        REQUIRE(got.size() == 20);
        for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i].payload == payload(20 + i, 16));
        // partial ack of the adopted backlog, again
        sp.ack(got[9].end);
    }
    {
        spool sp(o);
        auto got = read_all(sp);
        REQUIRE(got.size() == 10);
        CHECK(got.front().payload == payload(30, 16));
        CHECK(got.back().payload == payload(39, 16));
        sp.ack(got.back().end);
    }
    CHECK(files_with_ext(d.path, ".seg").empty());
}

TEST_CASE("rewind re-delivers unacknowledged frames", "[spool]") {
    temp_dir d;
    spool sp(opts_for(d.path));
    append(sp, payloads(0, 10));
    auto a = sp.read(4, 1 << 20);
    REQUIRE(a.size() == 4);
    sp.ack(a[1].end);
    auto b = sp.read(2, 1 << 20);
    REQUIRE(b.size() == 2);
    CHECK(b[0].payload == "frame-4");
    sp.rewind();
    CHECK(sp.has_unread());
    auto c = read_all(sp, 3);
    REQUIRE(c.size() == 8);
    for (std::size_t i = 0; i < c.size(); ++i) CHECK(c[i].payload == payload(2 + i));
    // a position handed out before the rewind is still a valid ack
    sp.ack(a[3].end);
    CHECK(sp.acked_sequence() == 4);
    sp.ack(c.back().end);
    CHECK(sp.acked_sequence() == 10);
    sp.rewind();
    CHECK_FALSE(sp.has_unread());
    CHECK(sp.read(10, 1 << 20).empty());
}

TEST_CASE("rewind also covers adopted segments", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    { spool sp(o); append(sp, payloads(0, 5)); }
    spool sp(o);
    append(sp, payloads(5, 8));
    auto a = read_all(sp);
    REQUIRE(a.size() == 8);
    sp.ack(a[2].end);
    sp.rewind();
    auto b = read_all(sp);
    REQUIRE(b.size() == 5);
    for (std::size_t i = 0; i < b.size(); ++i) CHECK(b[i].payload == payload(3 + i));
    sp.ack(b.back().end);
    CHECK(sp.acked_sequence() == 3);
}

TEST_CASE("acked_sequence counts only own frames, which follow adopted ones", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    { spool sp(o); append(sp, payloads(0, 3)); }
    spool sp(o);
    CHECK(append(sp, payloads(3, 5)).sequence == 2);
    auto got = read_all(sp);
    REQUIRE(got.size() == 5);
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i].payload == payload(i));
    sp.ack(got[2].end);
    CHECK(sp.acked_sequence() == 0);
    sp.ack(got[3].end);
    CHECK(sp.acked_sequence() == 1);
    sp.ack(got[4].end);
    CHECK(sp.acked_sequence() == 2);
}

TEST_CASE("orphans adopted while own frames are being read keep everything in a consistent order", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    spool sp(o);
    CHECK(sp.adopt_orphans() == 0);
    append(sp, payloads(100, 103));
    auto a = sp.read(2, 1 << 20);
    REQUIRE(a.size() == 2);
    {
        spool other(o);  // another writer that goes away with a backlog
        append(other, payloads(0, 3));
    }
    CHECK(sp.adopt_orphans() == 1);
    append(sp, payloads(103, 105));
    auto b = read_all(sp);
    std::vector<std::string> seen;
    for (auto& e : b) seen.push_back(e.payload);
    std::vector<std::string> expect{"frame-102", "frame-0", "frame-1", "frame-2", "frame-103", "frame-104"};
    CHECK(seen == expect);
    sp.ack(b[4].end);  // implies everything before it
    CHECK(sp.acked_sequence() == 4);
    sp.ack(b.back().end);
    CHECK(sp.acked_sequence() == 5);
    CHECK(sp.stats().pending_frames == 0);
}

TEST_CASE("ack ignores unknown segments and positions that are not frame ends", "[spool]") {
    temp_dir d;
    spool sp(opts_for(d.path));
    append(sp, payloads(0, 4));
    auto got = sp.read(4, 1 << 20);
    REQUIRE(got.size() == 4);
    sp.ack({"no-such-segment.seg", 100});
    sp.ack({got[0].end.segment, got[0].end.offset + 1});
    sp.ack({got[0].end.segment, 1ull << 40});
    CHECK(sp.acked_sequence() == 0);
    sp.ack(got[1].end);
    sp.ack(got[0].end);  // already covered: no-op
    CHECK(sp.acked_sequence() == 2);
    CHECK(sp.stats().pending_frames == 2);
}

TEST_CASE("a torn tail is cut off on replay and the file truncated", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    {
        spool sp(o);
        append(sp, payloads(0, 3));
    }
    auto segs = files_with_ext(d.path, ".seg");
    REQUIRE(segs.size() == 1);
    // A torn write overwrites the end marker after the last whole frame.
    const auto whole = fs::file_size(segs[0]) - 8;
    fs::resize_file(segs[0], whole);
    const std::string name = segs[0].filename().string();

    std::string tail;
    SECTION("short frame header") { tail = std::string("\x05\x00\x00", 3); }
    SECTION("short payload") { tail = frame("frame-3-with-a-long-payload", fastret::segment_seed(name)).substr(0, 20); }
    SECTION("CRC mismatch in the last frame") {
        tail = frame("frame-3", fastret::segment_seed(name));
        tail.back() ^= 0x40;
    }
    SECTION("older frames of a reused file, without end marker") {
        tail = frame("old-frame-1", fastret::segment_seed("00000000000000000001-1-0.seg")) +
               frame("old-frame-2", fastret::segment_seed("00000000000000000001-1-0.seg"));
    }
    SECTION("zero-filled tail after a power loss") { tail = std::string(64, '\0'); }
    append_raw(segs[0], tail);
    REQUIRE(fs::file_size(segs[0]) == whole + tail.size());

    {
        spool sp(o);
        auto got = read_all(sp);
        REQUIRE(got.size() == 3);
        for (std::size_t i = 0; i < 3; ++i) CHECK(got[i].payload == payload(i));
        CHECK(sp.stats().torn_tails_cut == 1);
        CHECK(sp.stats().corrupt_frames == 0);
        CHECK(fs::file_size(segs[0]) == whole);
    }
    spool sp(o);  // the cut is permanent
    CHECK(read_all(sp).size() == 3);
    CHECK(sp.stats().torn_tails_cut == 0);
}

TEST_CASE("a bad frame in the middle ends the segment's replay and is counted as corrupt", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    {
        spool sp(o);
        append(sp, payloads(0, 4));
    }
    auto segs = files_with_ext(d.path, ".seg");
    REQUIRE(segs.size() == 1);
    std::string bytes = read_file(segs[0]);
    const std::size_t second_payload = 8 + frame("frame-0").size() + 8;
    bytes[second_payload] ^= 0x01;  // bit rot in frame 1
    write_file(segs[0], bytes);
    {
        spool sp(o);
        append(sp, payloads(10, 12));  // own frames still come after
        auto got = read_all(sp);
        REQUIRE(got.size() == 3);
        CHECK(got[0].payload == "frame-0");
        CHECK(got[1].payload == "frame-10");
        CHECK(got[2].payload == "frame-11");
        CHECK(sp.stats().corrupt_frames == 1);
        CHECK(sp.stats().torn_tails_cut == 0);
        CHECK(fs::file_size(segs[0]) == bytes.size());  // not truncated: it is not a tail
        sp.ack(got.back().end);
    }
    CHECK(files_with_ext(d.path, ".seg").empty());
}

TEST_CASE("a corrupt or torn ack file replays everything", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    o.fsync = fastret::fsync_policy::batch;
    {
        spool sp(o);
        append(sp, payloads(0, 10));
        auto got = sp.read(10, 1 << 20);
        sp.ack(got[6].end);
    }
    auto acks = files_with_ext(d.path, ".ack");
    REQUIRE(acks.size() == 1);
    std::string ack = read_file(acks[0]);
    REQUIRE(ack.size() == 12);

    SECTION("intact ack file: only the rest") {
        spool sp(o);
        CHECK(read_all(sp).size() == 3);
    }
    SECTION("bit flip") {
        ack[2] ^= 0x10;
        write_file(acks[0], ack);
        spool sp(o);
        auto got = read_all(sp);
        REQUIRE(got.size() == 10);
        CHECK(got[0].payload == "frame-0");
    }
    SECTION("torn") {
        write_file(acks[0], ack.substr(0, 5));
        spool sp(o);
        CHECK(read_all(sp).size() == 10);
    }
    SECTION("offset past the end of the segment") {
        std::string bad(8, '\0');
        bad[5] = 1;
        write_file(acks[0], bad + le32(fastret::crc32c(bad)));
        spool sp(o);
        CHECK(read_all(sp).size() == 10);
    }
}

TEST_CASE("a second spool in the same process cannot adopt a live spool's segments", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    auto a = std::make_unique<spool>(o);
    append(*a, payloads(0, 5));
    spool b(o);
    CHECK(b.adopt_orphans() == 0);
    CHECK(b.read(10, 1 << 20).empty());
    CHECK_FALSE(b.has_unread());
    a.reset();  // the writer goes away without acknowledging
    CHECK(b.adopt_orphans() == 1);
    auto got = read_all(b);
    REQUIRE(got.size() == 5);
    CHECK(got[4].payload == "frame-4");
}

TEST_CASE("another process cannot adopt a live writer's segments, and can after it exits", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    int up[2], down[2];
    REQUIRE(::pipe(up) == 0);
    REQUIRE(::pipe(down) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(up[0]);
        ::close(down[1]);
        int code = 0;
        try {
            spool sp(o);
            const auto v = payloads(0, 7);
            if (sp.append(std::span<const std::string>(v)).appended != 7) code = 2;
            char c = 'r';
            if (::write(up[1], &c, 1) != 1) code = 3;
            if (::read(down[0], &c, 1) != 1) code = 4;
        } catch (...) {
            code = 5;
        }
        ::_exit(code);  // exits without running destructors: the kernel drops the locks
    }
    ::close(up[1]);
    ::close(down[0]);
    char c = 0;
    REQUIRE(::read(up[0], &c, 1) == 1);
    {
        spool sp(o);
        CHECK(sp.adopt_orphans() == 0);
        CHECK(sp.read(100, 1 << 20).empty());
    }
    REQUIRE(::write(down[1], "x", 1) == 1);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    ::close(up[0]);
    ::close(down[1]);
    spool sp(o);
    CHECK(sp.adopt_orphans() == 1);
    auto got = read_all(sp);
    REQUIRE(got.size() == 7);
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i].payload == payload(i));
}

TEST_CASE("SIGKILL mid-batch loses no reported frame and duplicates none", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    o.fsync = fastret::fsync_policy::batch;
    o.segment_bytes = 2048;
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(fds[0]);
        try {
            spool sp(o);
            std::uint64_t n = 0;
            for (;;) {
                std::vector<std::string> batch;
                for (std::uint64_t k = 0; k < 1 + n % 5; ++k) batch.push_back(payload(n + k, 30 + (n + k) % 50));
                n += sp.append(std::span<const std::string>(batch)).appended;
                if (::write(fds[1], &n, sizeof n) != sizeof n) break;
            }
        } catch (...) {
        }
        ::_exit(1);
    }
    ::close(fds[1]);

    // Collect the child's reports; kill it once it has been appending for a while.
    std::string reports;
    auto drain = [&](int timeout_ms) {
        pollfd p{fds[0], POLLIN, 0};
        if (::poll(&p, 1, timeout_ms) <= 0) return false;
        char buf[4096];
        const ssize_t n = ::read(fds[0], buf, sizeof buf);
        if (n <= 0) return false;
        reports.append(buf, static_cast<std::size_t>(n));
        return true;
    };
    const auto start = std::chrono::steady_clock::now();
    while (reports.size() < 8 && std::chrono::steady_clock::now() - start < std::chrono::seconds(5)) drain(50);
    const auto killed_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(150);
    while (std::chrono::steady_clock::now() < killed_at) drain(10);
    ::kill(pid, SIGKILL);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status));
    while (drain(100)) {
    }
    ::close(fds[0]);
    REQUIRE(reports.size() >= 8);
    std::uint64_t reported = 0;
    std::memcpy(&reported, reports.data() + (reports.size() / 8 - 1) * 8, 8);
    REQUIRE(reported > 0);

    std::size_t replayed = 0;
    {
        spool sp(o);
        auto got = read_all(sp, 64);
        replayed = got.size();
        CHECK(replayed >= reported);  // frames appended after the last report may be there too
        for (std::size_t i = 0; i < got.size(); ++i) {
            if (got[i].payload != payload(i, 30 + i % 50)) {
                FAIL("frame " << i << " is '" << got[i].payload << "'");
            }
        }
        CHECK(sp.stats().corrupt_frames == 0);
        // not acknowledged: the next spool replays it again, with any torn tail already cut
    }
    spool sp(o);
    auto again = read_all(sp, 1000);
    CHECK(again.size() == replayed);
    CHECK(sp.stats().torn_tails_cut == 0);
    CHECK(sp.stats().corrupt_frames == 0);
    REQUIRE_FALSE(again.empty());
    sp.ack(again.back().end);
    CHECK(files_with_ext(d.path, ".seg").empty());
}

TEST_CASE("reject_new refuses frames beyond the cap and counts them", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    o.max_bytes = 8 + 10 * 100 + 8;  // header + ten 100-byte frames + end marker
    o.full_policy = fastret::spool_full_policy::reject_new;
    spool sp(o);
    auto r = append(sp, payloads(0, 15, 92));
    CHECK(r.appended == 10);
    CHECK(r.rejected == 5);
    CHECK(r.dropped_old == 0);
    CHECK(r.sequence == 10);
    CHECK(seg_bytes_on_disk(d.path) <= o.max_bytes);
    CHECK(sp.stats().bytes_on_disk == seg_bytes_on_disk(d.path));
    auto r2 = append(sp, payloads(15, 16, 92));
    CHECK(r2.appended == 0);
    CHECK(r2.rejected == 1);
    CHECK(r2.sequence == 0);
    auto big = append(sp, {std::string(2000, 'x')});  // can never fit
    CHECK(big.rejected == 1);

    auto got = read_all(sp);
    REQUIRE(got.size() == 10);
    CHECK(got.back().payload == payload(9, 92));
    sp.ack(got.back().end);
    // once delivered, the space is reclaimed
    auto r3 = append(sp, payloads(20, 25, 92));
    CHECK(r3.appended == 5);
    CHECK(r3.rejected == 0);
    CHECK(seg_bytes_on_disk(d.path) <= o.max_bytes);
}

TEST_CASE("drop_oldest deletes the oldest segments to make room and counts the frames", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    o.segment_bytes = 8 + 5 * 100 + 8;   // five 100-byte frames per segment
    o.max_bytes = 4 * (8 + 5 * 100 + 8);  // four segments
    o.full_policy = fastret::spool_full_policy::drop_oldest;
    spool sp(o);
    auto first = sp.read(3, 1 << 20);  // nothing yet
    CHECK(first.empty());
    append(sp, payloads(0, 5, 92));
    auto inflight = sp.read(3, 1 << 20);  // the worker holds frames of the oldest segment
    REQUIRE(inflight.size() == 3);

    std::size_t dropped = 0, rejected = 0;
    for (std::size_t i = 5; i < 100; i += 5) {
        auto r = append(sp, payloads(i, i + 5, 92));
        CHECK(r.appended == 5);
        rejected += r.rejected;
        dropped += r.dropped_old;
        CHECK(seg_bytes_on_disk(d.path) <= o.max_bytes);
    }
    CHECK(rejected == 0);
    CHECK(dropped > 0);
    sp.ack(inflight.back().end);  // its segment is gone: ignored
    auto rest = read_all(sp);
    REQUIRE_FALSE(rest.empty());
    // what is left is the newest frames, contiguous up to the last one
    CHECK(rest.back().payload == payload(99, 92));
    const std::size_t first_left = 100 - rest.size();
    for (std::size_t i = 0; i < rest.size(); ++i) CHECK(rest[i].payload == payload(first_left + i, 92));
    CHECK(dropped == first_left);  // every lost frame was counted (none of them were acked)
    CHECK(sp.stats().pending_frames == rest.size());
    sp.ack(rest.back().end);
    CHECK(sp.acked_sequence() == 100);
}

TEST_CASE("drop_oldest also drops adopted backlog, counting its frames", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    o.segment_bytes = 8 + 5 * 100 + 8;
    o.max_bytes = 3 * (8 + 5 * 100 + 8);
    o.full_policy = fastret::spool_full_policy::drop_oldest;
    { spool sp(o); append(sp, payloads(0, 10, 92)); }  // two segments of backlog
    spool sp(o);
    CHECK(sp.adopt_orphans() == 2);
    auto r = append(sp, payloads(10, 20, 92));
    CHECK(r.appended == 10);
    CHECK(r.dropped_old == 5);
    auto got = read_all(sp);
    REQUIRE(got.size() == 15);
    CHECK(got.front().payload == payload(5, 92));
    CHECK(got.back().payload == payload(19, 92));
}

TEST_CASE("malformed files in the spool directory never break the spool", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    { spool sp(o); append(sp, payloads(0, 3)); }
    write_file(d.path / "README.txt", "not a segment");
    write_file(d.path / "notes.seg", "FRSPOOL1 but badly named");
    const std::string bad_name = "00000000000000000001-1-0.seg";
    write_file(d.path / bad_name, "GARBAGE!and more garbage");
    const std::string empty_name = "00000000000000000002-1-0.seg";
    write_file(d.path / empty_name, "");
    const std::string orphan_ack = "00000000000000000003-1-0.ack";
    write_file(d.path / orphan_ack, std::string(12, '\0'));
    const std::string stale_tmp = "00000000000000000004-1-0.seg.tmp";
    write_file(d.path / stale_tmp, "FRSP");
    {
        spool sp(o);
        auto got = read_all(sp);
        REQUIRE(got.size() == 3);
        CHECK(got[0].payload == "frame-0");
        CHECK(sp.stats().corrupt_frames == 1);
        CHECK(fs::exists(d.path / "README.txt"));
        CHECK(fs::exists(d.path / "notes.seg"));
        CHECK_FALSE(fs::exists(d.path / bad_name));
        CHECK(fs::exists(d.path / (bad_name + ".bad")));
        CHECK_FALSE(fs::exists(d.path / empty_name));
        CHECK_FALSE(fs::exists(d.path / orphan_ack));
        CHECK_FALSE(fs::exists(d.path / stale_tmp));
        sp.ack(got.back().end);
    }
    spool sp(o);
    CHECK(sp.read(10, 1 << 20).empty());
    CHECK(sp.stats().corrupt_frames == 0);  // set aside, not retried
}

TEST_CASE("every fsync policy persists frames across spool objects", "[spool]") {
    auto policy = GENERATE(fastret::fsync_policy::never, fastret::fsync_policy::batch,
                           fastret::fsync_policy::interval);
    temp_dir d;
    auto o = opts_for(d.path);
    o.fsync = policy;
    o.fsync_interval_ms = 0;
    {
        spool sp(o);
        append(sp, payloads(0, 6));
        auto got = sp.read(3, 1 << 20);
        sp.ack(got.back().end);
        sp.sync();
    }
    spool sp(o);
    auto got = read_all(sp);
    REQUIRE(got.size() == 3);
    CHECK(got[0].payload == "frame-3");
}

TEST_CASE("concurrent appends and reads deliver every frame once, in order", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    o.segment_bytes = 16 * 1024;
    spool sp(o);
    constexpr std::size_t total = 20000;
    std::thread writer([&] {
        for (std::size_t i = 0; i < total; i += 10) append(sp, payloads(i, i + 10));
    });
    std::size_t next = 0;
    bool ok = true;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (next < total && std::chrono::steady_clock::now() < deadline) {
        auto got = sp.read(256, 1 << 20);
        if (got.empty()) {
            std::this_thread::yield();
            continue;
        }
        for (const auto& e : got)
            if (e.payload != payload(next++)) ok = false;
        sp.ack(got.back().end);
    }
    writer.join();
    CHECK(ok);
    CHECK(next == total);
    CHECK(sp.acked_sequence() == total);
    CHECK_FALSE(sp.has_unread());
    CHECK(files_with_ext(d.path, ".seg").size() <= 9);  // the current one, eight kept for reuse
    CHECK(sp.stats().segments == 1);
}

TEST_CASE("the spool directory is created, and a file in its place is an error", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path / "a" / "b");
    { spool sp(o); CHECK(fs::is_directory(o.dir)); CHECK(sp.options().dir == o.dir); }
    write_file(d.path / "file", "x");
    CHECK_THROWS_AS(spool(opts_for(d.path / "file")), std::system_error);
}

TEST_CASE("more orphans than can be held at once are all replayed, oldest first", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    constexpr std::size_t writers = 140;  // above the number of adopted segments held at once
    for (std::size_t i = 0; i < writers; ++i) {
        spool sp(o);
        append(sp, payloads(i, i + 1));
    }
    REQUIRE(files_with_ext(d.path, ".seg").size() == writers);
    spool sp(o);
    std::size_t next = 0;
    for (;;) {
        auto got = sp.read(50, 1 << 20);
        if (got.empty()) break;
        for (const auto& e : got) CHECK(e.payload == payload(next++));
        sp.ack(got.back().end);
    }
    CHECK(next == writers);
    CHECK(sp.stats().adopted_segments == writers);
    CHECK(files_with_ext(d.path, ".seg").empty());
}

TEST_CASE("an over-long ack file of an adopted segment is rewritten to a valid one", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    {
        spool sp(o);
        append(sp, payloads(0, 6));
    }
    auto segs = files_with_ext(d.path, ".seg");
    REQUIRE(segs.size() == 1);
    auto ack_path = segs[0];
    ack_path.replace_extension(".ack");
    write_file(ack_path, std::string(40, 'z'));  // garbage: nothing acknowledged
    {
        spool sp(o);
        auto got = read_all(sp);
        REQUIRE(got.size() == 6);
        sp.ack(got[3].end);
    }
    CHECK(fs::file_size(ack_path) == 12);
    spool sp(o);
    auto got = read_all(sp);
    REQUIRE(got.size() == 2);
    CHECK(got[0].payload == "frame-4");
}

TEST_CASE("spool directories and files are owner-only", "[spool]") {
    temp_dir d;
    auto old = ::umask(022);
    auto o = opts_for(d.path / "sink");
    {
        spool sp(o);
        append(sp, payloads(0, 3));
        auto got = sp.read(10, 1 << 20);
        REQUIRE(got.size() == 3);
        sp.ack(got[0].end);  // leaves an ack file and unacknowledged frames behind
    }
    ::umask(old);
    auto mode = [](const fs::path& p) { return fs::status(p).permissions() & fs::perms::all; };
    CHECK(mode(d.path / "sink") == fs::perms::owner_all);
    auto segs = files_with_ext(d.path / "sink", ".seg");
    auto acks = files_with_ext(d.path / "sink", ".ack");
    REQUIRE(segs.size() == 1);
    REQUIRE(acks.size() == 1);
    CHECK(mode(segs[0]) == (fs::perms::owner_read | fs::perms::owner_write));
    CHECK(mode(acks[0]) == (fs::perms::owner_read | fs::perms::owner_write));
}

TEST_CASE("a forked child does not keep its parent's segments locked", "[spool]") {
    // The parent writes, forks a child that lives on, then lets go of its spool the way a
    // process that exits does (here without deleting: _exit-like, by a second fork). The
    // backlog must be adoptable while the child still runs.
    temp_dir d;
    auto o = opts_for(d.path);
    int up[2], down[2], started[2];
    REQUIRE(::pipe(up) == 0);
    REQUIRE(::pipe(down) == 0);
    REQUIRE(::pipe(started) == 0);
    const pid_t writer = ::fork();
    REQUIRE(writer >= 0);
    if (writer == 0) {
        // The writer: appends, forks a long-lived child, then dies holding its locks.
        ::close(up[0]);
        ::close(down[1]);
        int code = 0;
        try {
            spool sp(o);
            const auto v = payloads(0, 5);
            if (sp.append(std::span<const std::string>(v)).appended != 5) code = 2;
            const pid_t child = ::fork();
            if (child == 0) {
                // fork() returned here, so the child's fork handlers have run: say so (the
                // writer's fork() returns earlier, before the child is even scheduled).
                if (::write(started[1], "s", 1) != 1) ::_exit(1);
                char c;
                // Lives until the test says so; never touches the inherited spool object.
                static_cast<void>(::read(down[0], &c, 1));
                ::_exit(0);
            }
            if (child < 0) code = 3;
            char s = 0;
            if (child > 0 && ::read(started[0], &s, 1) != 1) code = 6;
        } catch (...) {
            code = 5;
        }
        char c = 'r';
        if (::write(up[1], &c, 1) != 1) code = 4;
        ::_exit(code);  // the writer dies without cleaning up, the grandchild lives on
    }
    ::close(up[1]);
    ::close(down[0]);
    ::close(started[0]);
    ::close(started[1]);
    char c = 0;
    REQUIRE(::read(up[0], &c, 1) == 1);
    int status = 0;
    REQUIRE(::waitpid(writer, &status, 0) == writer);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    {
        spool sp(o);
        CHECK(sp.adopt_orphans() == 1);
        auto got = read_all(sp);
        CHECK(got.size() == 5);
    }
    REQUIRE(::write(down[1], "x", 1) == 1);  // let the grandchild go
    ::close(up[0]);
    ::close(down[1]);
}

TEST_CASE("scan_unacknowledged shows another process the frames not yet delivered, in order",
          "[spool]") {
    temp_dir d;
    std::vector<std::string> seen;
    auto collect = [&](std::string_view p) { seen.emplace_back(p); };

    CHECK(fastret::scan_unacknowledged(d.path / "missing", collect) == 0);
    {
        spool sp(opts_for(d.path));
        append(sp, payloads(0, 5));
        auto got = read_all(sp);
        REQUIRE(got.size() == 5);
        sp.ack(got[1].end);  // frames 0 and 1 delivered
        sp.sync();

        CHECK(fastret::scan_unacknowledged(d.path, collect) == 3);
        CHECK(seen == payloads(2, 5));

        // A frame being appended (or torn) at the end is not reported, nor anything after it.
        auto segs = files_with_ext(d.path, ".seg");
        REQUIRE(segs.size() == 1);
        append_raw(segs[0], frame(payload(99)).substr(0, 10));
        seen.clear();
        CHECK(fastret::scan_unacknowledged(d.path, collect) == 3);
        CHECK(seen == payloads(2, 5));
    }
}

TEST_CASE("reserved disk blocks stay within the segment size: small segments keep the spool near its cap",
          "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    o.segment_bytes = 4096;
    o.max_bytes = 64 * 1024;
    spool sp(o);
    std::size_t rejected = 0;
    for (std::size_t i = 0; i < 200 && rejected == 0; ++i)
        rejected = append(sp, payloads(i * 10, i * 10 + 10, 100)).rejected;
    REQUIRE(rejected > 0);  // the cap was reached
    std::uint64_t blocks = 0;
    for (const auto& f : files_with_ext(d.path, ".seg")) {
        struct stat st {};
        REQUIRE(::stat(f.c_str(), &st) == 0);
        blocks += static_cast<std::uint64_t>(st.st_blocks) * 512;
    }
    // Before, every segment reserved 1 MiB ahead: 16 segments took 16 MiB for a 64 KiB cap.
    CHECK(blocks <= 2 * o.max_bytes + 64 * 1024);
}

TEST_CASE("delivered segment files are reused under new names without showing old frames",
          "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    o.segment_bytes = 512;
    spool sp(o);
    std::size_t next = 0, reused = 0, spares_seen = 0;
    std::map<std::uint64_t, std::string> name_of_inode;  // a file seen under a new name: reused
    for (std::size_t round = 0; round < 21; ++round) {
        append(sp, payloads(round * 10, round * 10 + 10, 40));
        for (const auto& p : files_with_ext(d.path, ".seg")) {
            struct stat st {};
            REQUIRE(::stat(p.c_str(), &st) == 0);
            const auto ino = static_cast<std::uint64_t>(st.st_ino);
            const auto name = p.filename().string();
            auto [it, fresh] = name_of_inode.emplace(ino, name);
            if (!fresh && it->second != name) {
                ++reused;
                it->second = name;
            }
        }
        if (round % 3 != 2) continue;  // the reader lags: delivered segments pile up
        auto got = read_all(sp);
        for (const auto& e : got) CHECK(e.payload == payload(next++, 40));
        if (!got.empty()) sp.ack(got.back().end);
        // Delivered segments kept for reuse say so in their ack files: another process (or
        // the next one, after a kill) finds nothing to deliver in them.
        CHECK(fastret::backlog_of(d.path).frames == 0);
        spares_seen = std::max(spares_seen, files_with_ext(d.path, ".seg").size() - 1);
    }
    CHECK(spares_seen > 0);
    CHECK(next == 210);
    CHECK(reused > 0);
    CHECK(sp.stats().bytes_on_disk == seg_bytes_on_disk(d.path));

    // Frames appended and not acknowledged, then the process is "killed": a copy of the
    // directory as it is (unlocked files) is what the next process finds.
    append(sp, payloads(500, 507, 40));
    temp_dir copy;
    for (const auto& e : fs::directory_iterator(d.path)) fs::copy_file(e.path(), copy.path / e.path().filename());
    spool next_process(opts_for(copy.path));
    auto got = read_all(next_process);
    REQUIRE(got.size() == 7);
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i].payload == payload(500 + i, 40));
    CHECK(next_process.stats().torn_tails_cut == 0);
    CHECK(next_process.stats().corrupt_frames == 0);
    std::vector<std::string> scanned;
    fastret::scan_unacknowledged(copy.path, [&](std::string_view p) { scanned.emplace_back(p); });
    CHECK(scanned.size() == 7);
    const auto backlog = fastret::backlog_of(copy.path);
    CHECK(backlog.frames == 7);
    CHECK(backlog.bytes == 7 * (8 + 40));
}

TEST_CASE("a segment acknowledged after it was sealed is kept for reuse with an ack file that "
          "says so", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    o.segment_bytes = 8 + 10 * 48 + 8;  // ten 40-byte frames per segment
    spool sp(o);
    append(sp, payloads(0, 10, 40));
    auto got = sp.read(100, 1 << 20);  // the worker has all of the first segment
    REQUIRE(got.size() == 10);
    append(sp, payloads(10, 11, 40));  // seals it, starts the second
    sp.ack(got.back().end);            // acknowledged now: it becomes a spare
    CHECK(files_with_ext(d.path, ".seg").size() == 2);
    // Another process (a job-cache read, `fastret spool status`) and the next one after a
    // kill see only the frame not acknowledged.
    CHECK(fastret::backlog_of(d.path).frames == 1);
    temp_dir copy;
    for (const auto& e : fs::directory_iterator(d.path)) fs::copy_file(e.path(), copy.path / e.path().filename());
    spool next_process(opts_for(copy.path));
    auto again = read_all(next_process);
    REQUIRE(again.size() == 1);
    CHECK(again[0].payload == payload(10, 40));
}

TEST_CASE("spare segments are bounded by a sixteenth of the cap and an empty reused segment "
          "gives its bytes back at the cap", "[spool]") {
    temp_dir d;
    auto o = opts_for(d.path);
    o.segment_bytes = 8 + 10 * 48 + 8;
    o.max_bytes = 16 * 1024;  // a sixteenth: two spare segments of 496 bytes
    o.full_policy = fastret::spool_full_policy::reject_new;
    spool sp(o);
    for (std::size_t i = 0; i < 60; i += 10) append(sp, payloads(i, i + 10, 40));  // six segments
    auto got = read_all(sp);
    REQUIRE(got.size() == 60);
    sp.ack(got.back().end);
    append(sp, payloads(60, 61, 40));  // the full current segment is sealed and retired
    CHECK(files_with_ext(d.path, ".seg").size() <= 3);  // the current one and at most two spares
    CHECK(sp.stats().bytes_on_disk == seg_bytes_on_disk(d.path));
    // Filling the cap: spares are deleted first, nothing acknowledged is refused room.
    std::size_t appended = 0;
    for (std::size_t i = 100; i < 1000; ++i) appended += append(sp, payloads(i, i + 1, 40)).appended;
    CHECK(appended > 16 * 1024 / 48 - 30);
    CHECK(seg_bytes_on_disk(d.path) <= o.max_bytes);
}
