// syslog sink: RFC 5424 (or 3164) messages over UDP, TCP, TLS (RFC 5425) or a local unix
// datagram socket (/dev/log).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "fastret/config.hpp"
#include "fastret/sink.hpp"

namespace fastret {
const std::vector<option_spec>& syslog_sink_options();
// Throws config_error for contradicting options (unknown facility or level name, a client
// certificate without its key, an unreadable CA file). Connects on the first batch.
std::unique_ptr<sink> make_syslog_sink(const std::string& name, const options& opts);
}  // namespace fastret
