#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "encoders/json_lines.hpp"
#include "sinks/file_sink.hpp"

using namespace fastret;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
    std::string path;
    temp_dir() {
        std::string tmpl = (fs::temp_directory_path() / "fastret_file_sink_XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~temp_dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    std::string operator/(const std::string& name) const { return path + "/" + name; }
};

std::unique_ptr<sink> make(const std::string& path, config_map extra = {}) {
    extra["path"] = path;
    options opts("sink 't' (file)", file_sink_options(), extra);
    return make_file_sink("t", opts);
}

record rec(int i) {
    record r;
    r.kind = record_kind::job_return;
    r.ts_us = 1795767352000000 + i;
    r.jid = "2026112708155200000" + std::to_string(i % 10);
    r.minion = "minion" + std::to_string(i);
    r.fun = "test.ping";
    r.success = 1;
    r.retcode = 0;
    r.payload = "{\"n\":" + std::to_string(i) + "}";
    return r;
}

std::string line_of(const record& r) {
    std::string out;
    encode_json_lines(std::span<const record>(&r, 1), out);
    out.pop_back();  // '\n'
    return out;
}

std::vector<std::string> read_lines(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::vector<std::string> lines;
    std::string line;
    while (std::getline(in, line)) lines.push_back(line);
    return lines;
}

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

write_result put(sink& s, std::vector<record> batch) { return s.write(batch); }

unsigned perm_bits(const std::string& path) {
    struct stat st;
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

struct umask_guard {
    mode_t old;
    explicit umask_guard(mode_t m) : old(::umask(m)) {}
    ~umask_guard() { ::umask(old); }
};

// `procs` forked processes each write `batches` batches of `per_batch` records (process p's
// records are numbered from 100000 * (p + 1)) through their own sink on `path`; every process
// must exit 0, having had every batch accepted (a retry is written again, as the runtime would).
void write_from_processes(const std::string& path, const config_map& opts, int procs, int batches,
                          int per_batch) {
    std::vector<pid_t> pids;
    for (int p = 0; p < procs; ++p) {
        pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            int rc = 0;
            {
                auto s = make(path, opts);
                for (int b = 0; b < batches; ++b) {
                    std::vector<record> batch;
                    for (int i = 0; i < per_batch; ++i)
                        batch.push_back(rec(100000 * (p + 1) + b * per_batch + i));
                    // retry is what the runtime would do with a batch sent back
                    auto st = s->write(batch).status;
                    for (int again = 0; st == write_status::retry && again < 5; ++again)
                        st = s->write(batch).status;
                    if (st != write_status::ok) rc = 1;
                }
                s->close();
            }
            ::_exit(rc);
        }
        pids.push_back(pid);
    }
    for (pid_t pid : pids) {
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
    }
}

}  // namespace

TEST_CASE("file sink: option table and defaults", "[file_sink]") {
    const auto& t = file_sink_options();
    std::vector<std::string> keys;
    for (const auto& o : t) keys.push_back(o.key);
    CHECK(keys == std::vector<std::string>{"path", "max_bytes", "backups", "fsync", "mode",
                                           "chain_key", "checkpoint_path", "checkpoint_every"});

    options opts("sink 't' (file)", t, config_map{{"path", std::string("/tmp/x.jsonl")}});
    CHECK(opts.get_int("max_bytes") == 104857600);
    CHECK(opts.get_int("backups") == 5);
    CHECK(opts.get_bool("fsync") == true);
    CHECK(opts.get_int("mode") == 0600);

    CHECK_THROWS_AS(options("s", t, config_map{}), config_error);  // path is required
    auto bad = [&](const char* key, std::int64_t v) {
        config_map raw{{"path", std::string("/tmp/x.jsonl")}, {key, v}};
        return options("s", t, raw);
    };
    CHECK_THROWS_AS(bad("backups", 1001), config_error);
    CHECK_THROWS_AS(bad("backups", -1), config_error);
    CHECK_THROWS_AS(bad("mode", 0777 + 1), config_error);
    CHECK_THROWS_AS(bad("max_bytes", -1), config_error);
    CHECK_NOTHROW(bad("max_bytes", 0));

    // The sink itself rejects paths that cannot name a file; construction does no I/O.
    CHECK_THROWS_AS(make(""), config_error);
    CHECK_THROWS_AS(make("/tmp/some/dir/"), config_error);
    CHECK_NOTHROW(make("/nonexistent/dir/is/created/lazily.jsonl"));
}

