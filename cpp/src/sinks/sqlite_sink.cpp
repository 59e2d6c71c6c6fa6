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
    sqlite_sink(std::string name, std::filesystem::path path, int busy_timeout_ms,
                bool synchronous_full)
        : name_(std::move(name)), path_(std::move(path)), busy_timeout_ms_(busy_timeout_ms),
          synchronous_full_(synchronous_full) {}

    std::string_view type() const noexcept override { return "sqlite"; }

    write_result write(std::span<const record> batch) noexcept override {
        if (closed_) return {write_status::fatal, "sqlite: sink closed", 0};
        if (!store_) {
            // Opened on the first batch, not when the sink is built: a database that cannot be
            // opened yet (busy, directory missing, not a database, old schema) must not stop
            // records from reaching the spool; they wait there while this is retried.
            try {
                std::error_code ec;
                auto parent = path_.parent_path();
                // The job store lives under Salt's cachedir, which may not have a fastret/
                // directory yet; created owner-only, job returns are not for other users.
                if (!parent.empty() && std::filesystem::create_directories(parent, ec))
                    std::filesystem::permissions(parent, std::filesystem::perms::owner_all, ec);
                store_ = std::make_unique<sqlite_store>(path_, busy_timeout_ms_, synchronous_full_);
            } catch (const std::exception& e) {
                return {write_status::retry, e.what(), 0};
            }
        }
        return store_->write(batch);
    }

    void close() noexcept override {
        closed_ = true;
        store_.reset();
    }

private:
    std::string name_;
    std::filesystem::path path_;
    int busy_timeout_ms_;
    bool synchronous_full_;
    std::unique_ptr<sqlite_store> store_;
    bool closed_ = false;
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
    return std::make_unique<sqlite_sink>(name, opts.get_string("path"),
                                         static_cast<int>(opts.get_int("busy_timeout_ms")),
                                         opts.get_string("synchronous") == "full");
}

}  // namespace fastret
