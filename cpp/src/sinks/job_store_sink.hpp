// The sink of every database backend: one job_store, opened on the first batch, written one
// batch per transaction (see fastret/job_store.hpp for the write semantics).
#pragma once
#include <memory>
#include <string>

#include "fastret/config.hpp"
#include "fastret/sink.hpp"

namespace fastret {
// `type` names the registered backend whose open_store() builds the store from `opts`.
std::unique_ptr<sink> make_job_store_sink(const std::string& type, const options& opts);
}  // namespace fastret