TEST_CASE("file sink: batches are appended as whole lines", "[file_sink]") {
    temp_dir dir;
    const std::string path = dir / "a/b/out.jsonl";  // parent directories are created
    auto s = make(path);
    CHECK(s->type() == "file");
    CHECK_FALSE(fs::exists(path));  // opened lazily

    auto r = put(*s, {rec(1), rec(2), rec(3)});
    REQUIRE(r.status == write_status::ok);
    CHECK(r.error.empty());
    r = put(*s, {rec(4), rec(5)});
    REQUIRE(r.status == write_status::ok);

    auto lines = read_lines(path);
    REQUIRE(lines.size() == 5);
    for (int i = 1; i <= 5; ++i) CHECK(lines[i - 1] == line_of(rec(i)));
    CHECK(read_all(path).back() == '\n');

    // A larger batch still arrives complete and in order.
    std::vector<record> big;
    for (int i = 0; i < 3000; ++i) big.push_back(rec(100 + i));
    REQUIRE(s->write(big).status == write_status::ok);
    lines = read_lines(path);
    REQUIRE(lines.size() == 3005);
    CHECK(lines[5] == line_of(rec(100)));
    CHECK(lines.back() == line_of(rec(3099)));
    s->close();

    // A new sink on the same path appends rather than truncates.
    auto s2 = make(path, {{"fsync", false}});
    REQUIRE(put(*s2, {rec(6)}).status == write_status::ok);
    lines = read_lines(path);
    REQUIRE(lines.size() == 3006);
    CHECK(lines.back() == line_of(rec(6)));
}

TEST_CASE("file sink: a line cut by a killed writer is ended before the next one", "[file_sink]") {
    temp_dir dir;
    const std::string path = dir / "out.jsonl";
    {
        auto s = make(path);
        REQUIRE(put(*s, {rec(1), rec(2)}).status == write_status::ok);
        s->close();
    }
    const std::string cut = line_of(rec(3)).substr(0, 20);  // no '\n': the write was cut
    {
        std::ofstream f(path, std::ios::binary | std::ios::app);
        f << cut;
    }
    auto s = make(path);  // the next process
    REQUIRE(put(*s, {rec(4), rec(5)}).status == write_status::ok);
    auto lines = read_lines(path);
    REQUIRE(lines.size() == 5);
    CHECK(lines[0] == line_of(rec(1)));
    CHECK(lines[1] == line_of(rec(2)));
    CHECK(lines[2] == cut);  // left as it is, on its own line
    CHECK(lines[3] == line_of(rec(4)));
    CHECK(lines[4] == line_of(rec(5)));
    // A file that ends with a whole line gets no extra one.
    auto s2 = make(path);
    REQUIRE(put(*s2, {rec(6)}).status == write_status::ok);
    lines = read_lines(path);
    REQUIRE(lines.size() == 6);
    CHECK(lines[5] == line_of(rec(6)));
}

TEST_CASE("file sink: a line cut by another writer while this one is open is ended too",
          "[file_sink]") {
    temp_dir dir;
    const std::string path = dir / "out.jsonl";
    auto s = make(path);  // open before the other writer is killed
    REQUIRE(put(*s, {rec(1)}).status == write_status::ok);
    const std::string cut = line_of(rec(2)).substr(0, 20);
    {
        std::ofstream f(path, std::ios::binary | std::ios::app);
        f << cut;
    }
    REQUIRE(put(*s, {rec(3)}).status == write_status::ok);
    REQUIRE(put(*s, {rec(4)}).status == write_status::ok);
    auto lines = read_lines(path);
    REQUIRE(lines.size() == 4);
    CHECK(lines[0] == line_of(rec(1)));
    CHECK(lines[1] == cut);
    CHECK(lines[2] == line_of(rec(3)));
    CHECK(lines[3] == line_of(rec(4)));
}

