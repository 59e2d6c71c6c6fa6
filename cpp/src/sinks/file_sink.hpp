// file sink: JSON lines, size-based rotation.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "fastret/config.hpp"
#include "fastret/sink.hpp"

namespace fastret {
const std::vector<option_spec>& file_sink_options();
std::unique_ptr<sink> make_file_sink(const std::string& name, const options& opts);
}  // namespace fastret
