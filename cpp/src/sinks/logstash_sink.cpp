// logstash sink.
//
// protocol tcp/tls: each record is one document and a terminator ('\n'; NUL for GELF); the
// batch is one buffer, one write with a deadline; ok means written to the socket (as for the
// syslog sink: no application acknowledgement exists on this input, so what sits in the
// socket buffer when the peer dies is lost to it; the sink checks before each batch whether
// the peer closed or reset the connection and reconnects).
// protocol http/https: the batch is one POST of a JSON array (the http input's json codec
// makes one event per element) over a kept-alive HTTP/1.1 connection; ok means a 2xx reply.
// Replies: 408, 429, 5xx -> retry (Retry-After honoured, as delta-seconds or as an HTTP date
// in any of the three forms of RFC 9110, a date taken relative to the reply's Date header;
// at most an hour, a past date means no extra wait: net/http_date.hpp); 401, 403 -> fatal
// (credentials); 404 -> fatal (wrong path); 400, 413 and other 4xx -> drop (the batch itself
// is refused); a connection that was kept alive and turns out closed is reopened once at once.
#include "sinks/logstash_sink.hpp"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <charconv>

#include "encoders/json_lines.hpp"
#include "encoders/siem.hpp"
#include "net/connection.hpp"
#include "net/http_date.hpp"

namespace fastret {

const std::vector<option_spec>& logstash_sink_options() {
    using T = option_type;
    static const std::vector<option_spec> table = [] {
        std::vector<option_spec> t = {
            {"protocol", T::choice, "tcp", false, INT64_MIN, INT64_MAX,
             {"tcp", "tls", "http", "https"},
             "tcp/tls: one document per line (tcp input, json_lines codec; GELF: NUL-framed); "
             "http/https: POST of a JSON array per batch (http input)"},
            {"host", T::string, "localhost", false, INT64_MIN, INT64_MAX, {},
             "Logstash host name or address"},
            {"port", T::integer, "0", false, 0, 65535, {},
             "port; 0: 5000 (tcp, tls) or 8080 (http, https)"},
            {"path", T::string, "/", false, INT64_MIN, INT64_MAX, {},
             "request path (http, https)"},
            {"format", T::choice, "ecs", false, INT64_MIN, INT64_MAX,
             {"ecs", "json", "gelf", "cef"},
             "ecs: ECS-shaped JSON; json: fastret's JSON lines; gelf: GELF 1.1 (tcp/tls "
             "only); cef: ArcSight CEF lines (tcp/tls only)"},
            {"http_user", T::string, "", false, INT64_MIN, INT64_MAX, {},
             "user for HTTP basic authentication (with http_password)"},
            {"http_password", T::string, "", false, INT64_MIN, INT64_MAX, {},
             "password for HTTP basic authentication", true},
            {"http_token", T::string, "", false, INT64_MIN, INT64_MAX, {},
             "bearer token sent as Authorization: Bearer <token>", true},
            {"connect_timeout_ms", T::integer, "5000", false, 1, 600000, {},
             "deadline of the host name lookup, of the TCP connect and of the TLS handshake, each"},
            {"write_timeout_ms", T::integer, "10000", false, 1, 3600000, {},
             "deadline of each write and of each read of the HTTP reply"},
        };
        const auto& tls = net::tls_option_specs();
        t.insert(t.end(), tls.begin(), tls.end());
        return t;
    }();
    return table;
}

namespace {

enum class doc_format { ecs, json, gelf, cef };

std::string base64(std::string_view in) {
    std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(in.data()),
                            static_cast<int>(in.size()));
    out.resize(static_cast<std::size_t>(n));
    return out;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) ==
                      std::tolower(static_cast<unsigned char>(y));
           });
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    return s;
}

struct http_response {
    int status = 0;
    std::chrono::milliseconds retry_after{0};
    bool close = false;
    std::string body;
};

