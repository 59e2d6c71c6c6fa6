#include "net/connection.hpp"

#include <fmt/format.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/local/datagram_protocol.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <mutex>
#include <optional>
#include <vector>

namespace fastret::net {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using udp = asio::ip::udp;

std::string_view to_string(transport t) noexcept {
    switch (t) {
        case transport::tcp: return "tcp";
        case transport::tls: return "tls";
        case transport::udp: return "udp";
        case transport::unix_dgram: return "unix";
        case transport::unix_stream: return "unix-stream";
    }
    return "?";
}

bool is_stream(transport t) noexcept {
    return t == transport::tcp || t == transport::tls || t == transport::unix_stream;
}

namespace {

// One name lookup. Boost.Asio runs getaddrinfo on the resolver's own background thread, so
// the caller only waits on `io` with a deadline; a lookup that outlives the deadline stays
// here and the next open() waits for that same lookup again instead of starting another.
struct name_lookup {
    asio::io_context io;  // default hint: the resolver's thread posts the completion here
    tcp::resolver resolver{io};
    bool done = false;
    error_code ec;
    std::vector<asio::ip::address> addrs;
};

// Lookups still running when their connection went away. Destroying one joins the resolver's
// thread, which would block until getaddrinfo returns; they are kept here and freed by a later
// lookup once finished. Never destroyed at exit (a static's destructor would join there).
// The lock is only tried: in a child forked while another thread held it, waiting would hang,
// and both uses can do without (reaping is opportunistic; an unparkable lookup is leaked).
struct parked_lookups {
    std::mutex mu;
    std::vector<std::unique_ptr<name_lookup>> list;
    pid_t pid = ::getpid();

    static parked_lookups& get() {
        static auto* p = new parked_lookups;
        return *p;
    }
    void park(std::unique_ptr<name_lookup> l) {
        std::unique_lock lock(mu, std::try_to_lock);
        if (lock && pid == ::getpid()) list.push_back(std::move(l));
        else (void)l.release();  // see above: leaked on purpose
    }
    void reap() {
        std::vector<std::unique_ptr<name_lookup>> finished;
        std::unique_lock lock(mu, std::try_to_lock);
        if (!lock) return;
        if (pid != ::getpid()) {
            // A forked child: the resolver threads of these lookups do not exist here, so
            // they never finish and touching them could hang. Leaked on purpose.
            for (auto& l : list) (void)l.release();
            list.clear();
            pid = ::getpid();
            return;
        }
        for (auto it = list.begin(); it != list.end();) {
            (*it)->io.poll();  // runs the completion if getaddrinfo has returned
            if ((*it)->done) {
                finished.push_back(std::move(*it));
                it = list.erase(it);
            } else {
                ++it;
            }
        }
        lock.unlock();
        // destroyed here, outside the lock: their threads are idle, joining is immediate
    }
};

}  // namespace

struct connection::impl {
    asio::io_context io{1};
    std::unique_ptr<name_lookup> lookup;
    asio::steady_timer timer{io};
    std::shared_ptr<ssl::context> ctx;
    std::optional<tcp::socket> tcp_sock;
    std::optional<ssl::stream<tcp::socket>> tls;
    std::optional<udp::socket> udp_sock;
    std::optional<asio::local::datagram_protocol::socket> unix_dgram;
    std::optional<asio::local::stream_protocol::socket> unix_stream;
    bool open = false;

    // Closes whatever socket is open; pending operations complete with operation_aborted.
    void abort() noexcept {
        error_code ec;
        if (tcp_sock && tcp_sock->is_open()) tcp_sock->close(ec);
        if (tls && tls->lowest_layer().is_open()) tls->lowest_layer().close(ec);
        if (udp_sock && udp_sock->is_open()) udp_sock->close(ec);
        if (unix_dgram && unix_dgram->is_open()) unix_dgram->close(ec);
        if (unix_stream && unix_stream->is_open()) unix_stream->close(ec);
    }

