// sqlite sink: a job_store_sink over a sqlite_store (one transaction per batch).
#include "sinks/sqlite_sink.hpp"

#include <filesystem>
#include <system_error>

#include "fastret/sqlite_store.hpp"
#include "sinks/job_store_sink.hpp"

namespace fastret {

const std::vector<option_spec>& sqlite_sink_options() {
    using T = option_type;
    static const std::vector<option_spec> table = {
        {"path", T::string, "", true, INT64_MIN, INT64_MAX, {}, "database file"},
        {"busy_timeout_ms", T::integer, "5000", false, 0, 600000, {},
         "how long a write waits for another writer's lock before it is retried"},
        {"synchronous", T::choice, "full", false, INT64_MIN, INT64_MAX, {"normal", "full"},
         "SQLite synchronous mode: full (fsync per committed batch: ok means durable) or normal "
         "(survives a process crash, may lose the last commits on power loss)"},
    };
    return table;
}

std::unique_ptr<sink> make_sqlite_sink(const std::string&, const options& opts) {
    return make_job_store_sink("sqlite", opts);
}

std::unique_ptr<job_store> open_sqlite_store(const options& opts) {
    std::filesystem::path path = opts.get_string("path");
    std::error_code ec;
    auto parent = path.parent_path();
    // The job store lives under Salt's cachedir, which may not have a fastret/ directory yet;
    // created owner-only, job returns are not for other users.
    if (!parent.empty() && std::filesystem::create_directories(parent, ec))
        std::filesystem::permissions(parent, std::filesystem::perms::owner_all, ec);
    return std::make_unique<sqlite_store>(path, static_cast<int>(opts.get_int("busy_timeout_ms")),
                                          opts.get_string("synchronous") == "full");
}

std::string sqlite_schema(const std::string&, const std::string&) { return sqlite_schema_sql(); }

// SQLite has no roles; opening a store creates (or completes) the schema.
void apply_sqlite_schema(const options& opts, const std::string&, const std::string&) {
    open_sqlite_store(opts);
}

}  // namespace fastret
