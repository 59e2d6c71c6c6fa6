#include "net/tls.hpp"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cctype>

namespace fastret::net {

namespace asio = boost::asio;

const std::vector<option_spec>& tls_option_specs() {
    using T = option_type;
    static const std::vector<option_spec> table = {
        {"tls_verify", T::boolean, "true", false, INT64_MIN, INT64_MAX, {},
         "verify the server's certificate chain and name (TLS transports); false is logged as "
         "a warning at every start"},
        {"tls_ca_file", T::string, "", false, INT64_MIN, INT64_MAX, {},
         "CA certificates (PEM) the server's certificate is checked against; empty: the "
         "system's store"},
        {"tls_cert_file", T::string, "", false, INT64_MIN, INT64_MAX, {},
         "client certificate chain (PEM) for mutual TLS, with tls_key_file"},
        {"tls_key_file", T::string, "", false, INT64_MIN, INT64_MAX, {},
         "private key (PEM) of tls_cert_file"},
        {"tls_key_password", T::string, "", false, INT64_MIN, INT64_MAX, {},
         "password of an encrypted tls_key_file", true},
        {"tls_server_name", T::string, "", false, INT64_MIN, INT64_MAX, {},
         "name the server's certificate must carry, sent as SNI; empty: host"},
        {"tls_pin_sha256", T::string_list, "", false, INT64_MIN, INT64_MAX, {},
         "accepted SHA-256 digests of the server's public key (SPKI), as sha256//<base64> or "
         "hex; checked after the chain; empty: no pinning"},
        {"tls_min_version", T::choice, "1.2", false, INT64_MIN, INT64_MAX, {"1.2", "1.3"},
         "lowest TLS version accepted"},
    };
    return table;
}

bool parse_pin(const std::string& text, std::array<unsigned char, 32>& out) {
    std::string_view t = text;
    if (t.starts_with("sha256//")) {
        t.remove_prefix(8);
        if (t.size() != 44) return false;
        unsigned char buf[48];
        int n = EVP_DecodeBlock(buf, reinterpret_cast<const unsigned char*>(t.data()), 44);
        if (n != 33 || t[43] != '=') return false;  // 32 bytes + 1 pad byte
        std::copy(buf, buf + 32, out.begin());
        return true;
    }
    std::string hex;
    for (char c : t)
        if (c != ':') hex.push_back(c);
    if (hex.size() != 64) return false;
    for (std::size_t i = 0; i < 32; ++i) {
        auto nib = [](char c) -> int {
            if (c >= '0' && c <= '9') return c - '0';
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            return -1;
        };
        int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = static_cast<unsigned char>(hi * 16 + lo);
    }
    return true;
}

std::array<unsigned char, 32> spki_sha256(const void* x509) {
    std::array<unsigned char, 32> out{};
    auto* cert = static_cast<X509*>(const_cast<void*>(x509));
    unsigned char* der = nullptr;
    int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    if (len > 0) {
        unsigned int n = 0;
        EVP_Digest(der, static_cast<std::size_t>(len), out.data(), &n, EVP_sha256(), nullptr);
    }
    OPENSSL_free(der);
    return out;
}

std::string pin_text(const std::array<unsigned char, 32>& d) {
    unsigned char b64[48];
    int n = EVP_EncodeBlock(b64, d.data(), 32);
    return "sha256//" + std::string(reinterpret_cast<char*>(b64), static_cast<std::size_t>(n));
}

tls_config tls_config_from(const options& opts, const std::string& owner) {
    tls_config c;
    c.verify = opts.get_bool("tls_verify");
    c.ca_file = opts.get_string("tls_ca_file");
    c.cert_file = opts.get_string("tls_cert_file");
    c.key_file = opts.get_string("tls_key_file");
    c.key_password = opts.get_string("tls_key_password");
    c.server_name = opts.get_string("tls_server_name");
    c.min_version = opts.get_string("tls_min_version") == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION;
    static const std::vector<std::string> none;
    const auto& pins = opts.has("tls_pin_sha256") ? opts.get_list("tls_pin_sha256") : none;
    for (const auto& p : pins) {
        std::array<unsigned char, 32> d;
        if (!parse_pin(p, d))
            throw config_error(fmt::format(
                "{}: tls_pin_sha256: '{}' is not a SHA-256 pin (sha256//<44 base64 chars> or "
                "64 hex digits)", owner, p.size() > 80 ? p.substr(0, 80) + "..." : p));
        c.pins.push_back(d);
    }
    if (c.cert_file.empty() != c.key_file.empty())
        throw config_error(fmt::format(
            "{}: tls_cert_file and tls_key_file go together (mutual TLS needs both)", owner));
    return c;
}

std::shared_ptr<asio::ssl::context> make_client_context(const tls_config& cfg,
                                                        const std::string& owner) {
    auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
    SSL_CTX_set_min_proto_version(ctx->native_handle(), cfg.min_version);
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_compression);
    boost::system::error_code ec;
    if (cfg.verify) {
        ctx->set_verify_mode(asio::ssl::verify_peer, ec);
        if (!cfg.ca_file.empty()) {
            ctx->load_verify_file(cfg.ca_file, ec);
            if (ec)
                throw config_error(fmt::format("{}: tls_ca_file {}: cannot load CA certificates: {}",
                                               owner, cfg.ca_file, ec.message()));
        } else {
            ctx->set_default_verify_paths(ec);
            if (ec)
                throw config_error(fmt::format("{}: cannot load the system's CA store: {}", owner,
                                               ec.message()));
        }
    } else {
        ctx->set_verify_mode(asio::ssl::verify_none, ec);
    }
    if (!cfg.cert_file.empty()) {
        ctx->use_certificate_chain_file(cfg.cert_file, ec);
        if (ec)
            throw config_error(fmt::format("{}: tls_cert_file {}: {}", owner, cfg.cert_file,
                                           ec.message()));
        std::string pw = cfg.key_password;
        ctx->set_password_callback(
            [pw](std::size_t, asio::ssl::context::password_purpose) { return pw; }, ec);
        ctx->use_private_key_file(cfg.key_file, asio::ssl::context::pem, ec);
        if (ec)
            throw config_error(fmt::format("{}: tls_key_file {}: {} (wrong password?)", owner,
                                           cfg.key_file, ec.message()));
        if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
            throw config_error(fmt::format("{}: tls_key_file {} does not match tls_cert_file {}",
                                           owner, cfg.key_file, cfg.cert_file));
    }
    return ctx;
}

}  // namespace fastret::net