    // Runs one asynchronous step against a deadline. `start(done)` starts the operation with
    // `done(ec, n)` as its completion. Returns the step's error (timed_out set when the timer
    // won: the socket is closed then and the error is operation_aborted).
    template <class Start>
    error_code run(std::chrono::milliseconds timeout, bool& timed_out, std::size_t& n,
                   Start&& start) {
        bool done = false;
        error_code result;
        timed_out = false;
        timer.expires_after(timeout);
        timer.async_wait([&](const error_code& ec) {
            if (!ec && !done) {
                timed_out = true;
                abort();
            }
        });
        start([&](const error_code& ec, std::size_t bytes) {
            done = true;
            result = ec;
            n = bytes;
            timer.cancel();
        });
        io.restart();
        io.run();
        return result;
    }
};

connection::connection(endpoint_config cfg, const std::string& owner)
    : cfg_(std::move(cfg)), impl_(std::make_unique<impl>()) {
    if (cfg_.kind == transport::tls) impl_->ctx = make_client_context(cfg_.tls, owner);
}

connection::~connection() {
    close();
    if (impl_->lookup && !impl_->lookup->done) parked_lookups::get().park(std::move(impl_->lookup));
}

bool connection::is_open() const noexcept { return impl_->open; }

std::string connection::describe() const {
    if (cfg_.kind == transport::unix_dgram || cfg_.kind == transport::unix_stream)
        return fmt::format("{}:{}", to_string(cfg_.kind), cfg_.path);
    bool v6 = cfg_.host.find(':') != std::string::npos;
    return fmt::format("{}://{}{}{}:{}", to_string(cfg_.kind), v6 ? "[" : "", cfg_.host,
                       v6 ? "]" : "", cfg_.port);
}

void connection::close() noexcept {
    impl_->abort();
    impl_->tcp_sock.reset();
    impl_->tls.reset();
    impl_->udp_sock.reset();
    impl_->unix_dgram.reset();
    impl_->unix_stream.reset();
    impl_->open = false;
}

void connection::finish(std::chrono::milliseconds linger) noexcept {
    int fd = -1;
    if (impl_->tcp_sock && impl_->tcp_sock->is_open()) fd = impl_->tcp_sock->native_handle();
    if (impl_->tls && impl_->tls->lowest_layer().is_open())
        fd = impl_->tls->lowest_layer().native_handle();
    if (fd >= 0 && ::shutdown(fd, SHUT_WR) == 0) {
        const auto deadline = std::chrono::steady_clock::now() + linger;
        char buf[4096];
        for (;;) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) break;
            pollfd p{fd, POLLIN, 0};
            const int r = ::poll(&p, 1, static_cast<int>(left.count()));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
            const auto n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
            if (n <= 0) break;  // the peer's FIN (or an error): nothing more will come
        }
    }
    close();
}

namespace {

net_errc classify(const error_code& ec, bool timed_out) {
    if (timed_out) return net_errc::timeout;
    if (ec == asio::error::eof || ec == asio::error::connection_reset ||
        ec == asio::error::broken_pipe || ec == asio::error::connection_aborted ||
        ec == ssl::error::stream_truncated)
        return net_errc::closed;
    if (ec == asio::error::connection_refused || ec == asio::error::host_unreachable ||
        ec == asio::error::network_unreachable || ec == asio::error::not_found ||
        ec == asio::error::host_not_found || ec == asio::error::host_not_found_try_again ||
        ec == boost::system::errc::no_such_file_or_directory)
        return net_errc::unreachable;
    return net_errc::io;
}

std::string ssl_error_text(const error_code& ec) {
    std::string m = ec.message();
    if (ec.category() == asio::error::get_ssl_category()) {
        // "certificate verify failed (SSL routines)" -> keep the reason only.
        if (auto p = m.find(" (SSL routines)"); p != std::string::npos) m.erase(p);
    }
    return m;
}

}  // namespace

namespace {

// Looks cfg.host up (see name_lookup); `lookup` carries a lookup over from an earlier call.
net_error resolve(std::unique_ptr<name_lookup>& lookup, const endpoint_config& cfg,
                  const std::string& where, std::vector<asio::ip::address>& addrs) {
    parked_lookups::get().reap();
    if (!lookup) {
        lookup = std::make_unique<name_lookup>();
        name_lookup* l = lookup.get();
        l->resolver.async_resolve(
            cfg.host, std::to_string(cfg.port),
            [l](const error_code& e, const tcp::resolver::results_type& res) {
                l->done = true;
                l->ec = e;
                for (const auto& r : res) l->addrs.push_back(r.endpoint().address());
            });
    }
    // A lookup left over from an earlier open() that timed out is waited for again, not
    // started anew: a stalled resolver then costs one pending getaddrinfo, not one per retry.
    lookup->io.run_for(cfg.connect_timeout);
    if (!lookup->done)
        return {net_errc::timeout,
                fmt::format("{}: cannot resolve {}: no answer within {} ms (connect_timeout_ms)",
                            where, cfg.host, cfg.connect_timeout.count())};
    auto l = std::move(lookup);  // answered: the next open() asks again (addresses change)
    if (l->ec || l->addrs.empty())
        return {net_errc::unreachable,
                fmt::format("{}: cannot resolve {}: {}", where, cfg.host,
                            l->ec ? l->ec.message() : std::string("no address"))};
    addrs = std::move(l->addrs);
    return {};
}

}  // namespace