TEST_CASE("file sink: a batch waiting for the lock while another process rotates goes to the "
          "new file",
          "[file_sink]") {
    temp_dir dir;
    const std::string path = dir / "rot.jsonl";
    auto s = make(path, {{"backups", std::int64_t{0}}, {"max_bytes", std::int64_t{1} << 20}});
    REQUIRE(put(*s, {rec(1)}).status == write_status::ok);
    // The other process's rotation holds flock on the current file (another open file
    // description conflicts even within this process), then, with backups = 0, unlinks it.
    const int other = ::open(path.c_str(), O_WRONLY | O_APPEND);
    REQUIRE(other >= 0);
    REQUIRE(::flock(other, LOCK_EX) == 0);
    write_result r;
    std::thread t([&] { r = put(*s, {rec(2)}); });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    REQUIRE(::unlink(path.c_str()) == 0);
    ::close(other);
    t.join();
    CHECK(r.status == write_status::ok);
    REQUIRE(put(*s, {rec(3)}).status == write_status::ok);
    auto lines = read_lines(path);
    REQUIRE(lines.size() == 2);
    CHECK(lines[0] == line_of(rec(2)));
    CHECK(lines[1] == line_of(rec(3)));
}

TEST_CASE("file sink: a lock held too long does not stall unchained appends", "[file_sink]") {
    temp_dir dir;
    const std::string path = dir / "held.jsonl";
    auto s = make(path);
    REQUIRE(put(*s, {rec(1)}).status == write_status::ok);
    const int other = ::open(path.c_str(), O_WRONLY | O_APPEND);  // a stopped process's lock
    REQUIRE(other >= 0);
    REQUIRE(::flock(other, LOCK_EX) == 0);
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE(put(*s, {rec(2)}).status == write_status::ok);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(3));
    ::close(other);
    auto lines = read_lines(path);
    REQUIRE(lines.size() == 2);
    CHECK(lines[1] == line_of(rec(2)));
}

TEST_CASE("file sink: rotation keeps the configured number of backups newest first", "[file_sink]") {
    temp_dir dir;
    const std::string path = dir / "rot.jsonl";
    const auto line_len = static_cast<std::int64_t>(line_of(rec(1)).size() + 1);
    // Room for one line but not two: every batch after the first rotates.
    const std::int64_t max_bytes = line_len + line_len / 2;

    SECTION("backups = 2") {
        auto s = make(path, {{"max_bytes", max_bytes}, {"backups", std::int64_t{2}},
                             {"fsync", false}});
        for (int i = 1; i <= 5; ++i) REQUIRE(put(*s, {rec(i)}).status == write_status::ok);
        CHECK(read_lines(path) == std::vector<std::string>{line_of(rec(5))});
        CHECK(read_lines(path + ".1") == std::vector<std::string>{line_of(rec(4))});
        CHECK(read_lines(path + ".2") == std::vector<std::string>{line_of(rec(3))});
        CHECK_FALSE(fs::exists(path + ".3"));
    }
    SECTION("backups = 0 truncates") {
        auto s = make(path, {{"max_bytes", max_bytes}, {"backups", std::int64_t{0}},
                             {"fsync", false}});
        for (int i = 1; i <= 3; ++i) REQUIRE(put(*s, {rec(i)}).status == write_status::ok);
        CHECK(read_lines(path) == std::vector<std::string>{line_of(rec(3))});
        CHECK_FALSE(fs::exists(path + ".1"));
    }
    SECTION("lines accumulate until the limit") {
        auto s = make(path, {{"max_bytes", 2 * line_len}, {"backups", std::int64_t{3}}});
        for (int i = 1; i <= 5; ++i) REQUIRE(put(*s, {rec(i)}).status == write_status::ok);
        CHECK(read_lines(path) == std::vector<std::string>{line_of(rec(5))});
        CHECK(read_lines(path + ".1") ==
              std::vector<std::string>{line_of(rec(3)), line_of(rec(4))});
        CHECK(read_lines(path + ".2") ==
              std::vector<std::string>{line_of(rec(1)), line_of(rec(2))});
        CHECK_FALSE(fs::exists(path + ".3"));
    }
    SECTION("a batch larger than max_bytes goes whole into a fresh file") {
        auto s = make(path, {{"max_bytes", std::int64_t{10}}, {"fsync", false}});
        REQUIRE(put(*s, {rec(1), rec(2)}).status == write_status::ok);
        REQUIRE(put(*s, {rec(3), rec(4)}).status == write_status::ok);
        CHECK(read_lines(path) == std::vector<std::string>{line_of(rec(3)), line_of(rec(4))});
        CHECK(read_lines(path + ".1") ==
              std::vector<std::string>{line_of(rec(1)), line_of(rec(2))});
    }
    SECTION("max_bytes = 0 never rotates") {
        auto s = make(path, {{"max_bytes", std::int64_t{0}}, {"fsync", false}});
        for (int i = 1; i <= 4; ++i) REQUIRE(put(*s, {rec(i)}).status == write_status::ok);
        CHECK(read_lines(path).size() == 4);
        CHECK_FALSE(fs::exists(path + ".1"));
    }
}

