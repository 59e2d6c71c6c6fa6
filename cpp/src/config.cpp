#include "fastret/config.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace fastret {

std::string_view to_string(option_type t) noexcept {
    switch (t) {
        case option_type::string: return "string";
        case option_type::integer: return "integer";
        case option_type::number: return "number";
        case option_type::boolean: return "boolean";
        case option_type::string_list: return "list of strings";
        case option_type::choice: return "choice";
    }
    return "?";
}

namespace {

std::string allowed_keys(const std::vector<option_spec>& table) {
    std::vector<std::string> keys;
    for (const auto& o : table) keys.push_back(o.key);
    std::sort(keys.begin(), keys.end());
    return fmt::format("{}", fmt::join(keys, ", "));
}

std::string describe_value(const config_value& v, bool secret) {
    if (secret) return "<secret>";
    struct visitor {
        std::string operator()(std::monostate) const { return "null"; }
        std::string operator()(bool b) const { return b ? "true" : "false"; }
        std::string operator()(std::int64_t i) const { return std::to_string(i); }
        std::string operator()(double d) const { return fmt::format("{}", d); }
        std::string operator()(const std::string& s) const {
            return fmt::format("'{}'", s.size() > 64 ? s.substr(0, 64) + "..." : s);
        }
        std::string operator()(const std::vector<std::string>& l) const {
            return fmt::format("a list of {} strings", l.size());
        }
    };
    return std::visit(visitor{}, v);
}

// Parse a default given as text into the option's type (tables are written as text so that
// the same table renders the docs).
config_value parse_default(const option_spec& o) {
    const auto& t = o.default_text;
    switch (o.type) {
        case option_type::string:
        case option_type::choice: return t;
        case option_type::integer: return static_cast<std::int64_t>(std::stoll(t, nullptr, 0));
        case option_type::number: return std::stod(t);
        case option_type::boolean: return t == "true";
        case option_type::string_list: {
            std::vector<std::string> items;
            std::size_t start = 0;
            while (start < t.size()) {
                auto comma = t.find(',', start);
                if (comma == std::string::npos) comma = t.size();
                if (comma > start) items.push_back(t.substr(start, comma - start));
                start = comma + 1;
            }
            return items;
        }
    }
    return std::monostate{};
}

// The secret held by `path` (one trailing newline cut, as editors and `echo` add one).
std::string read_secret_file(const std::string& owner, const std::string& key,
                             const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        throw config_error(fmt::format("{}: option '{}': cannot open '{}': {}", owner, key, path,
                                       std::strerror(errno)));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw config_error(
            fmt::format("{}: option '{}': '{}' is not a regular file", owner, key, path));
    }
    if ((st.st_mode & 077) != 0) {
        ::close(fd);
        throw config_error(fmt::format(
            "{}: option '{}': '{}' may be read by group or others (mode {:04o}); a secret file "
            "must be private to its owner (chmod 600)",
            owner, key, path, st.st_mode & 07777));
    }
    std::string out;
    char buf[4096];
    for (;;) {
        auto n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int err = errno;
            ::close(fd);
            throw config_error(fmt::format("{}: option '{}': cannot read '{}': {}", owner, key,
                                           path, std::strerror(err)));
        }
        if (n == 0) break;
        out.append(buf, static_cast<std::size_t>(n));
        if (out.size() > (1u << 20)) {
            ::close(fd);
            throw config_error(fmt::format("{}: option '{}': '{}' is larger than 1 MiB", owner,
                                           key, path));
        }
    }
    ::close(fd);
    if (!out.empty() && out.back() == '\n') out.pop_back();
    if (!out.empty() && out.back() == '\r') out.pop_back();
    return out;
}

}  // namespace

std::vector<option_spec> with_secret_sources(const std::vector<option_spec>& table) {
    std::vector<option_spec> out;
    for (const auto& o : table) {
        out.push_back(o);
        if (!o.secret) continue;
        option_spec file{o.key + "_file", option_type::string, "", false, INT64_MIN, INT64_MAX,
                         {}, fmt::format("file holding `{}` (read at start; must not be "
                                         "readable by group or others)", o.key)};
        option_spec env{o.key + "_env", option_type::string, "", false, INT64_MIN, INT64_MAX, {},
                        fmt::format("name of an environment variable holding `{}`", o.key)};
        out.push_back(std::move(file));
        out.push_back(std::move(env));
    }
    return out;
}