class logstash_sink final : public sink {
public:
    logstash_sink(std::string name, net::endpoint_config ep, doc_format f, bool http,
                  std::string path, std::string auth, const std::string& owner)
        : name_(std::move(name)), fmt_(f), http_(http), path_(std::move(path)),
          auth_(std::move(auth)), conn_(std::move(ep), owner) {
        const auto& c = conn_.config();
        bool v6 = c.host.find(':') != std::string::npos;
        host_header_ = fmt::format("{}{}{}:{}", v6 ? "[" : "", c.host, v6 ? "]" : "", c.port);
    }

    std::string_view type() const noexcept override { return "logstash"; }

    std::vector<std::string> warnings() const override {
        std::vector<std::string> w;
        if (conn_.config().kind == net::transport::tls && !conn_.config().tls.verify)
            w.push_back(fmt::format(
                "logstash sink '{}': TLS certificate verification is OFF (tls_verify: false): "
                "{} is not authenticated and anyone on the path can read or change the records",
                name_, conn_.describe()));
        return w;
    }

    write_result write(std::span<const record> batch) noexcept override {
        try {
            return http_ ? write_http(batch) : write_stream(batch);
        } catch (const std::exception& e) {
            conn_.close();
            return {write_status::retry, prefix() + e.what()};
        } catch (...) {
            conn_.close();
            return {write_status::retry, prefix() + "unexpected error"};
        }
    }

    void close() noexcept override { conn_.finish(std::chrono::seconds(2)); }

private:
    std::string prefix() const { return "logstash sink '" + name_ + "': "; }

    write_result failed(const net::net_error& e) {
        std::string msg = prefix() + e.message;
        if (e.code == net::net_errc::tls_verify || e.code == net::net_errc::tls_pin)
            msg += fmt::format(" ({} refused handshake(s); nothing was sent)",
                               conn_.verify_failures());
        return {write_status::retry, std::move(msg)};
    }

    void encode_doc(const record& r, std::string& out) {
        switch (fmt_) {
            case doc_format::ecs: encode_ecs(r, out); break;
            case doc_format::gelf: encode_gelf(r, out); break;
            case doc_format::cef: encode_cef(r, out); break;
            case doc_format::json:
                encode_json_lines(std::span<const record>(&r, 1), out);
                out.pop_back();
                break;
        }
    }

    write_result write_stream(std::span<const record> batch) {
        buf_.clear();
        for (const auto& r : batch) {
            encode_doc(r, buf_);
            buf_.push_back(fmt_ == doc_format::gelf ? '\0' : '\n');
        }
        if (conn_.is_open()) conn_.peer_closed();
        if (auto e = conn_.write(buf_)) return failed(e);
        if (buf_.capacity() > (std::size_t{16} << 20)) std::string().swap(buf_);
        return write_result::success();
    }

    write_result write_http(std::span<const record> batch) {
        body_.assign(1, '[');
        for (std::size_t i = 0; i < batch.size(); ++i) {
            if (i) body_.push_back(',');
            encode_doc(batch[i], body_);
        }
        body_.push_back(']');
        buf_ = fmt::format("POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fastret/0.1\r\n"
                           "Content-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
                           path_, host_header_, body_.size(), auth_);
        buf_.append(body_);

        http_response resp;
        for (int attempt = 0;; ++attempt) {
            bool reused = conn_.is_open() && !conn_.peer_closed();
            net::net_error e = conn_.write(buf_);
            if (!e) e = read_response(resp);
            if (!e) break;
            // A kept-alive connection the server had closed: reopen once, at once.
            if (reused && attempt == 0 && e.code == net::net_errc::closed) continue;
            return failed(e);
        }
        if (resp.close) conn_.close();
        if (buf_.capacity() > (std::size_t{16} << 20)) std::string().swap(buf_);
        if (body_.capacity() > (std::size_t{16} << 20)) std::string().swap(body_);
        return classify(resp);
    }

