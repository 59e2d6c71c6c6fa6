// syslog sink (see encoders/syslog.hpp for the message format).
//
// Delivery:
//  - Stream transports (tcp, tls): the batch is framed (octet counting by default, RFC
//    5425/6587; newline on request) into one buffer and written with one write in flight and
//    a deadline (write_timeout_ms). ok means the whole buffer was handed to the kernel: syslog
//    over TCP has no application acknowledgement, so records in the socket buffer when the
//    peer dies are lost to that peer (RFC 6587 section 3.4.1 "no application-level
//    acknowledgement"); the sink narrows the window by checking, before each batch, whether
//    the peer closed or reset the connection since the last one, and reconnecting then.
//  - Datagram transports (udp, unix): one datagram per message. ok means sent; a missing
//    receiver is seen only as ECONNREFUSED (unix socket absent, ICMP port unreachable),
//    which is a retry.
//  - Every failure (refused, reset, timeout, TLS refused) is retry: the runtime backs off and
//    keeps the records in the spool; a stalled peer costs write_timeout_ms per attempt and
//    never blocks the caller.
#include "sinks/syslog_sink.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <climits>

#include "encoders/syslog.hpp"
#include "net/connection.hpp"

namespace fastret {

const std::vector<option_spec>& syslog_sink_options() {
    using T = option_type;
    static const std::vector<option_spec> table = [] {
        std::vector<option_spec> t = {
            {"transport", T::choice, "unix", false, INT64_MIN, INT64_MAX,
             {"unix", "udp", "tcp", "tls"},
             "unix: datagrams to the local socket `path` (like the stock syslog returner); "
             "udp; tcp; tls (RFC 5425)"},
            {"host", T::string, "localhost", false, INT64_MIN, INT64_MAX, {},
             "syslog server name or address (udp, tcp, tls)"},
            {"port", T::integer, "0", false, 0, 65535, {},
             "server port; 0: 514 (udp, tcp) or 6514 (tls)"},
            {"path", T::string, "/dev/log", false, INT64_MIN, INT64_MAX, {},
             "local datagram socket (transport unix)"},
            {"format", T::choice, "auto", false, INT64_MIN, INT64_MAX,
             {"auto", "rfc5424", "rfc3164"},
             "message format; auto: rfc3164 on the local socket, rfc5424 on the network"},
            {"framing", T::choice, "octet_counting", false, INT64_MIN, INT64_MAX,
             {"octet_counting", "newline"},
             "stream framing (tcp, tls): octet counting (RFC 5425/6587) or one message per line"},
            {"facility", T::string, "user", false, INT64_MIN, INT64_MAX, {},
             "facility name: kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, "
             "authpriv, ftp, local0..local7 (LOG_USER style accepted)"},
            {"level", T::string, "info", false, INT64_MIN, INT64_MAX, {},
             "severity of records that did not fail: emerg, alert, crit, err, warning, notice, "
             "info, debug (LOG_INFO style accepted)"},
            {"failure_level", T::string, "err", false, INT64_MIN, INT64_MAX, {},
             "severity of records with success false"},
            {"tag", T::string, "salt", false, INT64_MIN, INT64_MAX, {},
             "APP-NAME (RFC 5424, at most 48 characters) or TAG (RFC 3164, at most 32)"},
            {"hostname", T::string, "", false, INT64_MIN, INT64_MAX, {},
             "HOSTNAME field; empty: the record's minion id (the local host name for records "
             "without one)"},
            {"options", T::string_list, "LOG_PID", false, INT64_MIN, INT64_MAX, {},
             "openlog-style options as in the stock returner: LOG_PID puts the process id in "
             "PROCID; LOG_CONS, LOG_NDELAY, LOG_ODELAY, LOG_NOWAIT, LOG_PERROR are accepted and "
             "have no effect"},
            {"max_message_bytes", T::integer, "8192", false, 2048, 16777216, {},
             "longest message (rsyslog's default maxMessageSize is 8k); at most 65000 over udp"},
            {"oversize", T::choice, "split", false, INT64_MIN, INT64_MAX, {"split", "truncate"},
             "a longer message is split into parts (part=\"i/n\") or truncated "
             "(truncated=\"<bytes>\"), never cut silently"},
            {"connect_timeout_ms", T::integer, "5000", false, 1, 600000, {},
             "deadline of the host name lookup, of the TCP connect and of the TLS handshake, each"},
            {"write_timeout_ms", T::integer, "10000", false, 1, 3600000, {},
             "deadline of each batch's write; a peer that does not read fails the batch "
             "(retried later, kept in the spool)"},
        };
        const auto& tls = net::tls_option_specs();
        t.insert(t.end(), tls.begin(), tls.end());
        return t;
    }();
    return table;
}

namespace {

net::transport transport_from(const std::string& s) {
    if (s == "udp") return net::transport::udp;
    if (s == "tcp") return net::transport::tcp;
    if (s == "tls") return net::transport::tls;
    return net::transport::unix_dgram;
}

class syslog_sink final : public sink {
public:
    syslog_sink(std::string name, net::endpoint_config ep, syslog_format f, bool octet,
                const std::string& owner)
        : name_(std::move(name)), fmt_(std::move(f)), octet_(octet),
          conn_(std::move(ep), owner) {}

    std::string_view type() const noexcept override { return "syslog"; }

