// fastret._native.redactor(spec): compiled redaction rules, shared by every pipeline that
// uses the same spec in this process (the rules' counters are what `fastret stats` shows).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <mutex>

#include "fastret/config.hpp"
#include "fastret/redact.hpp"

namespace py = pybind11;

namespace fastret::py_bind {

namespace {

std::mutex cache_mu;
std::map<std::string, std::shared_ptr<redactor>> cache;  // spec JSON -> compiled rules

redact_mode mode_of(const std::string& m) {
    if (m == "mask") return redact_mode::mask;
    if (m == "drop") return redact_mode::drop;
    if (m == "hash") return redact_mode::hash;
    throw config_error("redaction: unknown mode '" + m + "'");
}

redact_kind kind_of(const std::string& k) {
    if (k == "key") return redact_kind::key;
    if (k == "path") return redact_kind::path;
    if (k == "value") return redact_kind::value;
    throw config_error("redaction: unknown rule kind '" + k + "'");
}

// spec: {"defaults": bool, "hmac_key": str, "rules": [{name, kind, patterns, mode}]}
std::shared_ptr<redactor> build(const py::dict& spec) {
    std::vector<redact_rule> rules;
    if (spec.contains("defaults") && spec["defaults"].cast<bool>()) rules = redactor::default_rules();
    if (spec.contains("rules")) {
        for (auto item : spec["rules"]) {
            auto r = item.cast<py::dict>();
            rules.push_back({r["name"].cast<std::string>(), kind_of(r["kind"].cast<std::string>()),
                             r["patterns"].cast<std::vector<std::string>>(),
                             mode_of(r["mode"].cast<std::string>())});
        }
    }
    auto key = spec.contains("hmac_key") ? spec["hmac_key"].cast<std::string>() : std::string();
    return std::make_shared<redactor>(std::move(rules), std::move(key));
}

}  // namespace

void register_redact(py::module_& m) {
    py::class_<redactor, std::shared_ptr<redactor>>(
        m, "Redactor", "Compiled redaction rules; see fastret.config.parse_redact.")
        .def("counts", &redactor::counts, "(rule name, matches so far) per rule")
        .def(
            "redact_text",
            [](const redactor& r, const std::string& text) {
                std::string out;
                return r.redact_value(text, out) ? out : text;
            },
            py::arg("text"), "The value rules applied to one string (for tests and the CLI).");

    m.def(
        "redactor",
        [](const py::dict& spec) {
            // One compiled object per distinct spec: compiling RE2 sets is not free, and the
            // counters should add up across the pipelines of a process.
            auto json = py::module_::import("json");
            auto key = json.attr("dumps")(spec, py::arg("sort_keys") = true).cast<std::string>();
            std::lock_guard lock(cache_mu);
            auto it = cache.find(key);
            if (it != cache.end()) return it->second;
            auto r = build(spec);
            cache.emplace(key, r);
            return r;
        },
        py::arg("spec"), "The compiled redactor of a redaction spec (cached per spec).");
    m.def(
        "redaction_counts",
        [] {
            std::map<std::string, std::uint64_t> total;
            std::lock_guard lock(cache_mu);
            for (const auto& [_, r] : cache)
                for (const auto& [name, n] : r->counts()) total[name] += n;
            return total;
        },
        "Matches per redaction rule name in this process, over every redactor.");
}

}  // namespace fastret::py_bind