    write_result classify(const http_response& r) {
        if (r.status >= 200 && r.status < 300) return write_result::success();
        std::string body = r.body.substr(0, 200);
        for (auto& c : body)
            if (static_cast<unsigned char>(c) < 0x20) c = ' ';
        std::string msg = fmt::format("{}{} answered HTTP {}{}{}", prefix(), conn_.describe(),
                                      r.status, body.empty() ? "" : ": ", body);
        if (r.status == 408 || r.status == 429 || r.status >= 500) {
            write_result res{write_status::retry, std::move(msg)};
            res.retry_after = r.retry_after;
            return res;
        }
        if (r.status == 401 || r.status == 403 || r.status == 404)
            return {write_status::fatal, std::move(msg)};
        return {write_status::drop, std::move(msg)};
    }

    // Reads one HTTP/1.1 response (status line, headers, body by Content-Length or chunked,
    // else up to the connection's close).
    net::net_error read_response(http_response& r) {
        r = {};
        in_.clear();
        std::size_t hdr_end;
        while ((hdr_end = in_.find("\r\n\r\n")) == std::string::npos) {
            if (in_.size() > 65536) return bad_reply("headers too long");
            if (auto e = conn_.read_some(in_)) return e;
        }
        std::string_view head(in_.data(), hdr_end);
        auto eol = head.find("\r\n");
        std::string_view status_line = head.substr(0, eol);
        if (!status_line.starts_with("HTTP/1.") || status_line.size() < 12)
            return bad_reply("not an HTTP/1.x reply");
        std::from_chars(status_line.data() + 9, status_line.data() + 12, r.status);
        if (status_line.starts_with("HTTP/1.0")) r.close = true;
        std::optional<std::size_t> length;
        std::optional<std::string_view> retry_after, date;
        bool chunked = false;
        std::size_t pos = eol == std::string_view::npos ? head.size() : eol + 2;
        while (pos < head.size()) {
            auto next = head.find("\r\n", pos);
            std::string_view line = head.substr(pos, next == std::string_view::npos ? head.size() - pos : next - pos);
            pos = next == std::string_view::npos ? head.size() : next + 2;
            auto colon = line.find(':');
            if (colon == std::string_view::npos) continue;
            auto name = trim(line.substr(0, colon));
            auto value = trim(line.substr(colon + 1));
            if (iequals(name, "content-length")) {
                std::size_t n = 0;
                std::from_chars(value.data(), value.data() + value.size(), n);
                length = n;
            } else if (iequals(name, "transfer-encoding")) {
                chunked = value.find("chunked") != std::string_view::npos;
            } else if (iequals(name, "connection")) {
                if (iequals(value, "close")) r.close = true;
            } else if (iequals(name, "retry-after")) {
                retry_after = value;
            } else if (iequals(name, "date")) {
                date = value;
            }
        }
        if (retry_after)
            if (auto wait = net::parse_retry_after(*retry_after, date,
                                                   std::chrono::system_clock::now()))
                r.retry_after = *wait;
        std::string rest = in_.substr(hdr_end + 4);
        if (r.status == 204 || r.status == 304 || (r.status >= 100 && r.status < 200)) return {};
        if (chunked) {
            // size CRLF data CRLF ... 0 CRLF [trailers] CRLF
            std::size_t p = 0;
            for (;;) {
                auto le = rest.find("\r\n", p);
                while (le == std::string::npos) {
                    if (auto e = conn_.read_some(rest)) return e;
                    le = rest.find("\r\n", p);
                }
                std::size_t n = 0;
                std::from_chars(rest.data() + p, rest.data() + le, n, 16);
                p = le + 2;
                if (n == 0) {
                    while (rest.find("\r\n", p) == std::string::npos)
                        if (auto e = conn_.read_some(rest)) return e;
                    break;
                }
                while (rest.size() < p + n + 2)
                    if (auto e = conn_.read_some(rest)) return e;
                if (r.body.size() < 4096) r.body.append(rest, p, std::min<std::size_t>(n, 4096));
                p += n + 2;
            }
        } else if (length) {
            while (rest.size() < *length)
                if (auto e = conn_.read_some(rest)) return e;
            r.body = rest.substr(0, std::min<std::size_t>(*length, 4096));
        } else {
            // No length: the body ends with the connection.
            for (;;) {
                auto e = conn_.read_some(rest);
                if (e) {
                    if (e.code == net::net_errc::closed) break;
                    return e;
                }
            }
            r.body = rest.substr(0, 4096);
            r.close = true;
        }
        return {};
    }