TEST_CASE("file sink: notices a file rotated or replaced by another writer", "[file_sink]") {
    temp_dir dir;
    const std::string path = dir / "shared.jsonl";
    auto s = make(path, {{"fsync", false}});
    REQUIRE(put(*s, {rec(1)}).status == write_status::ok);

    // Another process rotates the file away: the next batch goes to a new file at `path`.
    fs::rename(path, path + ".other");
    REQUIRE(put(*s, {rec(2)}).status == write_status::ok);
    CHECK(read_lines(path + ".other") == std::vector<std::string>{line_of(rec(1))});
    CHECK(read_lines(path) == std::vector<std::string>{line_of(rec(2))});

    // Another process replaces the file with its own: the sink appends to that one.
    fs::remove(path);
    { std::ofstream(path, std::ios::binary) << "{\"other\":1}\n"; }
    REQUIRE(put(*s, {rec(3)}).status == write_status::ok);
    CHECK(read_lines(path) == std::vector<std::string>{"{\"other\":1}", line_of(rec(3))});
}

TEST_CASE("file sink: two writers on one path rotate once per need and lose nothing",
          "[file_sink]") {
    temp_dir dir;
    const std::string path = dir / "two.jsonl";
    const auto line_len = static_cast<std::int64_t>(line_of(rec(1)).size() + 1);
    config_map opts{{"max_bytes", line_len + line_len / 2}, {"backups", std::int64_t{3}},
                    {"fsync", false}};
    auto a = make(path, opts);
    auto b = make(path, opts);  // stands in for a second process (its own descriptor)
    REQUIRE(put(*a, {rec(1)}).status == write_status::ok);
    REQUIRE(put(*b, {rec(2)}).status == write_status::ok);  // b rotates a's file
    REQUIRE(put(*a, {rec(3)}).status == write_status::ok);  // a must notice, reopen, rotate
    REQUIRE(put(*b, {rec(4)}).status == write_status::ok);
    CHECK(read_lines(path) == std::vector<std::string>{line_of(rec(4))});
    CHECK(read_lines(path + ".1") == std::vector<std::string>{line_of(rec(3))});
    CHECK(read_lines(path + ".2") == std::vector<std::string>{line_of(rec(2))});
    CHECK(read_lines(path + ".3") == std::vector<std::string>{line_of(rec(1))});
}

