// sqlite sink: the embedded job cache and event store (see fastret/sqlite_store.hpp).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "fastret/config.hpp"
#include "fastret/job_store.hpp"
#include "fastret/sink.hpp"

namespace fastret {
const std::vector<option_spec>& sqlite_sink_options();
std::unique_ptr<sink> make_sqlite_sink(const std::string& name, const options& opts);
std::unique_ptr<job_store> open_sqlite_store(const options& opts);
std::string sqlite_schema(const std::string& writer_role, const std::string& reader_role);
void apply_sqlite_schema(const options& opts, const std::string& writer_role,
                         const std::string& reader_role);
}  // namespace fastret
