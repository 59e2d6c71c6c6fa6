// mysql sink: the job cache and event store in MariaDB (see fastret/mysql_store.hpp).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "fastret/config.hpp"
#include "fastret/job_store.hpp"
#include "fastret/mysql_store.hpp"
#include "fastret/sink.hpp"

namespace fastret {
// Option keys are saltext-mysql's (host, port, db, user, pass, ssl_ca, ssl_cert, ssl_key), so
// that falling back to `mysql.<key>` is a plain rename.
const std::vector<option_spec>& mysql_sink_options();
// Throws config_error for options that contradict each other (verify_ca without ssl_ca, a
// client certificate without its key). Connects on the first batch, not here.
std::unique_ptr<sink> make_mysql_sink(const std::string& name, const options& opts);
std::unique_ptr<job_store> open_mysql_store(const options& opts);
void apply_mysql_schema_options(const options& opts, const std::string& writer_role,
                                const std::string& reader_role);
}  // namespace fastret