TEST_CASE("file sink: concurrent processes rotating one file keep every line whole",
          "[file_sink]") {
    temp_dir dir;
    const std::string path = dir / "procs.jsonl";
    const auto line_len = static_cast<std::int64_t>(line_of(rec(1)).size() + 1);
    constexpr int procs = 4, batches = 40, per_batch = 2;
    // About 5 lines per file, enough backups that nothing is dropped.
    config_map opts{{"max_bytes", 5 * line_len}, {"backups", std::int64_t{200}},
                    {"fsync", false}};
    write_from_processes(path, opts, procs, batches, per_batch);

    std::set<std::string> expected;
    for (int p = 0; p < procs; ++p)
        for (int n = 0; n < batches * per_batch; ++n)
            expected.insert(line_of(rec(100000 * (p + 1) + n)));
    std::multiset<std::string> seen;
    std::size_t files = 0;
    for (int i = 0; i <= 200; ++i) {
        const std::string f = i == 0 ? path : path + "." + std::to_string(i);
        if (!fs::exists(f)) continue;
        ++files;
        for (auto& l : read_lines(f)) seen.insert(l);
    }
    CHECK(files > 10);  // it did rotate, many times
    CHECK(seen.size() == expected.size());  // nothing lost, nothing doubled
    CHECK(std::set<std::string>(seen.begin(), seen.end()) == expected);  // every line whole
}

TEST_CASE("file sink: permission bits on creation", "[file_sink]") {
    temp_dir dir;
    SECTION("default 0600, directories 0700") {
        umask_guard g(022);
        const std::string path = dir / "sub/p.jsonl";
        auto s = make(path);
        REQUIRE(put(*s, {rec(1)}).status == write_status::ok);
        CHECK(perm_bits(path) == 0600);
        CHECK(perm_bits(dir / "sub") == 0700);
    }
    SECTION("configured mode is exact, whatever the umask") {
        umask_guard g(077);
        const std::string path = dir / "p.jsonl";
        auto s = make(path, {{"mode", std::int64_t{0644}}, {"fsync", false}});
        REQUIRE(put(*s, {rec(1)}).status == write_status::ok);
        CHECK(perm_bits(path) == 0644);
    }
    SECTION("an existing file keeps its bits; rotated-in files get the mode") {
        const std::string path = dir / "p.jsonl";
        { std::ofstream(path) << "{}\n"; }
        REQUIRE(::chmod(path.c_str(), 0640) == 0);
        auto s = make(path, {{"max_bytes", std::int64_t{4}}, {"fsync", false}});
        REQUIRE(put(*s, {rec(1)}).status == write_status::ok);  // rotates "{}\n" away
        CHECK(perm_bits(path + ".1") == 0640);
        CHECK(perm_bits(path) == 0600);
    }
}

TEST_CASE("file sink: I/O errors are results and not crashes", "[file_sink]") {
    temp_dir dir;
    const std::string blocker = dir / "blocker";
    { std::ofstream(blocker) << "a regular file\n"; }

    SECTION("directory cannot be created (a path component is a file): fatal") {
        auto s = make(blocker + "/sub/out.jsonl");
        auto r = put(*s, {rec(1)});
        CHECK(r.status == write_status::fatal);
        CHECK_THAT(r.error, Catch::Contains("blocker") && Catch::Contains("Not a directory"));
        CHECK(put(*s, {rec(2)}).status != write_status::ok);  // still failing, still alive
        s->close();
    }
    SECTION("parent is a file: fatal") {
        auto s = make(blocker + "/out.jsonl");
        auto r = put(*s, {rec(1)});
        CHECK(r.status == write_status::fatal);
        CHECK_FALSE(r.error.empty());
    }
    SECTION("path is a directory: fatal") {
        auto s = make(dir.path);
        auto r = put(*s, {rec(1)});
        CHECK(r.status == write_status::fatal);
        CHECK_THAT(r.error, Catch::Contains("Is a directory"));
    }
    SECTION("disk full: retry with the errno text") {
        if (::access("/dev/full", W_OK) != 0) {
            WARN("no /dev/full here; skipped");
            return;
        }
        auto s = make("/dev/full");
        auto r = put(*s, {rec(1)});
        CHECK(r.status == write_status::retry);
        CHECK_THAT(r.error, Catch::Contains("No space left on device"));
        CHECK(put(*s, {rec(2)}).status == write_status::retry);
        s->close();
    }
}

