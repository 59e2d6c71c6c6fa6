// TLS client settings shared by every network sink (syslog, logstash, later SMTP and HTTP).
//
// Defaults are the safe ones: the peer's certificate chain is verified (against tls_ca_file or
// the system store) and its name checked against the host (SNI sent for names); TLS 1.2 is
// the minimum. Turning verification off needs tls_verify: false and is reported as a warning
// every time the sink starts (sink::warnings()). Pinning (tls_pin_sha256) adds a check of the
// SHA-256 of the server certificate's SubjectPublicKeyInfo after the handshake, on top of
// (never instead of) the chain check.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/ssl/context.hpp>

#include "fastret/config.hpp"

namespace fastret::net {

struct tls_config {
    bool verify = true;
    std::string ca_file;       // empty: the system store
    std::string cert_file;     // client certificate chain (PEM), mutual TLS
    std::string key_file;      // its private key (PEM)
    std::string key_password;  // secret
    std::string server_name;   // name checked and sent as SNI; empty: the host
    std::vector<std::array<unsigned char, 32>> pins;  // SPKI SHA-256 digests; empty: no pinning
    int min_version = 0x0303;  // TLS1_2_VERSION
};

// The tls_* options, appended to a network sink's own table.
const std::vector<option_spec>& tls_option_specs();
// From validated options (throws config_error naming `owner` for a malformed pin or a client
// certificate without its key).
tls_config tls_config_from(const options& opts, const std::string& owner);
// A client context per the settings: CA store, client certificate/key, minimum version.
// Throws config_error when a file cannot be loaded (the path is named, never the password).
std::shared_ptr<boost::asio::ssl::context> make_client_context(const tls_config& cfg,
                                                               const std::string& owner);
// Parses a pin: "sha256//<base64>" (curl's form) or 64 hex digits (colons allowed).
bool parse_pin(const std::string& text, std::array<unsigned char, 32>& out);
// SHA-256 of the certificate's DER SubjectPublicKeyInfo (x509 is an X509*).
std::array<unsigned char, 32> spki_sha256(const void* x509);
std::string pin_text(const std::array<unsigned char, 32>& digest);  // "sha256//<base64>"

}  // namespace fastret::net