net_error connection::open() {
    if (impl_->open) return {};
    close();
    auto& im = *impl_;
    const std::string where = describe();
    bool timed_out = false;
    std::size_t n = 0;
    error_code ec;

    if (cfg_.kind == transport::unix_dgram) {
        im.unix_dgram.emplace(im.io);
        im.unix_dgram->open(asio::local::datagram_protocol(), ec);
        if (!ec) im.unix_dgram->connect(asio::local::datagram_protocol::endpoint(cfg_.path), ec);
        if (ec) {
            close();
            return {classify(ec, false), fmt::format("{}: connect: {}", where, ec.message())};
        }
        im.open = true;
        return {};
    }
    if (cfg_.kind == transport::unix_stream) {
        im.unix_stream.emplace(im.io);
        ec = im.run(cfg_.connect_timeout, timed_out, n, [&](auto done) {
            im.unix_stream->async_connect(asio::local::stream_protocol::endpoint(cfg_.path),
                                          [done](const error_code& e) mutable { done(e, 0); });
        });
        if (ec) {
            close();
            return {classify(ec, timed_out),
                    fmt::format("{}: connect: {}", where,
                                timed_out ? "timed out" : ec.message())};
        }
        im.open = true;
        return {};
    }

    // Resolve: IP literals need no lookup; names are looked up off this thread (Boost.Asio's
    // resolver runs getaddrinfo on a thread of its own) under the connect deadline, so a slow
    // or dead DNS server cannot hold the runtime's I/O thread longer than connect_timeout.
    std::vector<asio::ip::address> addrs;
    {
        auto a = asio::ip::make_address(cfg_.host, ec);
        if (!ec) {
            addrs.push_back(a);
        } else if (auto e = resolve(im.lookup, cfg_, where, addrs)) {
            close();
            return e;
        }
    }

    if (cfg_.kind == transport::udp) {
        im.udp_sock.emplace(im.io);
        udp::endpoint ep(addrs.front(), cfg_.port);
        im.udp_sock->open(ep.protocol(), ec);
        if (!ec) im.udp_sock->connect(ep, ec);
        if (ec) {
            close();
            return {classify(ec, false), fmt::format("{}: connect: {}", where, ec.message())};
        }
        im.open = true;
        return {};
    }

    std::vector<tcp::endpoint> eps;
    for (const auto& a : addrs) eps.emplace_back(a, cfg_.port);
    tcp::socket* sock = nullptr;
    if (cfg_.kind == transport::tls) {
        im.tls.emplace(im.io, *im.ctx);
        sock = &im.tls->next_layer();
    } else {
        im.tcp_sock.emplace(im.io);
        sock = &*im.tcp_sock;
    }
    ec = im.run(cfg_.connect_timeout, timed_out, n, [&](auto done) {
        asio::async_connect(*sock, eps,
                            [done](const error_code& e, const tcp::endpoint&) mutable { done(e, 0); });
    });
    if (ec) {
        close();
        return {classify(ec, timed_out),
                fmt::format("{}: connect: {}", where, timed_out ? "timed out" : ec.message())};
    }
    sock->set_option(tcp::no_delay(true), ec);

    if (cfg_.kind == transport::tls) {
        SSL* ssl = im.tls->native_handle();
        const std::string& name = cfg_.tls.server_name.empty() ? cfg_.host : cfg_.tls.server_name;
        error_code aec;
        auto ip = asio::ip::make_address(name, aec);
        const bool is_ip = !aec;
        if (!is_ip) SSL_set_tlsext_host_name(ssl, name.c_str());  // SNI: names only (RFC 6066)
        if (cfg_.tls.verify) {
            SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ip.to_string().c_str())
                           : SSL_set1_host(ssl, name.c_str());
            if (ok != 1) {
                close();
                return {net_errc::tls, fmt::format("{}: cannot set the name to verify", where)};
            }
        }
        ec = im.run(cfg_.connect_timeout, timed_out, n, [&](auto done) {
            im.tls->async_handshake(ssl::stream_base::client,
                                    [done](const error_code& e) mutable { done(e, 0); });
        });
        if (ec) {
            long vr = SSL_get_verify_result(ssl);
            net_error err;
            if (timed_out) {
                err = {net_errc::timeout, fmt::format("{}: TLS handshake timed out", where)};
            } else if (cfg_.tls.verify && vr != X509_V_OK) {
                ++verify_failures_;
                err = {net_errc::tls_verify,
                       fmt::format("{}: TLS handshake refused: server certificate not trusted "
                                   "for '{}': {}", where, name, X509_verify_cert_error_string(vr))};
            } else {
                err = {classify(ec, false) == net_errc::io ? net_errc::tls : classify(ec, false),
                       fmt::format("{}: TLS handshake failed: {}", where, ssl_error_text(ec))};
            }
            close();
            return err;
        }
        if (!cfg_.tls.pins.empty()) {
            X509* cert = SSL_get1_peer_certificate(ssl);
            bool match = false;
            std::string got = "none";
            if (cert) {
                auto d = spki_sha256(cert);
                X509_free(cert);
                match = std::find(cfg_.tls.pins.begin(), cfg_.tls.pins.end(), d) !=
                        cfg_.tls.pins.end();
                got = pin_text(d);
            }
            if (!match) {
                ++verify_failures_;
                close();
                return {net_errc::tls_pin,
                        fmt::format("{}: TLS server key does not match tls_pin_sha256 (server's "
                                    "key is {})", where, got)};
            }
        }
    }
    im.open = true;
    return {};
}

