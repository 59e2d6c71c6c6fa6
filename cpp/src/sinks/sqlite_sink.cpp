// sqlite sink: delivers batches to a sqlite_store (one transaction per batch).
#include "sinks/sqlite_sink.hpp"

#include <filesystem>
#include <system_error>
#include <utility>

#include "fastret/sqlite_store.hpp"

namespace fastret {

namespace {

class sqlite_sink final : public sink {
public:
    sqlite_sink(std::string name, std::unique_ptr<sqlite_store> store)
        : name_(std::move(name)), store_(std::move(store)) {}

    std::string_view type() const noexcept override { return "sqlite"; }

    write_result write(std::span<const record> batch) noexcept override {
        if (!store_) {
            write_result r;
            r.status = write_status::fatal;
            try {
                r.error = "sink '" + name_ + "' (sqlite): closed";
            } catch (...) {
            }
            return r;
        }
        return store_->write(batch);
    }

    void close() noexcept override { store_.reset(); }

private:
    std::string name_;
    std::unique_ptr<sqlite_store> store_;
};

}  // namespace

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

std::unique_ptr<sink> make_sqlite_sink(const std::string& name, const options& opts) {
    // The job store lives under Salt's cachedir, which may not have a fastret/ directory yet.
    // Created owner-only: job returns are not for other local users.
    auto parent = std::filesystem::path(opts.get_string("path")).parent_path();
    std::error_code ec;
    if (!parent.empty() && std::filesystem::create_directories(parent, ec))
        std::filesystem::permissions(parent, std::filesystem::perms::owner_all, ec);
    auto store = std::make_unique<sqlite_store>(
        opts.get_string("path"), static_cast<int>(opts.get_int("busy_timeout_ms")),
        opts.get_string("synchronous") == "full");
    return std::make_unique<sqlite_sink>(name, std::move(store));
}

}  // namespace fastret
