// fastret::spool and scan_unacknowledged on a spool directory whose segment and ack files hold
// fuzzed bytes (left by "earlier processes": raw bytes, or well-formed frames then damaged by
// bit flips, truncation, zero-filled or junk tails, wrong lengths), plus stray .tmp/.ack files,
// driven by a fuzzed sequence of append / read / ack / rewind / adopt_orphans calls.
//
// A reference reader written here from the format in spool.hpp (with its own bitwise CRC32C)
// says which frames each file holds: from the acknowledged offset (a 12-byte ack file with a
// valid checksum and an offset inside the segment, else the header's end), every whole frame
// with a valid checksum up to the first that is not, or (FRSPOOL2, checksums seeded with the
// CRC32C of the file name) up to the end marker, after which a reused file holds older frames. The model of the spool is that list
// (segments in name order) followed by the payloads this spool appended.
//
// Properties:
//  - no crash, no hang (libFuzzer -timeout), no leak;
//  - crc32c and frame_crc agree with the bitwise reference;
//  - scan_unacknowledged, before and after, returns exactly the model's unacknowledged frames;
//  - read() returns the model's frames in order, each from the segment and at the offset where
//    the reference found it (so every frame returned is a whole frame with a valid CRC), never
//    more than max_frames, over max_bytes only for a single frame, and stops early only for
//    the byte limit; a frame read twice (after rewind) has the same position;
//  - ack(pos) acknowledges everything up to pos (an older position changes nothing),
//    rewind() goes back to the acknowledged position, acked_sequence() counts the own frames
//    acknowledged, has_unread() is true while the model has unread frames, and the byte count
//    in stats() equals the size of the segment files on disk;
//  - after the spool is closed, the scan and a new spool (another "process") see exactly the
//    frames not acknowledged, and once those are acknowledged and the spool closed, no segment
//    file is left;
//  - with the drop_oldest policy (the spool deletes whole unacknowledged segments when full),
//    the same holds with "a subsequence of the model, in order" for "the model's frames", and
//    the scan and the new spool still agree exactly.
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fastret/spool.hpp"
#include "fuzz_common.hpp"

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[] = "FRSPOOL1";    // 8 bytes on disk, without the NUL
constexpr char kMagicV2[] = "FRSPOOL2";  // checksums seeded by the name, end marker

