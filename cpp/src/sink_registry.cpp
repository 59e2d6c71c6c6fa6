#include <fmt/format.h>

#include <algorithm>

#include "fastret/job_store.hpp"
#include "fastret/sink.hpp"
#include "sinks/file_sink.hpp"
#include "sinks/logstash_sink.hpp"
#include "sinks/mysql_sink.hpp"
#include "sinks/postgres_sink.hpp"
#include "sinks/sqlite_sink.hpp"
#include "sinks/syslog_sink.hpp"

namespace fastret {

std::string_view to_string(write_status s) noexcept {
    switch (s) {
        case write_status::ok: return "ok";
        case write_status::retry: return "retry";
        case write_status::drop: return "drop";
        case write_status::fatal: return "fatal";
    }
    return "?";
}

// One line per backend.
const std::vector<sink_type_info>& sink_types() {
    static const std::vector<sink_type_info> types = {
        {"file", "JSON lines appended to a local file, size-based rotation", &file_sink_options(),
         &make_file_sink},
        {"sqlite", "embedded job cache and event store (SQLite, WAL mode)", &sqlite_sink_options(),
         &make_sqlite_sink, &open_sqlite_store, &sqlite_schema, &apply_sqlite_schema},
        {"postgres", "job cache and event store in PostgreSQL (pgjsonb-compatible tables, TLS)",
         &postgres_sink_options(), &make_postgres_sink, &open_postgres_store, &postgres_schema,
         &apply_postgres_schema_options},
        {"mysql", "MariaDB job cache and event store (saltext-mysql schema)", &mysql_sink_options(),
         &make_mysql_sink, &open_mysql_store, &mysql_schema, &apply_mysql_schema_options},
        {"syslog", "RFC 5424/3164 syslog over UDP, TCP, TLS (RFC 5425) or the local socket",
         &syslog_sink_options(), &make_syslog_sink},
        {"logstash", "ECS JSON lines over TCP/TLS, HTTP(S) batches, GELF or CEF to Logstash",
         &logstash_sink_options(), &make_logstash_sink},
    };
    return types;
}

const sink_type_info* find_sink_type(std::string_view type) {
    for (const auto& t : sink_types())
        if (t.type == type) return &t;
    return nullptr;
}

options validate_sink_options(const std::string& name, const sink_type_info& info,
                              const config_map& raw) {
    std::vector<option_spec> table = with_secret_sources(*info.option_table);
    const auto& common = common_sink_options();
    table.insert(table.end(), common.begin(), common.end());
    return options(fmt::format("sink '{}' ({})", name, info.type), table, raw);
}

namespace {

const sink_type_info& sink_type_or_throw(const std::string& name, const std::string& type) {
    const auto* info = find_sink_type(type);
    if (!info) {
        std::vector<std::string> known;
        for (const auto& t : sink_types()) known.push_back(t.type);
        throw config_error(fmt::format("sink '{}': unknown type '{}'; known types: {}", name, type,
                                       fmt::join(known, ", ")));
    }
    return *info;
}

const sink_type_info& store_type_or_throw(const std::string& type) {
    const auto& info = sink_type_or_throw("job store", type);
    if (!info.open_store) {
        std::vector<std::string> known;
        for (const auto& t : sink_types())
            if (t.open_store) known.push_back(t.type);
        throw config_error(fmt::format("sink type '{}' has no job store; types with one: {}", type,
                                       fmt::join(known, ", ")));
    }
    return info;
}

}  // namespace

std::unique_ptr<sink> make_sink(const std::string& name, const std::string& type,
                                const config_map& raw, options* validated_out) {
    const auto& info = sink_type_or_throw(name, type);
    options opts = validate_sink_options(name, info, raw);
    auto s = info.create(name, opts);
    if (validated_out) *validated_out = std::move(opts);
    return s;
}

std::unique_ptr<job_store> open_job_store(const std::string& type, const options& opts) {
    return store_type_or_throw(type).open_store(opts);
}

std::string job_store_schema(const std::string& type, const std::string& writer_role,
                             const std::string& reader_role) {
    const auto& info = store_type_or_throw(type);
    if (!info.schema) throw config_error(fmt::format("sink type '{}' has no schema", type));
    return info.schema(writer_role, reader_role);
}

void apply_job_store_schema(const std::string& type, const options& opts,
                            const std::string& writer_role, const std::string& reader_role) {
    const auto& info = store_type_or_throw(type);
    if (!info.apply_schema) throw config_error(fmt::format("sink type '{}' has no schema", type));
    info.apply_schema(opts, writer_role, reader_role);
}

}  // namespace fastret
