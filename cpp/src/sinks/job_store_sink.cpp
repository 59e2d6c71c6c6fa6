// job_store_sink: delivers batches to a job_store, opening it lazily.
#include "sinks/job_store_sink.hpp"

#include <exception>
#include <utility>

#include "fastret/job_store.hpp"

namespace fastret {

namespace {

class job_store_sink final : public sink {
public:
    job_store_sink(std::string type, options opts) : type_(std::move(type)), opts_(std::move(opts)) {}

    std::string_view type() const noexcept override { return type_; }

    write_result write(std::span<const record> batch) noexcept override {
        if (closed_) return {write_status::fatal, type_ + ": sink closed", 0};
        if (!store_) {
            // Opened on the first batch, not when the sink is built: a database that is down,
            // busy or not created yet must not stop records from reaching the spool; they
            // wait there while the open is retried (or, when the store says fatal: bad
            // credentials, schema missing, kept there until someone acts).
            try {
                store_ = open_job_store(type_, opts_);
            } catch (const store_error& e) {
                return {e.status == write_status::ok ? write_status::retry : e.status, e.what(), 0};
            } catch (const std::exception& e) {
                return {write_status::retry, e.what(), 0};
            }
        }
        auto res = store_->write(batch);
        // A store that lost its connection reconnects by itself on the next write; one whose
        // state is unknown after a fatal error is reopened from scratch.
        if (res.status == write_status::fatal) store_.reset();
        return res;
    }

    void close() noexcept override {
        closed_ = true;
        store_.reset();
    }

private:
    std::string type_;
    options opts_;
    std::unique_ptr<job_store> store_;
    bool closed_ = false;
};

}  // namespace

std::unique_ptr<sink> make_job_store_sink(const std::string& type, const options& opts) {
    return std::make_unique<job_store_sink>(type, opts);
}

}  // namespace fastret