TEST_CASE("file sink: a relative path is resolved when the sink is made", "[file_sink]") {
    temp_dir dir;
    auto old_cwd = fs::current_path();
    REQUIRE(::chdir(dir.path.c_str()) == 0);
    auto s = make("rel/out.jsonl", {{"fsync", false}});
    REQUIRE(::chdir(old_cwd.c_str()) == 0);
    REQUIRE(put(*s, {rec(1)}).status == write_status::ok);
    CHECK(read_lines(dir / "rel/out.jsonl") == std::vector<std::string>{line_of(rec(1))});
}

// ---------------------------------------------------------------------------------------------
// Hash chain (chain_key)

namespace {

const std::string chain_key = "k3y-for-the-chain";

std::string hmac_hex(const std::string& key, const std::string& msg) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    REQUIRE(HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                 reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), md, &len));
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < len; ++i) {
        out.push_back(hex[md[i] >> 4]);
        out.push_back(hex[md[i] & 15]);
    }
    return out;
}

struct chained_line {
    std::string body;  // bytes before ,"chain":
    std::uint64_t seq = 0;
    std::string prev, mac;
};

chained_line parse_chained(const std::string& line) {
    chained_line c;
    auto at = line.rfind(",\"chain\":");
    REQUIRE(at != std::string::npos);
    c.body = line.substr(0, at);
    std::string rest = line.substr(at);
    unsigned long long seq = 0;
    char prev[65] = {}, mac[65] = {};
    REQUIRE(std::sscanf(rest.c_str(), ",\"chain\":{\"seq\":%llu,\"prev\":\"%64[0-9a-f]\",\"mac\":\"%64[0-9a-f]\"}}",
                        &seq, prev, mac) == 3);
    c.seq = seq;
    c.prev = prev;
    c.mac = mac;
    REQUIRE(rest == ",\"chain\":{\"seq\":" + std::to_string(seq) + ",\"prev\":\"" + c.prev +
                        "\",\"mac\":\"" + c.mac + "\"}}");
    return c;
}

// Checks every line of the files (oldest first) as `fastret verify` does; returns the bodies.
std::vector<std::string> verify_chain(const std::vector<std::string>& files) {
    std::vector<std::string> bodies;
    std::string prev(64, '0');
    std::uint64_t seq = 0;
    for (const auto& f : files) {
        for (const auto& line : read_lines(f)) {
            auto c = parse_chained(line);
            INFO(f << ": " << line);
            CHECK(c.seq == seq + 1);
            CHECK(c.prev == prev);
            CHECK(c.mac == hmac_hex(chain_key, c.body + "\n" + std::to_string(c.seq) + "\n" + c.prev));
            seq = c.seq;
            prev = c.mac;
            bodies.push_back(c.body + "}");
        }
    }
    return bodies;
}

std::vector<std::string> trail_files(const std::string& path, int max_backups) {
    std::vector<std::string> files;
    for (int i = max_backups; i >= 1; --i)
        if (fs::exists(path + "." + std::to_string(i))) files.push_back(path + "." + std::to_string(i));
    files.push_back(path);
    return files;
}

}  // namespace