    std::vector<std::string> warnings() const override {
        std::vector<std::string> w;
        if (conn_.config().kind == net::transport::tls && !conn_.config().tls.verify)
            w.push_back(fmt::format(
                "syslog sink '{}': TLS certificate verification is OFF (tls_verify: false): "
                "{} is not authenticated and anyone on the path can read or change the "
                "records", name_, conn_.describe()));
        return w;
    }

    write_result write(std::span<const record> batch) noexcept override {
        try {
            return write_batch(batch);
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
    std::string prefix() const { return "syslog sink '" + name_ + "': "; }

    write_result failed(const net::net_error& e) {
        std::string msg = prefix() + e.message;
        if (e.code == net::net_errc::tls_verify || e.code == net::net_errc::tls_pin)
            msg += fmt::format(" ({} refused handshake(s); nothing was sent)",
                               conn_.verify_failures());
        return {write_status::retry, std::move(msg)};
    }

    write_result write_batch(std::span<const record> batch) {
        if (net::is_stream(conn_.config().kind)) {
            buf_.clear();
            const auto framing = octet_ ? syslog_framing::octet_counting : syslog_framing::newline;
            for (const auto& r : batch) append_syslog_framed(buf_, r, fmt_, framing);
            if (conn_.is_open()) conn_.peer_closed();  // reconnects below if the peer left
            if (auto e = conn_.write(buf_)) return failed(e);
            if (buf_.capacity() > (std::size_t{16} << 20)) std::string().swap(buf_);
            return write_result::success();
        }
        if (auto e = conn_.open()) return failed(e);
        net::net_error err;
        for (const auto& r : batch) {
            encode_syslog(r, fmt_, [&](std::string_view m) {
                if (!err) err = conn_.write(m);
            });
            if (err) return failed(err);
        }
        return write_result::success();
    }

    std::string name_;
    syslog_format fmt_;
    bool octet_;
    net::connection conn_;
    std::string buf_;
};

}  // namespace

std::unique_ptr<sink> make_syslog_sink(const std::string& name, const options& opts) {
    const std::string owner = fmt::format("sink '{}' (syslog)", name);
    net::endpoint_config ep;
    ep.kind = transport_from(opts.get_string("transport"));
    ep.host = opts.get_string("host");
    ep.port = static_cast<std::uint16_t>(opts.get_int("port"));
    if (ep.port == 0) ep.port = ep.kind == net::transport::tls ? 6514 : 514;
    ep.path = opts.get_string("path");
    ep.connect_timeout = std::chrono::milliseconds(opts.get_int("connect_timeout_ms"));
    ep.io_timeout = std::chrono::milliseconds(opts.get_int("write_timeout_ms"));
    ep.tls = net::tls_config_from(opts, owner);
    if (ep.host.empty() && ep.kind != net::transport::unix_dgram)
        throw config_error(owner + ": host is empty");

    syslog_format f;
    const auto& format = opts.get_string("format");
    f.rfc3164 = format == "rfc3164" || (format == "auto" && ep.kind == net::transport::unix_dgram);
    f.facility = syslog_facility_code(opts.get_string("facility"));
    if (f.facility < 0)
        throw config_error(fmt::format(
            "{}: facility '{}' is unknown; allowed: kern, user, mail, daemon, auth, syslog, lpr, "
            "news, uucp, cron, authpriv, ftp, local0..local7", owner, opts.get_string("facility")));
    for (const char* key : {"level", "failure_level"}) {
        int sev = syslog_severity_code(opts.get_string(key));
        if (sev < 0)
            throw config_error(fmt::format(
                "{}: {} '{}' is unknown; allowed: emerg, alert, crit, err, warning, notice, info, "
                "debug", owner, key, opts.get_string(key)));
        (std::string_view(key) == "level" ? f.severity : f.failure_severity) = sev;
    }
    bool pid = false;
    static const std::vector<std::string> no_options;
    for (const auto& o : opts.has("options") ? opts.get_list("options") : no_options) {
        static const char* known[] = {"LOG_PID", "LOG_CONS", "LOG_NDELAY", "LOG_ODELAY",
                                      "LOG_NOWAIT", "LOG_PERROR"};
        if (std::find(std::begin(known), std::end(known), o) == std::end(known))
            throw config_error(fmt::format("{}: options: '{}' is unknown; allowed: {}", owner, o,
                                           fmt::join(known, ", ")));
        if (o == "LOG_PID") pid = true;
    }
    f.procid = pid ? std::to_string(::getpid()) : "-";
    f.app_name = opts.get_string("tag");
    f.hostname = opts.get_string("hostname");
    char host[HOST_NAME_MAX + 1] = {};
    if (::gethostname(host, sizeof host - 1) == 0 && host[0]) f.local_hostname = host;
    f.max_bytes = static_cast<std::size_t>(opts.get_int("max_message_bytes"));
    if (ep.kind == net::transport::udp && f.max_bytes > 65000)
        throw config_error(fmt::format(
            "{}: max_message_bytes {} is more than a UDP datagram carries (at most 65000)", owner,
            f.max_bytes));
    f.split = opts.get_string("oversize") == "split";
    bool octet = opts.get_string("framing") == "octet_counting";
    return std::make_unique<syslog_sink>(name, std::move(ep), std::move(f), octet, owner);
}

}  // namespace fastret