options::options(std::string owner, const std::vector<option_spec>& table, const config_map& raw)
    : owner_(std::move(owner)) {
    for (const auto& [key, value] : raw) {
        auto it = std::find_if(table.begin(), table.end(),
                               [&](const option_spec& o) { return o.key == key; });
        if (it == table.end())
            throw config_error(fmt::format("{}: unknown option '{}'; allowed options: {}", owner_,
                                           key, allowed_keys(table)));
        const option_spec& o = *it;
        auto bad_type = [&]() {
            return config_error(fmt::format("{}: option '{}' must be of type {}, got {}", owner_, key,
                                            to_string(o.type), describe_value(value, o.secret)));
        };
        config_value v = value;
        switch (o.type) {
            case option_type::string:
                if (!std::holds_alternative<std::string>(v)) throw bad_type();
                // A required string that is empty is as good as missing (an empty database
                // path would even "work": SQLite opens a private temporary database).
                if (o.required && std::get<std::string>(v).empty())
                    throw config_error(fmt::format("{}: option '{}' must not be empty ({})",
                                                   owner_, key, o.doc));
                break;
            case option_type::choice: {
                if (!std::holds_alternative<std::string>(v)) throw bad_type();
                const auto& s = std::get<std::string>(v);
                if (std::find(o.choices.begin(), o.choices.end(), s) == o.choices.end())
                    throw config_error(fmt::format("{}: option '{}' is {}; allowed values: {}",
                                                   owner_, key, describe_value(v, o.secret),
                                                   fmt::join(o.choices, ", ")));
                break;
            }
            case option_type::integer: {
                if (!std::holds_alternative<std::int64_t>(v)) throw bad_type();
                auto i = std::get<std::int64_t>(v);
                if (i < o.min || i > o.max)
                    throw config_error(fmt::format("{}: option '{}' is {}; allowed range: {}..{}",
                                                   owner_, key, i, o.min, o.max));
                break;
            }
            case option_type::number: {
                if (std::holds_alternative<std::int64_t>(v))
                    v = static_cast<double>(std::get<std::int64_t>(v));
                if (!std::holds_alternative<double>(v)) throw bad_type();
                auto d = std::get<double>(v);
                if (!std::isfinite(d) || d < static_cast<double>(o.min) ||
                    d > static_cast<double>(o.max))
                    throw config_error(fmt::format("{}: option '{}' is {}; allowed range: {}..{}",
                                                   owner_, key, d, o.min, o.max));
                break;
            }
            case option_type::boolean:
                if (!std::holds_alternative<bool>(v)) throw bad_type();
                break;
            case option_type::string_list:
                if (std::holds_alternative<std::string>(v))
                    v = std::vector<std::string>{std::get<std::string>(v)};
                if (!std::holds_alternative<std::vector<std::string>>(v)) throw bad_type();
                break;
        }
        values_[key] = std::move(v);
    }
    for (const auto& o : table) {
        if (values_.count(o.key)) continue;
        if (o.required)
            throw config_error(fmt::format("{}: required option '{}' is missing ({})", owner_,
                                           o.key, o.doc));
        if (!o.default_text.empty() || o.type == option_type::string)
            values_[o.key] = parse_default(o);
    }
    // Secrets given by file or environment variable (see with_secret_sources()).
    for (const auto& o : table) {
        if (!o.secret) continue;
        const std::string file_key = o.key + "_file", env_key = o.key + "_env";
        auto given = [&](const std::string& k) {
            return raw.count(k) != 0 && values_.count(k) != 0 &&
                   !std::get<std::string>(values_.at(k)).empty();
        };
        const int sources = (raw.count(o.key) != 0) + given(file_key) + given(env_key);
        if (sources > 1)
            throw config_error(fmt::format("{}: set only one of '{}', '{}' and '{}'", owner_,
                                           o.key, file_key, env_key));
        if (given(file_key)) {
            values_[o.key] =
                read_secret_file(owner_, file_key, std::get<std::string>(values_[file_key]));
        } else if (given(env_key)) {
            const auto& name = std::get<std::string>(values_[env_key]);
            const char* value = std::getenv(name.c_str());
            if (!value)
                throw config_error(fmt::format(
                    "{}: option '{}': environment variable '{}' is not set", owner_, env_key, name));
            values_[o.key] = std::string(value);
        }
    }
}

