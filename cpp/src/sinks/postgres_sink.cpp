// postgres sink: a job_store_sink over a pg_store (one transaction and one round trip per
// batch). Option keys are those of Salt's stock pgjsonb returner where it has them, so that
// falling back to `returner.pgjsonb.<key>` is a plain rename.
#include "sinks/postgres_sink.hpp"

#include <algorithm>

#include "sinks/job_store_sink.hpp"

namespace fastret {

const std::vector<option_spec>& postgres_sink_options() {
    using T = option_type;
    constexpr auto lo = INT64_MIN, hi = INT64_MAX;
    static const std::vector<option_spec> table = {
        {"host", T::string, "localhost", false, lo, hi, {},
         "server host name or address; a path starting with / is a Unix socket directory"},
        {"port", T::integer, "5432", false, 1, 65535, {}, "server port"},
        {"db", T::string, "salt", false, lo, hi, {}, "database name"},
        {"user", T::string, "salt", false, lo, hi, {}, "user name"},
        {"pass", T::string, "", false, lo, hi, {},
         "password (empty: none, libpq may then use PGPASSWORD or ~/.pgpass)", true},
        {"sslmode", T::choice, "verify-full", false, lo, hi,
         {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"},
         "TLS: verify-full (default) encrypts and verifies the server's certificate and name "
         "against sslrootcert; require encrypts without verifying; disable/allow/prefer may "
         "send everything in clear text"},
        {"sslrootcert", T::string, "", false, lo, hi, {},
         "CA certificate file that verifies the server (verify-ca, verify-full)"},
        {"sslcert", T::string, "", false, lo, hi, {}, "client certificate file (mutual TLS)"},
        {"sslkey", T::string, "", false, lo, hi, {}, "client private key file (mutual TLS)"},
        {"sslcrl", T::string, "", false, lo, hi, {},
         "certificate revocation list file checked against the server's certificate"},
        {"dsn", T::string, "", false, lo, hi, {},
         "a libpq connection string or URI; host, port, db, user and sslmode override it "
         "when set to something other than their defaults, pass and the ssl* files when set"},
        {"connect_timeout_ms", T::integer, "3000", false, 100, 600000, {},
         "longest connection attempt; an unreachable server is retried later"},
        {"statement_timeout_ms", T::integer, "30000", false, 100, 86400000, {},
         "server-side statement timeout; also the longest a batch or read waits without any "
         "answer before the connection is dropped and the batch retried"},
        {"create_schema", T::boolean, "true", false, lo, hi, {},
         "create or upgrade the tables and indexes on first use when they are incomplete "
         "(needs a user allowed to; else run `fastret schema postgres --apply`)"},
        {"archive", T::boolean, "false", false, lo, hi, {},
         "clean_old_jobs moves old rows into jids_archive, salt_returns_archive and "
         "salt_events_archive instead of deleting them"},
    };
    return table;
}

namespace {

const option_spec& spec(const std::string& key) {
    const auto& table = postgres_sink_options();
    return *std::find_if(table.begin(), table.end(),
                         [&](const option_spec& o) { return o.key == key; });
}

// A connection parameter set by the user, or nothing when it is still the default (then a
// dsn may provide it, or the store uses the same default).
std::optional<std::string> given(const options& opts, const std::string& key) {
    const auto& o = spec(key);
    std::string value = o.type == option_type::integer ? std::to_string(opts.get_int(key))
                                                       : opts.get_string(key);
    if (value == o.default_text) return std::nullopt;
    return value;
}

}  // namespace

void apply_postgres_schema_options(const options& opts, const std::string& writer_role,
                                   const std::string& reader_role) {
    pg_store::apply_schema(postgres_store_config(opts), writer_role, reader_role);
}

pg_store_config postgres_store_config(const options& opts) {
    pg_store_config cfg;
    cfg.host = given(opts, "host");
    cfg.port = given(opts, "port");
    cfg.dbname = given(opts, "db");
    cfg.user = given(opts, "user");
    cfg.sslmode = given(opts, "sslmode");
    cfg.password = opts.get_string("pass");
    cfg.sslrootcert = opts.get_string("sslrootcert");
    cfg.sslcert = opts.get_string("sslcert");
    cfg.sslkey = opts.get_string("sslkey");
    cfg.sslcrl = opts.get_string("sslcrl");
    cfg.dsn = opts.get_string("dsn");
    cfg.connect_timeout_ms = static_cast<int>(opts.get_int("connect_timeout_ms"));
    cfg.statement_timeout_ms = static_cast<int>(opts.get_int("statement_timeout_ms"));
    cfg.create_schema = opts.get_bool("create_schema");
    cfg.archive = opts.get_bool("archive");
    return cfg;
}

std::unique_ptr<sink> make_postgres_sink(const std::string&, const options& opts) {
    return make_job_store_sink("postgres", opts);
}

std::unique_ptr<job_store> open_postgres_store(const options& opts) {
    return std::make_unique<pg_store>(postgres_store_config(opts));
}

}  // namespace fastret