std::uint32_t ref_crc32c(std::string_view s, std::uint32_t crc = 0) {
    crc = ~crc;
    for (unsigned char c : s) {
        crc ^= c;
        for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

std::string le(std::uint64_t v, int bytes) {
    std::string s;
    for (int i = 0; i < bytes; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
    return s;
}

std::uint64_t get_le(std::string_view s, std::size_t at, int bytes) {
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; ++i)
        v |= static_cast<std::uint64_t>(static_cast<unsigned char>(s[at + i])) << (8 * i);
    return v;
}

std::uint32_t ref_frame_crc(std::string_view payload, std::uint32_t seed = 0) {
    return ref_crc32c(le(payload.size(), 4) + std::string(payload), seed);
}

std::string ref_end_marker(std::uint32_t seed) {
    return le(0xFFFFFFFFu, 4) + le(ref_crc32c(le(0xFFFFFFFFu, 4), seed), 4);
}

struct ref_frame {
    std::string payload;
    std::string segment;  // empty: appended by the spool under test (name not known here)
    std::uint64_t end = 0;
};

// The frames a reader must see in one segment file.
std::vector<ref_frame> reference_frames(const std::string& name, const std::string& bytes,
                                        const std::optional<std::string>& ack) {
    std::vector<ref_frame> out;
    const std::uint64_t size = bytes.size();
    if (size < 8) return out;
    const bool v2 = bytes.compare(0, 8, kMagicV2) == 0;
    if (!v2 && bytes.compare(0, 8, kMagic) != 0) return out;
    const std::uint32_t seed = v2 ? ref_crc32c(name) : 0;
    std::uint64_t off = 8;
    if (ack && ack->size() == 12 && ref_crc32c(ack->substr(0, 8)) == get_le(*ack, 8, 4)) {
        const std::uint64_t a = get_le(*ack, 0, 8);
        if (a >= 8 && a <= size) off = a;
    }
    while (off + 8 <= size) {
        if (v2 && bytes.compare(off, 8, ref_end_marker(seed)) == 0) break;
        const std::uint64_t len = get_le(bytes, off, 4);
        if (off + 8 + len > size) break;
        const std::string payload = bytes.substr(off + 8, len);
        if (ref_frame_crc(payload, seed) != get_le(bytes, off + 4, 4)) break;
        off += 8 + len;
        out.push_back({payload, name, off});
    }
    return out;
}

// A segment as an earlier writer may have left it.
struct seg_file {
    std::string name;
    std::string bytes;
    std::optional<std::string> ack;
};

seg_file make_segment(FuzzedDataProvider& fdp, int seq) {
    seg_file f;
    char name[64];
    std::snprintf(name, sizeof name, "%020d-%d-%d.seg", seq, 100 + seq, seq);
    f.name = name;
    std::vector<std::uint64_t> ends{8};
    // FRSPOOL2: seeded by the name; the file may be a reused one, with older frames (seeded by
    // another name) after the end marker.
    const bool v2 = fdp.ConsumeBool();
    const char* magic = v2 ? kMagicV2 : kMagic;
    const std::uint32_t seed = v2 ? ref_crc32c(f.name) : 0;
    if (fdp.ConsumeIntegralInRange(0, 3) == 0) {
        if (fdp.ConsumeBool()) f.bytes = std::string(magic, 8);
        f.bytes += fdp.ConsumeRandomLengthString(512);
    } else {
        f.bytes = std::string(magic, 8);
        for (int n = fdp.ConsumeIntegralInRange(0, 6); n > 0; --n) {
            const std::string p = fdp.ConsumeRandomLengthString(256);
            f.bytes += le(p.size(), 4) + le(ref_frame_crc(p, seed), 4) + p;
            ends.push_back(f.bytes.size());
        }
        if (v2 && fdp.ConsumeBool()) {
            f.bytes += ref_end_marker(seed);
            const std::uint32_t old_seed = ref_crc32c("00000000000000000000-1-1.seg");
            for (int n = fdp.ConsumeIntegralInRange(0, 3); n > 0; --n) {
                const std::string p = fdp.ConsumeRandomLengthString(64);
                f.bytes += le(p.size(), 4) + le(ref_frame_crc(p, old_seed), 4) + p;
            }
        }
        for (int n = fdp.ConsumeIntegralInRange(0, 2); n > 0; --n) {
            if (f.bytes.empty()) break;
            const auto at = fdp.ConsumeIntegralInRange<std::size_t>(0, f.bytes.size() - 1);
            switch (fdp.ConsumeIntegralInRange(0, 4)) {
                case 0:
                    f.bytes[at] =
                        static_cast<char>(f.bytes[at] ^ (1 << fdp.ConsumeIntegralInRange(0, 7)));
                    break;
                case 1:
                    f.bytes.resize(at);
                    break;  // torn
                case 2:
                    f.bytes.append(fdp.ConsumeIntegralInRange<std::size_t>(1, 24), '\0');
                    break;  // zero-filled tail
                case 3:
                    f.bytes += fdp.ConsumeRandomLengthString(24);
                    break;  // junk tail
                default: {  // a frame length that lies
                    const std::uint64_t frame_at =
                        ends[fdp.ConsumeIntegralInRange<std::size_t>(0, ends.size() - 1)];
                    if (frame_at + 4 <= f.bytes.size())
                        f.bytes.replace(frame_at, 4,
                                        le(fdp.ConsumeIntegral<std::uint32_t>() % 512, 4));
                }
            }
        }
    }
    switch (fdp.ConsumeIntegralInRange(0, 3)) {
        case 0:
            break;  // no ack file
        case 1:
            f.ack = fdp.ConsumeRandomLengthString(16);
            break;
        default: {
            const std::uint64_t at =
                fdp.ConsumeBool()
                    ? ends[fdp.ConsumeIntegralInRange<std::size_t>(0, ends.size() - 1)]
                    : fdp.ConsumeIntegralInRange<std::uint64_t>(0, f.bytes.size() + 16);
            f.ack = le(at, 8) + le(ref_crc32c(le(at, 8)), 4);
        }
    }
    return f;
}

void write_file(const fs::path& p, const std::string& bytes) {
    std::ofstream o(p, std::ios::binary | std::ios::trunc);
    o.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!o) fuzz::fail(__FILE__, __LINE__, "write test file", p.string());
}

// Bytes of the segment files in `dir` (what the spool's byte count must equal), and their number.
std::uint64_t segment_bytes_on_disk(const fs::path& dir, std::size_t* count = nullptr) {
    std::uint64_t total = 0;
    std::size_t n = 0;
    for (const auto& e : fs::directory_iterator(dir)) {
        const std::string name = e.path().filename().string();
        if (name.size() > 4 && name.compare(name.size() - 4, 4, ".seg") == 0 &&
            e.is_regular_file()) {
            total += e.file_size();
            ++n;
        }
    }
    if (count) *count = n;
    return total;
}

std::vector<std::string> scan(const fs::path& dir) {
    std::vector<std::string> out;
    const std::size_t n =
        fastret::scan_unacknowledged(dir, [&](std::string_view p) { out.emplace_back(p); });
    FUZZ_CHECK(n == out.size(), "scan_unacknowledged counted " + std::to_string(n) + " of " +
                                    std::to_string(out.size()));
    return out;
}

void expect_frames(const std::vector<std::string>& got, const std::vector<ref_frame>& model,
                   std::size_t from, const char* what) {
    std::string detail = std::string(what) + ": got " + std::to_string(got.size()) +
                         " frames, expected " + std::to_string(model.size() - from);
    FUZZ_CHECK(got.size() == model.size() - from, detail);
    for (std::size_t i = 0; i < got.size(); ++i)
        FUZZ_CHECK(got[i] == model[from + i].payload,
                   detail + "; frame " + std::to_string(i) + " is " + fuzz::show(got[i]) +
                       ", expected " + fuzz::show(model[from + i].payload));
}

struct temp_root {
    fs::path path;
    temp_root() {
        // $TMPDIR if set, else memory (many small files are created and deleted per input).
        const char* tmpdir = std::getenv("TMPDIR");
        std::string base = tmpdir && *tmpdir               ? std::string(tmpdir)
                           : access("/dev/shm", W_OK) == 0 ? std::string("/dev/shm")
                                                           : std::string("/tmp");
        std::string tmpl = base + "/fastret-fuzz-spool.XXXXXX";
        if (!mkdtemp(tmpl.data())) fuzz::fail(__FILE__, __LINE__, "mkdtemp", tmpl);
        path = tmpl;
    }
    ~temp_root() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static temp_root root;
    FuzzedDataProvider fdp(data, size);
    const fs::path dir = root.path / "spool";
    fs::remove_all(dir);
    fs::create_directories(dir);

    // Files left by earlier writers, and the frames the reference sees in them.
    std::vector<ref_frame> model;
    const int nseg = fdp.ConsumeIntegralInRange(0, 3);
    for (int i = 0; i < nseg; ++i) {
        const seg_file f = make_segment(fdp, i + 1);
        write_file(dir / f.name, f.bytes);
        if (f.ack) write_file(dir / (f.name.substr(0, f.name.size() - 4) + ".ack"), *f.ack);
        for (auto& fr : reference_frames(f.name, f.bytes, f.ack)) {
            FUZZ_CHECK(fastret::frame_crc(fr.payload) == ref_frame_crc(fr.payload),
                       "frame_crc of " + fuzz::show(fr.payload));
            FUZZ_CHECK(fastret::frame_crc(fr.payload, fastret::segment_seed(f.name)) ==
                           ref_frame_crc(fr.payload, ref_crc32c(f.name)),
                       "seeded frame_crc of " + fuzz::show(fr.payload));
            model.push_back(std::move(fr));
        }
    }
    const std::size_t adopted_frames = model.size();
    fuzz::trace(std::to_string(nseg) + " segment files holding " + std::to_string(adopted_frames) +
                " frames");
    if (fdp.ConsumeBool())
        write_file(dir / "00000000000000000009-9-9.seg.tmp", std::string(kMagic, 8));
    if (fdp.ConsumeBool())
        write_file(dir / "00000000000000000008-8-8.ack", fdp.ConsumeRandomLengthString(12));
    if (fdp.ConsumeBool()) write_file(dir / "README", "not a segment");
    {
        const std::string a = fdp.ConsumeRandomLengthString(32),
                          b = fdp.ConsumeRandomLengthString(32);
        FUZZ_CHECK(fastret::crc32c(a + b) == ref_crc32c(a + b), "crc32c of " + fuzz::show(a + b));
        FUZZ_CHECK(fastret::crc32c(b, fastret::crc32c(a)) == fastret::crc32c(a + b),
                   "crc32c does not chain");
    }
    expect_frames(scan(dir), model, 0, "scan before the spool opened");

    fastret::spool_options opts;
    opts.dir = dir;
    opts.segment_bytes = fdp.ConsumeIntegralInRange<std::uint64_t>(16, 2048);
    opts.max_bytes =
        fdp.ConsumeBool() ? (1ull << 30) : fdp.ConsumeIntegralInRange<std::uint64_t>(64, 8192);
    // drop_oldest deletes whole unacknowledged segments to make room: the frames read are then a
    // subsequence of the model, not a prefix, and the checks below say so where they differ.
    const bool may_drop = fdp.ConsumeBool();
    opts.full_policy =
        may_drop ? fastret::spool_full_policy::drop_oldest : fastret::spool_full_policy::reject_new;
    opts.fsync = static_cast<fastret::fsync_policy>(fdp.ConsumeIntegralInRange(0, 2));
    opts.fsync_interval_ms = 1;
    fuzz::trace("segment_bytes " + std::to_string(opts.segment_bytes) + ", max_bytes " +
                std::to_string(opts.max_bytes) + (may_drop ? ", drop_oldest" : ", reject_new") +
                ", fsync " + std::to_string(static_cast<int>(opts.fsync)));

    std::size_t cursor = 0, acked = 0, own = 0;
    std::uint64_t serial = 0;
    bool adopted = false, usage_known = false;
    // Where each model frame was read (once it was), and the frames read, in the order first read.
    std::vector<std::optional<fastret::spool_position>> pos_of;
    std::vector<std::size_t> seen;
    // A frame read; `end` is unknown for all but the last of a read() that hands out payloads.
    struct frame_read {
        std::string payload;
        std::optional<fastret::spool_position> end;
    };
    auto matches = [&](std::size_t idx, const frame_read& r) {
        const ref_frame& want = model[idx];
        return r.payload == want.payload &&
               (want.segment.empty() || !r.end ||
                (r.end->segment == want.segment && r.end->offset == want.end));
    };
    auto where = [](const frame_read& r) {
        return r.end ? r.end->segment + ":" + std::to_string(r.end->offset) : std::string("?");
    };
    {
        fastret::spool sp(opts);
        for (int step = 0; step < 32 && fdp.remaining_bytes() > 0; ++step) {
            const int op = fdp.ConsumeIntegralInRange(0, 5);
            fuzz::trace("op " + std::to_string(op) +
                        " (0 append, 1 read, 2 ack, 3 rewind, 4 adopt, 5 has_unread); read " +
                        std::to_string(cursor) + ", acked " + std::to_string(acked) + " of " +
                        std::to_string(model.size()));
            switch (op) {
                case 0: {  // append
                    std::vector<std::string> payloads;
                    for (int n = fdp.ConsumeIntegralInRange(0, 4); n > 0; --n)
                        payloads.push_back(fdp.ConsumeRandomLengthString(256));
                    // With drops, frames are matched to the model by content: make own ones unique.
                    if (may_drop)
                        for (auto& p : payloads) p.insert(0, le(++serial, 8));
                    fastret::spool_append_result r;
                    if (fdp.ConsumeBool()) {
                        r = sp.append(std::span<const std::string>(payloads));
                    } else {
                        const std::vector<std::string_view> v(payloads.begin(), payloads.end());
                        r = sp.append(std::span<const std::string_view>(v));
                    }
                    usage_known = true;
                    fuzz::trace("appended " + std::to_string(r.appended) + ", rejected " +
                                std::to_string(r.rejected) + ", dropped " +
                                std::to_string(r.dropped_old));
                    FUZZ_CHECK(r.appended + r.rejected == payloads.size() &&
                                   (may_drop || r.dropped_old == 0),
                               "append of " + std::to_string(payloads.size()) + ": appended " +
                                   std::to_string(r.appended) + ", rejected " +
                                   std::to_string(r.rejected));
                    for (std::size_t i = 0; i < r.appended; ++i)
                        model.push_back({payloads[i], "", 0});
                    own += r.appended;
                    if (r.appended > 0)
                        FUZZ_CHECK(r.sequence == own, "sequence " + std::to_string(r.sequence) +
                                                          ", expected " + std::to_string(own));
                    break;
                }
                case 1: {  // read
                    const auto max_frames = fdp.ConsumeIntegralInRange<std::size_t>(0, 8);
                    const auto max_bytes = fdp.ConsumeIntegralInRange<std::size_t>(0, 1024);
                    // Both overloads: entries with their positions, or payloads handed to a
                    // callback with the position after the last one.
                    std::vector<frame_read> got;
                    if (fdp.ConsumeBool()) {
                        for (auto& e : sp.read(max_frames, max_bytes))
                            got.push_back({std::move(e.payload), e.end});
                    } else {
                        const fastret::spool_position unset{"unset", 7};
                        fastret::spool_position end = unset;
                        const std::size_t n = sp.read(
                            max_frames, max_bytes,
                            [&](std::string_view p) {
                                got.push_back({std::string(p), std::nullopt});
                            },
                            end);
                        FUZZ_CHECK(n == got.size(), "read() says " + std::to_string(n) +
                                                        " frames, handed out " +
                                                        std::to_string(got.size()));
                        if (n > 0)
                            got.back().end = end;
                        else
                            FUZZ_CHECK(end.segment == unset.segment && end.offset == unset.offset,
                                       "read() of nothing moved `end`");
                    }
                    for (const auto& r : got)
                        fuzz::trace("read " + std::to_string(r.payload.size()) +
                                    " bytes ending at " + where(r));
                    adopted = usage_known = true;
                    std::size_t bytes = 0;
                    FUZZ_CHECK(got.size() <= max_frames, "read(" + std::to_string(max_frames) +
                                                             ") gave " +
                                                             std::to_string(got.size()));
                    for (std::size_t i = 0; i < got.size(); ++i) {
                        // The next model frame; with drop_oldest, the next one still there.
                        std::size_t idx = cursor;
                        if (may_drop)
                            while (idx < model.size() && !matches(idx, got[i])) ++idx;
                        FUZZ_CHECK(
                            idx < model.size() && matches(idx, got[i]),
                            "frame " + std::to_string(cursor) + " read as " +
                                fuzz::show(got[i].payload) + " at " + where(got[i]) +
                                ", expected " +
                                (cursor < model.size() ? fuzz::show(model[cursor].payload) +
                                                             " at " + model[cursor].segment + ":" +
                                                             std::to_string(model[cursor].end)
                                                       : std::string("no more frames")));
                        if (pos_of.size() <= idx) pos_of.resize(idx + 1);
                        if (got[i].end && pos_of[idx])
                            FUZZ_CHECK(pos_of[idx]->segment == got[i].end->segment &&
                                           pos_of[idx]->offset == got[i].end->offset,
                                       "frame " + std::to_string(idx) + " moved between reads");
                        else if (got[i].end) {
                            pos_of[idx] = got[i].end;
                            seen.push_back(idx);
                        }
                        bytes += got[i].payload.size();
                        cursor = idx + 1;
                    }
                    if (got.size() > 1)
                        FUZZ_CHECK(bytes <= max_bytes, std::to_string(bytes) +
                                                           " bytes over max_bytes " +
                                                           std::to_string(max_bytes));
                    if (!may_drop && max_frames > 0 && got.size() < max_frames &&
                        cursor < model.size())
                        FUZZ_CHECK(!got.empty() && bytes + model[cursor].payload.size() > max_bytes,
                                   "read stopped after " + std::to_string(got.size()) +
                                       " frames with " + std::to_string(model.size() - cursor) +
                                       " pending");
                    break;
                }
                case 2: {  // ack
                    if (seen.empty()) break;
                    const std::size_t i =
                        seen[fdp.ConsumeIntegralInRange<std::size_t>(0, seen.size() - 1)];
                    sp.ack(*pos_of[i]);
                    fuzz::trace("ack frame " + std::to_string(i) + " at " + pos_of[i]->segment +
                                ":" + std::to_string(pos_of[i]->offset));
                    if (i >= acked) {
                        acked = i + 1;
                        cursor = std::max(cursor, acked);
                    }
                    const std::uint64_t own_acked =
                        acked > adopted_frames ? acked - adopted_frames : 0;
                    if (!may_drop)
                        FUZZ_CHECK(sp.acked_sequence() == own_acked,
                                   "acked_sequence " + std::to_string(sp.acked_sequence()) +
                                       ", expected " + std::to_string(own_acked));
                    FUZZ_CHECK(sp.acked_sequence() <= own,
                               "acked_sequence " + std::to_string(sp.acked_sequence()) + " of " +
                                   std::to_string(own) + " appended");
                    break;
                }
                case 3:
                    sp.rewind();
                    cursor = acked;
                    break;
                case 4:
                    sp.adopt_orphans();
                    adopted = usage_known = true;
                    break;
                default:
                    if (!may_drop && adopted && cursor < model.size())
                        FUZZ_CHECK(sp.has_unread(), "has_unread() is false with frames pending");
                    break;
            }
            if (usage_known && op != 3 && op != 5)  // rewind and has_unread touch no file
                FUZZ_CHECK(sp.stats().bytes_on_disk == segment_bytes_on_disk(dir),
                           "stats says " + std::to_string(sp.stats().bytes_on_disk) +
                               " bytes, the files hold " +
                               std::to_string(segment_bytes_on_disk(dir)));
        }
    }

    // Another process: the scan and a new spool see exactly what was not acknowledged (with
    // drop_oldest: the same frames, in the model's order, some maybe dropped).
    const std::vector<std::string> scanned = scan(dir);
    if (!may_drop) expect_frames(scanned, model, acked, "scan after close");
    {
        std::size_t next = acked;
        for (const auto& p : scanned) {
            while (next < model.size() && model[next].payload != p) ++next;
            FUZZ_CHECK(next < model.size(), "scan after close found " + fuzz::show(p) +
                                                ", not an unacknowledged frame in order");
            ++next;
        }
    }
    {
        fastret::spool sp(opts);
        std::vector<std::string> got;
        fastret::spool_position last;
        for (int i = 0; i < 1000; ++i) {
            const auto batch = sp.read(64, 1 << 20);
            if (batch.empty()) break;
            for (const auto& e : batch) got.push_back(e.payload);
            last = batch.back().end;
        }
        FUZZ_CHECK(got == scanned, "a new spool read " + std::to_string(got.size()) +
                                       " frames, the scan found " + std::to_string(scanned.size()));
        if (!got.empty()) sp.ack(last);
        FUZZ_CHECK(!sp.has_unread() || sp.read(1, 1).empty(),
                   "frames left after reading everything");
    }
    std::size_t left = 0;
    segment_bytes_on_disk(dir, &left);
    FUZZ_CHECK(left == 0,
               std::to_string(left) + " segment files left after everything was acknowledged");
    FUZZ_CHECK(scan(dir).empty(), "scan finds frames after everything was acknowledged");
    return 0;
}
