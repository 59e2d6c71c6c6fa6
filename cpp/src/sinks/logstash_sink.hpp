// logstash sink: ECS-shaped JSON lines over TCP/TLS (Logstash tcp input, json_lines codec),
// HTTP(S) POST batches (Logstash http input), GELF (TCP, NUL-framed) and CEF lines.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "fastret/config.hpp"
#include "fastret/sink.hpp"

namespace fastret {
const std::vector<option_spec>& logstash_sink_options();
std::unique_ptr<sink> make_logstash_sink(const std::string& name, const options& opts);
}  // namespace fastret