    net::net_error bad_reply(std::string_view what) {
        conn_.close();
        return {net::net_errc::io, fmt::format("{}: bad HTTP reply: {}", conn_.describe(), what)};
    }

    std::string name_;
    doc_format fmt_;
    bool http_;
    std::string path_;
    std::string auth_;  // "Authorization: ...\r\n" or empty; never logged
    std::string host_header_;
    net::connection conn_;
    std::string buf_, body_, in_;
};

}  // namespace

std::unique_ptr<sink> make_logstash_sink(const std::string& name, const options& opts) {
    const std::string owner = fmt::format("sink '{}' (logstash)", name);
    const auto& protocol = opts.get_string("protocol");
    const bool http = protocol == "http" || protocol == "https";
    net::endpoint_config ep;
    ep.kind = (protocol == "tls" || protocol == "https") ? net::transport::tls : net::transport::tcp;
    ep.host = opts.get_string("host");
    if (ep.host.empty()) throw config_error(owner + ": host is empty");
    ep.port = static_cast<std::uint16_t>(opts.get_int("port"));
    if (ep.port == 0) ep.port = http ? 8080 : 5000;
    ep.connect_timeout = std::chrono::milliseconds(opts.get_int("connect_timeout_ms"));
    ep.io_timeout = std::chrono::milliseconds(opts.get_int("write_timeout_ms"));
    ep.tls = net::tls_config_from(opts, owner);

    const auto& f = opts.get_string("format");
    doc_format df = f == "json" ? doc_format::json : f == "gelf" ? doc_format::gelf
                    : f == "cef" ? doc_format::cef : doc_format::ecs;
    if (http && (df == doc_format::gelf || df == doc_format::cef))
        throw config_error(fmt::format("{}: format {} goes over tcp or tls only, not {}", owner, f,
                                       protocol));
    std::string path = opts.get_string("path");
    if (path.empty() || path[0] != '/' ||
        std::any_of(path.begin(), path.end(), [](char c) {
            return static_cast<unsigned char>(c) <= 32 || c == 127;
        }))
        throw config_error(fmt::format("{}: path must start with '/' and hold no spaces or "
                                       "control characters", owner));
    std::string auth;
    const auto& user = opts.get_string("http_user");
    const auto& password = opts.get_string("http_password");
    const auto& token = opts.get_string("http_token");
    if (!token.empty() && (!user.empty() || !password.empty()))
        throw config_error(owner + ": http_token and http_user/http_password exclude each other");
    auto clean = [&](const std::string& v, const char* key) {
        if (std::any_of(v.begin(), v.end(), [](char c) { return c == '\r' || c == '\n' || c == '\0'; }))
            throw config_error(fmt::format("{}: {} holds a line break or NUL", owner, key));
    };
    clean(user, "http_user");
    clean(password, "http_password");
    clean(token, "http_token");
    if (!user.empty() || !password.empty())
        auth = "Authorization: Basic " + base64(user + ":" + password) + "\r\n";
    else if (!token.empty())
        auth = "Authorization: Bearer " + token + "\r\n";
    return std::make_unique<logstash_sink>(name, std::move(ep), df, http, std::move(path),
                                           std::move(auth), owner);
}

}  // namespace fastret
