// For the test cases that talk to a throwaway server started by a ctest fixture
// (tests/fixtures/<server>_server.py, see cpp/CMakeLists.txt): the fixture's info.json, and
// names and ports of the tests' own.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>

namespace fastret::server_test {

// The top-level scalar members of a JSON object (strings, numbers, booleans, all kept as
// text); nested values are skipped. Enough for the fixtures' info.json.
inline std::map<std::string, std::string> read_flat_json(const std::string& text) {
    std::map<std::string, std::string> out;
    std::size_t i = 0;
    auto ws = [&] {
        while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    };
    auto str = [&] {
        std::string s;
        ++i;  // opening quote
        while (i < text.size() && text[i] != '"') {
            if (text[i] == '\\' && i + 1 < text.size()) {
                ++i;
                switch (text[i]) {
                    case 'n': s += '\n'; break;
                    case 't': s += '\t'; break;
                    default: s += text[i];
                }
            } else {
                s += text[i];
            }
            ++i;
        }
        ++i;  // closing quote
        return s;
    };
    auto skip_nested = [&] {
        int depth = 0;
        do {
            if (text[i] == '"') {
                str();
                continue;
            }
            if (text[i] == '{' || text[i] == '[') ++depth;
            if (text[i] == '}' || text[i] == ']') --depth;
            ++i;
        } while (i < text.size() && depth > 0);
    };
    ws();
    if (i >= text.size() || text[i] != '{') throw std::runtime_error("info.json: not an object");
    ++i;
    for (;;) {
        ws();
        if (i >= text.size() || text[i] == '}') break;
        if (text[i] == ',') {
            ++i;
            continue;
        }
        std::string key = str();
        ws();
        ++i;  // colon
        ws();
        if (text[i] == '"') {
            out[key] = str();
        } else if (text[i] == '{' || text[i] == '[') {
            skip_nested();
        } else {
            auto end = text.find_first_of(",}\n", i);
            std::string v = text.substr(i, end - i);
            while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back()))) v.pop_back();
            out[key] = v;
            i = end;
        }
    }
    return out;
}

// The info.json of the `server` fixture (postgres, mysql, ...), found through the environment
// variable ctest sets for the test cases tagged [server]. Throws, saying how to start one by
// hand, when it is not set or not readable.
inline std::map<std::string, std::string> fixture_info(const std::string& server) {
    std::string var = "FASTRET_TEST_";
    for (char ch : server) var += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    const char* path = std::getenv(var.c_str());
    if (!path || !*path)
        throw std::runtime_error(var + " is not set: run the [" + server +
                                 "] tests through ctest (its " + server +
                                 "_server fixture starts the server), or start one with `python3 "
                                 "tests/fixtures/" + server + "_server.py start DIR` and set " +
                                 var + "=DIR/info.json");
    std::ifstream in(path);
    if (!in) throw std::runtime_error(var + ": cannot read " + path);
    std::stringstream ss;
    ss << in.rdbuf();
    return read_flat_json(ss.str());
}

// 12 random hex digits, for names of databases, roles and files the tests create: processes
// running test cases in parallel never pick the same.
inline std::string random_suffix() {
    static std::mt19937_64 rng{std::random_device{}() ^
                               (static_cast<std::uint64_t>(::getpid()) << 32)};
    static const char* hex = "0123456789abcdef";
    std::string s;
    auto v = rng();
    for (int i = 0; i < 12; ++i, v >>= 4) s += hex[v & 15];
    return s;
}

// A TCP port on 127.0.0.1 that nothing listens on.
inline unsigned unused_loopback_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    ::close(fd);
    return ntohs(addr.sin_port);
}

}  // namespace fastret::server_test