const config_value& options::at(const std::string& key) const {
    auto it = values_.find(key);
    if (it == values_.end())
        throw config_error(fmt::format("{}: option '{}' has no value", owner_, key));
    return it->second;
}

bool options::has(const std::string& key) const { return values_.count(key) != 0; }

const std::string& options::get_string(const std::string& key) const {
    return std::get<std::string>(at(key));
}
std::int64_t options::get_int(const std::string& key) const {
    return std::get<std::int64_t>(at(key));
}
double options::get_number(const std::string& key) const {
    const auto& v = at(key);
    if (std::holds_alternative<std::int64_t>(v)) return static_cast<double>(std::get<std::int64_t>(v));
    return std::get<double>(v);
}
bool options::get_bool(const std::string& key) const { return std::get<bool>(at(key)); }
const std::vector<std::string>& options::get_list(const std::string& key) const {
    return std::get<std::vector<std::string>>(at(key));
}

const std::vector<option_spec>& common_sink_options() {
    using T = option_type;
    static const std::vector<option_spec> table = {
        {"batch_max_records", T::integer, "2000", false, 1, 1000000, {},
         "most records written in one round trip"},
        {"batch_max_bytes", T::integer, "4194304", false, 1024, 1LL << 31, {},
         "most payload bytes written in one round trip"},
        {"batch_max_delay_ms", T::integer, "20", false, 0, 60000, {},
         "how long the worker waits to fill a batch once a record is pending"},
        {"retry_initial_ms", T::integer, "100", false, 1, 3600000, {},
         "first retry delay; doubles per attempt (full jitter)"},
        {"retry_max_ms", T::integer, "30000", false, 1, 86400000, {},
         "cap on the retry delay"},
        {"queue_max_records", T::integer, "100000", false, 1, 100000000, {},
         "bound of the in-memory queue (used only when spool is false)"},
        {"overflow", T::choice, "drop_newest", false, INT64_MIN, INT64_MAX,
         {"block", "drop_newest", "drop_oldest"},
         "what a full in-memory queue does with a new record (spool false only)"},
        {"block_timeout_ms", T::integer, "1000", false, 0, 600000, {},
         "longest wait of a caller with overflow block"},
        {"spool", T::boolean, "true", false, INT64_MIN, INT64_MAX, {},
         "write every record to the durable spool before delivery (write-ahead)"},
        {"spool_dir", T::string, "", false, INT64_MIN, INT64_MAX, {},
         "spool directory; default <cachedir>/fastret/spool/<sink name>"},
        {"spool_fsync", T::choice, "interval", false, INT64_MIN, INT64_MAX,
         {"never", "batch", "interval"},
         "when the spool is fsynced: never, after every append (batch), or every interval"},
        {"spool_fsync_interval_ms", T::integer, "1000", false, 1, 3600000, {},
         "fsync period with spool_fsync interval"},
        {"spool_max_bytes", T::integer, "1073741824", false, 1 << 16, 1LL << 50, {},
         "cap on the spool's size on disk"},
        {"spool_segment_bytes", T::integer, "4194304", false, 4096, 1LL << 40, {},
         "size at which a new spool segment is started; delivered segments are deleted, so "
         "small ones are gone before the page cache writes them to disk"},
        {"spool_full_policy", T::choice, "reject_new", false, INT64_MIN, INT64_MAX,
         {"reject_new", "drop_oldest"},
         "what a full spool does: refuse new records, or delete the oldest segment"},
        {"max_record_bytes", T::integer, "16777216", false, 1024, 1LL << 31, {},
         "payloads larger than this are replaced by a truncation marker with the first 4 KiB"},
    };
    return table;
}

}  // namespace fastret
