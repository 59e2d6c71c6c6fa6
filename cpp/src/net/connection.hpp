// One client connection of a network sink: TCP, TLS over TCP, UDP, or a unix socket
// (datagram or stream), with a deadline on every step.
//
// The model is Boost.Beast's async-ssl client: asynchronous operations on a private
// io_context, each raced against a steady_timer; when the timer wins, the socket is closed
// and the step reports a timeout. The calling thread runs the io_context until the step is
// done, so write() is one blocking round trip for the runtime's worker and no thread is
// started. One operation is in flight at a time.
//
// After any error the connection is closed; the next open() reconnects. The runtime owns
// backoff (the sink returns retry).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "net/tls.hpp"

namespace fastret::net {

enum class transport { tcp, tls, udp, unix_dgram, unix_stream };

std::string_view to_string(transport t) noexcept;
bool is_stream(transport t) noexcept;

struct endpoint_config {
    transport kind = transport::tcp;
    std::string host = "localhost";
    std::uint16_t port = 0;
    std::string path;  // unix sockets
    // Name lookup (IP literals need none), TCP connect, TLS handshake: each within this.
    std::chrono::milliseconds connect_timeout{5000};
    std::chrono::milliseconds io_timeout{10000};      // each write, each read
    tls_config tls;
};

enum class net_errc {
    none,
    timeout,        // a deadline passed (the peer is slow or stalled)
    unreachable,    // resolve/connect failed: refused, no route, no such socket
    closed,         // the peer closed or reset the connection
    tls_verify,     // the server's certificate was refused (chain, expiry, name)
    tls_pin,        // the chain was fine but the key is not one of the pins
    tls,            // any other TLS failure (protocol version, handshake alert)
    io,             // any other socket error
};

struct net_error {
    net_errc code = net_errc::none;
    std::string message;
    explicit operator bool() const noexcept { return code != net_errc::none; }
};

class connection {
public:
    // `owner` prefixes config errors ("sink 'x' (syslog)"). Builds the TLS context at once so
    // that a bad certificate file is a configuration error, not a retry loop.
    connection(endpoint_config cfg, const std::string& owner);
    ~connection();
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    // Connects (and handshakes) unless open. Nothing is sent before the handshake and the
    // certificate, name and pin checks have passed.
    net_error open();
    bool is_open() const noexcept;
    // Stream transports: writes all of `data` (one write in flight, deadline io_timeout).
    // Datagram transports: sends `data` as one datagram.
    net_error write(std::string_view data);
    // Reads what is available (at least one byte) into `out` (appended), deadline io_timeout.
    net_error read_some(std::string& out);
    // Stream transports: true if the peer has closed or reset the connection (checked without
    // blocking; TLS records such as session tickets are consumed). Closes it then.
    bool peer_closed();
    void close() noexcept;
    // Ends a stream connection the orderly way, for a sink that is closing: FIN after the data
    // already written, then what the peer still sends (a TLS session ticket, its own FIN) read
    // and discarded for up to `linger`, then close. Closing with unread data pending makes the
    // kernel send RST, and a peer that has not read everything yet then drops it: the batches
    // reported as written would be lost. Datagram transports just close.
    void finish(std::chrono::milliseconds linger) noexcept;

    // "tls://localhost:6514", "unix:/dev/log"
    std::string describe() const;
    const endpoint_config& config() const noexcept { return cfg_; }
    // Handshakes refused by a certificate, name or pin check since construction.
    std::uint64_t verify_failures() const noexcept { return verify_failures_; }

private:
    struct impl;
    endpoint_config cfg_;
    std::unique_ptr<impl> impl_;
    std::uint64_t verify_failures_ = 0;
};

}  // namespace fastret::net
