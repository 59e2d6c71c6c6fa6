// mysql sink: a job_store_sink over a mysql_store (one transaction per batch).
#include "sinks/mysql_sink.hpp"

#include <fmt/format.h>

#include "sinks/job_store_sink.hpp"

namespace fastret {

const std::vector<option_spec>& mysql_sink_options() {
    using T = option_type;
    static const std::vector<option_spec> table = {
        {"host",
         T::string,
         "localhost",
         false,
         INT64_MIN,
         INT64_MAX,
         {},
         "server host name or address, always over TCP (localhost too); with ssl_mode "
         "verify_identity it must be a name (or IP address) in the server's certificate"},
        {"port", T::integer, "3306", false, 1, 65535, {}, "server TCP port"},
        {"unix_socket",
         T::string,
         "",
         false,
         INT64_MIN,
         INT64_MAX,
         {},
         "path of the server's unix socket; when set, host and port are not used (TLS still "
         "applies per ssl_mode, the certificate checked against the name localhost)"},
        {"db", T::string, "salt", false, INT64_MIN, INT64_MAX, {}, "database (must exist)"},
        {"user", T::string, "salt", false, INT64_MIN, INT64_MAX, {}, "user name"},
        {"pass", T::string, "", false, INT64_MIN, INT64_MAX, {}, "password", true},
        {"ssl_ca",
         T::string,
         "",
         false,
         INT64_MIN,
         INT64_MAX,
         {},
         "CA certificate file (PEM) the server's certificate is checked against; empty: the "
         "system's CAs"},
        {"ssl_cert",
         T::string,
         "",
         false,
         INT64_MIN,
         INT64_MAX,
         {},
         "client certificate file (PEM) for mutual TLS, with ssl_key"},
        {"ssl_key",
         T::string,
         "",
         false,
         INT64_MIN,
         INT64_MAX,
         {},
         "private key file (PEM) of ssl_cert"},
        {"ssl_mode",
         T::choice,
         "verify_identity",
         false,
         INT64_MIN,
         INT64_MAX,
         {"verify_identity", "verify_ca", "required", "disabled"},
         "verify_identity: TLS, certificate chain and host name checked; verify_ca: TLS, chain "
         "checked against ssl_ca, name not; required: TLS without any check (encrypted, not "
         "authenticated); disabled: no TLS (trusted networks and unix sockets only)"},
        {"connect_timeout_ms",
         T::integer,
         "5000",
         false,
         1,
         600000,
         {},
         "how long a connect (TCP, TLS handshake, login) may take; rounded up to whole seconds"},
        {"read_timeout_ms",
         T::integer,
         "30000",
         false,
         1,
         3600000,
         {},
         "how long a statement may wait for the server's reply; rounded up to whole seconds "
         "(lock waits end at half of it, as a retry)"},
        {"write_timeout_ms",
         T::integer,
         "30000",
         false,
         1,
         3600000,
         {},
         "how long sending a statement may block; rounded up to whole seconds"},
        {"create_schema",
         T::boolean,
         "true",
         false,
         INT64_MIN,
         INT64_MAX,
         {},
         "create (or upgrade a stock saltext-mysql) schema on open when incomplete; needs "
         "CREATE and ALTER privileges"},
        {"archive",
         T::boolean,
         "false",
         false,
         INT64_MIN,
         INT64_MAX,
         {},
         "clean_old_jobs moves old rows to jids_archive, salt_returns_archive and "
         "salt_events_archive instead of deleting them"},
        {"bulk_events",
         T::boolean,
         "true",
         false,
         INT64_MIN,
         INT64_MAX,
         {},
         "write events as one prepared INSERT with an array of parameter sets per request "
         "(MariaDB's bulk execute: the server parses no SQL per row); multi-row INSERT text "
         "when false or when the server lacks it (MySQL)"},
    };
    return table;
}

void apply_mysql_schema_options(const options& opts, const std::string& writer_role,
                                const std::string& reader_role) {
    apply_mysql_schema(mysql_config_from(opts), writer_role, reader_role);
}

mysql_config mysql_config_from(const options& opts) {
    mysql_config c;
    c.host = opts.get_string("host");
    c.port = static_cast<unsigned>(opts.get_int("port"));
    c.unix_socket = opts.get_string("unix_socket");
    c.db = opts.get_string("db");
    c.user = opts.get_string("user");
    c.password = opts.get_string("pass");
    c.ssl_ca = opts.get_string("ssl_ca");
    c.ssl_cert = opts.get_string("ssl_cert");
    c.ssl_key = opts.get_string("ssl_key");
    const auto& mode = opts.get_string("ssl_mode");
    c.ssl_mode = mode == "disabled"    ? mysql_ssl_mode::disabled
                 : mode == "required"  ? mysql_ssl_mode::required
                 : mode == "verify_ca" ? mysql_ssl_mode::verify_ca
                                       : mysql_ssl_mode::verify_identity;
    c.connect_timeout_ms = static_cast<unsigned>(opts.get_int("connect_timeout_ms"));
    c.read_timeout_ms = static_cast<unsigned>(opts.get_int("read_timeout_ms"));
    c.write_timeout_ms = static_cast<unsigned>(opts.get_int("write_timeout_ms"));
    c.create_schema = opts.get_bool("create_schema");
    c.archive = opts.get_bool("archive");
    c.bulk_events = opts.get_bool("bulk_events");
    if (c.db.empty()) throw config_error("mysql: option 'db' must not be empty");
    if (c.unix_socket.empty() && c.host.empty())
        throw config_error("mysql: option 'host' must not be empty (or set unix_socket)");
    if (c.ssl_mode == mysql_ssl_mode::verify_ca && c.ssl_ca.empty())
        throw config_error(
            "mysql: ssl_mode verify_ca needs ssl_ca (the CA the server's certificate is checked "
            "against)");
    if (c.ssl_cert.empty() != c.ssl_key.empty())
        throw config_error("mysql: options 'ssl_cert' and 'ssl_key' go together");
    return c;
}

std::unique_ptr<sink> make_mysql_sink(const std::string&, const options& opts) {
    (void)mysql_config_from(opts);  // contradictions are configuration errors, found now
    return make_job_store_sink("mysql", opts);
}

std::unique_ptr<job_store> open_mysql_store(const options& opts) {
    return std::make_unique<mysql_store>(mysql_config_from(opts));
}

}  // namespace fastret