net_error connection::write(std::string_view data) {
    if (auto e = open()) return e;
    auto& im = *impl_;
    bool timed_out = false;
    std::size_t n = 0;
    auto buf = asio::buffer(data.data(), data.size());
    error_code ec = im.run(cfg_.io_timeout, timed_out, n, [&](auto done) {
        switch (cfg_.kind) {
            case transport::tcp: asio::async_write(*im.tcp_sock, buf, done); break;
            case transport::tls: asio::async_write(*im.tls, buf, done); break;
            case transport::unix_stream: asio::async_write(*im.unix_stream, buf, done); break;
            case transport::udp: im.udp_sock->async_send(buf, done); break;
            case transport::unix_dgram: im.unix_dgram->async_send(buf, done); break;
        }
    });
    if (ec) {
        net_error err{classify(ec, timed_out),
                      timed_out ? fmt::format("{}: write timed out after {} ms ({} bytes pending; "
                                              "the peer does not read)",
                                              describe(), cfg_.io_timeout.count(), data.size())
                                : fmt::format("{}: write: {}", describe(), ec.message())};
        close();
        return err;
    }
    return {};
}

net_error connection::read_some(std::string& out) {
    if (!impl_->open) return {net_errc::closed, describe() + ": not connected"};
    auto& im = *impl_;
    bool timed_out = false;
    std::size_t n = 0;
    char buf[16384];
    auto b = asio::buffer(buf);
    error_code ec = im.run(cfg_.io_timeout, timed_out, n, [&](auto done) {
        switch (cfg_.kind) {
            case transport::tcp: im.tcp_sock->async_read_some(b, done); break;
            case transport::tls: im.tls->async_read_some(b, done); break;
            case transport::unix_stream: im.unix_stream->async_read_some(b, done); break;
            case transport::udp: im.udp_sock->async_receive(b, done); break;
            case transport::unix_dgram: im.unix_dgram->async_receive(b, done); break;
        }
    });
    out.append(buf, n);
    if (ec) {
        net_error err{classify(ec, timed_out),
                      timed_out ? fmt::format("{}: no reply within {} ms", describe(),
                                              cfg_.io_timeout.count())
                                : fmt::format("{}: read: {}", describe(), ssl_error_text(ec))};
        close();
        return err;
    }
    return {};
}

bool connection::peer_closed() {
    auto& im = *impl_;
    if (!im.open) return false;
    tcp::socket* raw = nullptr;
    if (im.tcp_sock) raw = &*im.tcp_sock;
    if (im.tls) raw = &im.tls->next_layer();
    if (!raw && !im.unix_stream) return false;  // datagrams: nothing to check
    char c[4096];
    error_code ec;
    bool closed = false;
    auto check = [&](auto& s) {
        s.non_blocking(true, ec);
        std::size_t n = s.receive(asio::buffer(c, 1), asio::socket_base::message_peek, ec);
        (void)n;
        if (ec == asio::error::would_block || ec == asio::error::try_again) {
            ec = {};
        } else if (ec) {
            closed = true;
        } else if (!im.tls) {
            // Unsolicited bytes on a plain stream: discard them, noticing EOF behind them.
            for (;;) {
                s.receive(asio::buffer(c), 0, ec);
                if (ec == asio::error::would_block || ec == asio::error::try_again) break;
                if (ec) {
                    closed = true;
                    break;
                }
            }
        } else {
            // TLS records (session tickets, alerts, close_notify): let OpenSSL consume them.
            for (;;) {
                im.tls->read_some(asio::buffer(c), ec);
                if (ec == asio::error::would_block || ec == asio::error::try_again) break;
                if (ec) {
                    closed = true;
                    break;
                }
            }
        }
        error_code ignored;
        if (s.is_open()) s.non_blocking(false, ignored);
    };
    if (raw) check(*raw);
    else check(*im.unix_stream);
    if (closed) close();
    return closed;
}

}  // namespace fastret::net
