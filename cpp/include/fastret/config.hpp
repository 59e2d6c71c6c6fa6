// Configuration as declared per sink: a table of options (key, type, default, bounds, doc),
// checked once at construction. Unknown keys, wrong types and out-of-range values are
// config_error exceptions naming the sink, the key and what is allowed.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace fastret {

class config_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

enum class option_type { string, integer, number, boolean, string_list, choice };

std::string_view to_string(option_type t) noexcept;

struct option_spec {
    std::string key;
    option_type type = option_type::string;
    std::string default_text;          // shown in docs; empty with required == true
    bool required = false;
    std::int64_t min = INT64_MIN;       // integer/number bounds (inclusive)
    std::int64_t max = INT64_MAX;
    std::vector<std::string> choices;  // for option_type::choice
    std::string doc;
    bool secret = false;                // never printed, logged or put in an error message
};

// A raw configuration value as handed over from Python (or a test).
using config_value = std::variant<std::monostate, bool, std::int64_t, double, std::string,
                                  std::vector<std::string>>;
using config_map = std::map<std::string, config_value>;

// A validated configuration: every key of the table present (defaults filled in).
class options {
public:
    options() = default;
    // Validates `raw` against `table`; throws config_error naming `owner` (e.g. "sink 'audit'
    // (file)") and the offending key.
    options(std::string owner, const std::vector<option_spec>& table, const config_map& raw);

    const std::string& get_string(const std::string& key) const;
    std::int64_t get_int(const std::string& key) const;
    double get_number(const std::string& key) const;
    bool get_bool(const std::string& key) const;
    const std::vector<std::string>& get_list(const std::string& key) const;
    bool has(const std::string& key) const;  // false when optional and not given, no default

private:
    const config_value& at(const std::string& key) const;
    std::string owner_;
    config_map values_;
};

// The table with, for every secret option `k`, two more: `k_file` (a file holding the secret,
// read when the options are validated; refused if group or others may read it) and `k_env`
// (an environment variable holding it). options() resolves them into `k`; at most one of the
// three may be set.
std::vector<option_spec> with_secret_sources(const std::vector<option_spec>& table);

// Runtime policy options shared by every sink (queue, batching, retry, spool); the sink's
// own table is merged with this one.
const std::vector<option_spec>& common_sink_options();

}  // namespace fastret