TEST_CASE("file sink chain: every line carries seq, prev and an HMAC that verifies",
          "[file_sink][chain]") {
    temp_dir dir;
    const std::string path = dir / "audit.jsonl";
    auto s = make(path, {{"chain_key", chain_key}, {"checkpoint_every", std::int64_t{4}}});
    REQUIRE(put(*s, {rec(1), rec(2), rec(3)}).status == write_status::ok);
    REQUIRE(put(*s, {rec(4)}).status == write_status::ok);
    REQUIRE(put(*s, {rec(5), rec(6)}).status == write_status::ok);
    REQUIRE(s->sync().status == write_status::ok);
    s->close();

    auto bodies = verify_chain({path});
    REQUIRE(bodies.size() == 6);
    for (int i = 0; i < 6; ++i) CHECK(bodies[static_cast<std::size_t>(i)] == line_of(rec(i + 1)));
    CHECK(parse_chained(read_lines(path)[0]).prev == std::string(64, '0'));

    // A checkpoint after the batch that reached seq 4, with its own HMAC.
    auto cps = read_lines(path + ".checkpoints");
    REQUIRE(cps.size() == 1);
    CHECK(cps[0].find("\"seq\":4,") != std::string::npos);
    CHECK(cps[0].find("\"mac\":\"" + parse_chained(read_lines(path)[3]).mac + "\"") != std::string::npos);
    auto at = cps[0].rfind(",\"ckpt_mac\":\"");
    REQUIRE(at != std::string::npos);
    CHECK(cps[0].substr(at) == ",\"ckpt_mac\":\"" + hmac_hex(chain_key, "checkpoint\n" + cps[0].substr(0, at)) + "\"}");
    CHECK(perm_bits(path + ".checkpoints") == 0600);

    // A new sink (a restarted process) continues the chain from the file's tail.
    auto s2 = make(path, {{"chain_key", chain_key}});
    REQUIRE(put(*s2, {rec(7)}).status == write_status::ok);
    s2->close();
    CHECK(verify_chain({path}).size() == 7);
}

TEST_CASE("file sink chain: continues across rotations, with a checkpoint at each",
          "[file_sink][chain]") {
    temp_dir dir;
    const std::string path = dir / "rot.jsonl";
    const auto line_len = static_cast<std::int64_t>(line_of(rec(1)).size() + 150);
    auto s = make(path, {{"chain_key", chain_key}, {"max_bytes", 3 * line_len},
                         {"backups", std::int64_t{50}}, {"checkpoint_every", std::int64_t{1000}}});
    for (int i = 1; i <= 20; ++i) REQUIRE(put(*s, {rec(i)}).status == write_status::ok);
    s->close();
    auto files = trail_files(path, 50);
    CHECK(files.size() > 5);
    auto bodies = verify_chain(files);
    REQUIRE(bodies.size() == 20);
    auto cps = read_lines(path + ".checkpoints");
    CHECK(cps.size() == files.size() - 1);  // one per rotation
    for (const auto& c : cps) CHECK(c.find("\"event\":\"rotate\"") != std::string::npos);

    SECTION("backups 0 with a chain is refused") {
        CHECK_THROWS_AS(make(path, {{"chain_key", chain_key}, {"backups", std::int64_t{0}}}),
                        config_error);
    }
}

TEST_CASE("file sink chain: processes appending to one file keep one unbroken chain",
          "[file_sink][chain]") {
    temp_dir dir;
    const std::string path = dir / "procs.jsonl";
    const auto line_len = static_cast<std::int64_t>(line_of(rec(1)).size() + 150);
    constexpr int procs = 3, batches = 30, per_batch = 2;
    config_map opts{{"chain_key", chain_key}, {"max_bytes", 7 * line_len},
                    {"backups", std::int64_t{500}}, {"fsync", false},
                    {"checkpoint_every", std::int64_t{10}}};
    write_from_processes(path, opts, procs, batches, per_batch);
    auto files = trail_files(path, 500);
    CHECK(files.size() > 5);
    auto bodies = verify_chain(files);
    std::set<std::string> expected, seen(bodies.begin(), bodies.end());
    for (int p = 0; p < procs; ++p)
        for (int n = 0; n < batches * per_batch; ++n) expected.insert(line_of(rec(100000 * (p + 1) + n)));
    CHECK(bodies.size() == expected.size());
    CHECK(seen == expected);
    // Periodic checkpoints in seq order, each naming a record of the trail.
    auto cps = read_lines(path + ".checkpoints");
    CHECK(cps.size() >= procs * batches * per_batch / 10);
}
