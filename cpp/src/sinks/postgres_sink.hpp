// postgres sink: the job cache and event store in PostgreSQL (see fastret/pg_store.hpp).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "fastret/config.hpp"
#include "fastret/job_store.hpp"
#include "fastret/pg_store.hpp"
#include "fastret/sink.hpp"

namespace fastret {
const std::vector<option_spec>& postgres_sink_options();
std::unique_ptr<sink> make_postgres_sink(const std::string& name, const options& opts);
std::unique_ptr<job_store> open_postgres_store(const options& opts);
void apply_postgres_schema_options(const options& opts, const std::string& writer_role,
                                   const std::string& reader_role);
}  // namespace fastret
