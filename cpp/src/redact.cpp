#include "fastret/redact.hpp"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <re2/re2.h>
#include <re2/set.h>

#include <algorithm>
#include <unordered_set>

#include "fastret/config.hpp"

namespace fastret {

namespace {

char lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// Shell-style match of `text` against `pat` (`*` any run, `?` one byte), iterative so that no
// input can make it recurse or backtrack without bound: O(len(text) * len(pat)) at worst.
bool glob_match(std::string_view pat, std::string_view text, bool fold_case) noexcept {
    std::size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
    while (t < text.size()) {
        if (p < pat.size() && pat[p] == '*') {
            star = p++;
            mark = t;
        } else if (p < pat.size() &&
                   (pat[p] == '?' || (fold_case ? lower(pat[p]) == lower(text[t]) : pat[p] == text[t]))) {
            ++p;
            ++t;
        } else if (star != std::string_view::npos) {
            p = star + 1;
            t = ++mark;
        } else {
            return false;
        }
    }
    while (p < pat.size() && pat[p] == '*') ++p;
    return p == pat.size();
}

bool has_wildcard(std::string_view s) noexcept {
    return s.find_first_of("*?") != std::string_view::npos;
}

std::vector<std::string> split_path(const std::string& path) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (true) {
        auto dot = path.find('.', start);
        out.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
        if (dot == std::string::npos) break;
        start = dot + 1;
    }
    return out;
}

// `segs` (a path pattern) against `path` + `key`; `**` matches zero or more segments.
bool path_match(std::span<const std::string> segs, std::span<const std::string_view> path,
                std::string_view key) {
    const std::size_t n = path.size() + 1;
    auto at = [&](std::size_t i) { return i < path.size() ? path[i] : key; };
    // Dynamic programming over (pattern position, path position): linear in their product.
    std::vector<char> cur(n + 1, 0), next(n + 1, 0);
    cur[0] = 1;
    for (const auto& seg : segs) {
        std::fill(next.begin(), next.end(), 0);
        for (std::size_t i = 0; i <= n; ++i) {
            if (!cur[i]) continue;
            if (seg == "**") {
                for (std::size_t j = i; j <= n; ++j) next[j] = 1;
            } else if (i < n && (seg == "*" || glob_match(seg, at(i), false))) {
                next[i + 1] = 1;
            }
        }
        std::swap(cur, next);
    }
    return cur[n] != 0;
}

}  // namespace

struct redactor::impl {
    struct compiled {
        redact_rule rule;
        // key rules: exact lower-case names and globs
        std::unordered_set<std::string> exact;
        std::vector<std::string> globs;
        std::vector<std::string> contains;  // `*lit*` globs: a substring search is enough
        // path rules
        std::vector<std::vector<std::string>> paths;
        // value rules
        std::unique_ptr<RE2> re;
        int secret_group = 0;  // 0: the whole match
        mutable std::atomic<std::uint64_t> count{0};
    };
    std::vector<std::unique_ptr<compiled>> rules;
    std::vector<compiled*> field_rules, value_rules;
    std::unique_ptr<RE2::Set> any_value;  // one pass over a string says whether any rule matches
    bool path_rules = false;
    std::string hmac_key;
};

redactor::redactor(std::vector<redact_rule> rules, std::string hmac_key) : impl_(std::make_unique<impl>()) {
    impl_->hmac_key = std::move(hmac_key);
    RE2::Options re_opts;
    re_opts.set_log_errors(false);
    re_opts.set_max_mem(8 << 20);
    impl_->any_value = std::make_unique<RE2::Set>(re_opts, RE2::UNANCHORED);
    for (auto& r : rules) {
        auto c = std::make_unique<impl::compiled>();
        c->rule = std::move(r);
        const auto& rule = c->rule;
        if (rule.patterns.empty())
            throw config_error(fmt::format("redaction rule '{}': no pattern given", rule.name));
        if (rule.mode == redact_mode::hash && impl_->hmac_key.empty())
            throw config_error(fmt::format(
                "redaction rule '{}': mode hash needs a key (redact option hmac_key_file)", rule.name));
        switch (rule.kind) {
            case redact_kind::key:
                for (const auto& p : rule.patterns) {
                    std::string low(p.size(), '\0');
                    std::transform(p.begin(), p.end(), low.begin(), lower);
                    const bool inner_literal =
                        low.size() > 2 && low.front() == '*' && low.back() == '*' &&
                        !has_wildcard(std::string_view(low).substr(1, low.size() - 2));
                    if (inner_literal) c->contains.push_back(low.substr(1, low.size() - 2));
                    else if (has_wildcard(low)) c->globs.push_back(std::move(low));
                    else c->exact.insert(std::move(low));
                }
                impl_->field_rules.push_back(c.get());
                break;
            case redact_kind::path:
                for (const auto& p : rule.patterns) {
                    if (p.empty())
                        throw config_error(fmt::format("redaction rule '{}': empty path", rule.name));
                    c->paths.push_back(split_path(p));
                }
                impl_->path_rules = true;
                impl_->field_rules.push_back(c.get());
                break;
            case redact_kind::value: {
                if (rule.mode == redact_mode::drop)
                    throw config_error(fmt::format(
                        "redaction rule '{}': a value pattern can mask or hash, not drop", rule.name));
                if (rule.patterns.size() != 1)
                    throw config_error(fmt::format(
                        "redaction rule '{}': a value rule has exactly one pattern", rule.name));
                c->re = std::make_unique<RE2>(rule.patterns[0], re_opts);
                if (!c->re->ok())
                    throw config_error(fmt::format("redaction rule '{}': bad pattern: {}", rule.name,
                                                   c->re->error()));
                const auto& groups = c->re->NamedCapturingGroups();
                if (auto it = groups.find("secret"); it != groups.end()) c->secret_group = it->second;
                std::string err;
                if (impl_->any_value->Add(rule.patterns[0], &err) < 0)
                    throw config_error(fmt::format("redaction rule '{}': bad pattern: {}", rule.name, err));
                impl_->value_rules.push_back(c.get());
                break;
            }
        }
        impl_->rules.push_back(std::move(c));
    }
    if (!impl_->value_rules.empty() && !impl_->any_value->Compile())
        throw config_error("redaction: the value patterns together are too large to compile");
}

redactor::~redactor() = default;

std::vector<redact_rule> redactor::default_rules() {
    using K = redact_kind;
    const auto mask = redact_mode::mask;
    return {
        {"secret_keys", K::key,
         {"password", "passwd", "pass", "secret", "token", "api_key", "apikey", "private_key",
          "key_data", "authorization", "cookie", "set-cookie", "*password*", "*passwd*",
          "*secret*", "*token*", "*private_key*", "*api_key*", "*apikey*"},
         mask},
        {"pem_private_key", K::value,
         {R"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----)"},
         mask},
        {"bearer_token", K::value, {R"((?i)\bbearer\s+(?P<secret>[A-Za-z0-9\-._~+/]+=*))"}, mask},
        {"basic_auth_header", K::value, {R"((?i)\bbasic\s+(?P<secret>[A-Za-z0-9+/]{8,}=*))"}, mask},
        {"url_password", K::value,
         {R"([A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@]*:(?P<secret>[^\s/@]+)@)"}, mask},
        {"aws_access_key_id", K::value, {R"(\b(?:AKIA|ASIA)[0-9A-Z]{16}\b)"}, mask},
    };
}

bool redactor::has_field_rules() const noexcept { return !impl_->field_rules.empty(); }
bool redactor::has_path_rules() const noexcept { return impl_->path_rules; }
bool redactor::has_value_rules() const noexcept { return !impl_->value_rules.empty(); }

field_action redactor::match_field(std::span<const std::string_view> path, std::string_view key) const {
    // The lower-cased key, in a buffer reused across calls (this runs for every dict member).
    thread_local std::string low;
    low.assign(key);
    std::transform(low.begin(), low.end(), low.begin(), lower);
    for (auto* c : impl_->field_rules) {
        bool hit = false;
        if (c->rule.kind == redact_kind::key) {
            hit = c->exact.count(low) != 0;
            for (std::size_t i = 0; !hit && i < c->contains.size(); ++i)
                hit = low.find(c->contains[i]) != std::string::npos;
            for (std::size_t i = 0; !hit && i < c->globs.size(); ++i) hit = glob_match(c->globs[i], low, false);
        } else {
            for (std::size_t i = 0; !hit && i < c->paths.size(); ++i) hit = path_match(c->paths[i], path, key);
        }
        if (!hit) continue;
        c->count.fetch_add(1, std::memory_order_relaxed);
        switch (c->rule.mode) {
            case redact_mode::mask: return field_action::mask;
            case redact_mode::drop: return field_action::drop;
            case redact_mode::hash: return field_action::hash;
        }
    }
    return field_action::keep;
}

bool redactor::redact_value(std::string_view in, std::string& out) const {
    if (impl_->value_rules.empty()) return false;
    std::vector<int> which;
    if (!impl_->any_value->Match(in, &which)) return false;
    std::sort(which.begin(), which.end());
    std::string text(in), next;
    bool changed = false;
    for (int idx : which) {
        const auto* c = impl_->value_rules[static_cast<std::size_t>(idx)];
        // As many slots as the secret group's number needs: a pattern may have any number of
        // groups before it (a fixed array of 16 was read past its end).
        const auto g = static_cast<std::size_t>(c->secret_group);
        std::vector<re2::StringPiece> groups(g + 1);
        std::size_t pos = 0, copied = 0;
        next.clear();
        std::uint64_t hits = 0;
        while (pos <= text.size() &&
               c->re->Match(text, pos, text.size(), RE2::UNANCHORED, groups.data(), static_cast<int>(groups.size()))) {
            const auto& part = groups[g].data() ? groups[g] : groups[0];
            const auto start = static_cast<std::size_t>(part.data() - text.data());
            const auto whole_end = static_cast<std::size_t>(groups[0].data() - text.data()) + groups[0].size();
            // RE2 tries every byte offset, so a pattern that can match nothing (`x*`, `\B`, "")
            // also matches between the bytes of one UTF-8 character: there is nothing to mask
            // there, and a mask would split the character.
            const bool inside_char = part.empty() && start < text.size() &&
                                     (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80;
            if (!inside_char) {
                next.append(text, copied, start - copied);
                next += c->rule.mode == redact_mode::hash ? pseudonym({part.data(), part.size()})
                                                          : std::string(redaction_mask);
                copied = start + part.size();
                ++hits;
            }
            // An empty match must still move on.
            pos = whole_end > pos ? whole_end : pos + 1;
        }
        if (hits == 0) continue;
        next.append(text, copied, std::string::npos);
        text.swap(next);
        c->count.fetch_add(hits, std::memory_order_relaxed);
        changed = true;
    }
    if (changed) out = std::move(text);
    return changed;
}

std::string redactor::pseudonym(std::string_view data) const {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), impl_->hmac_key.data(), static_cast<int>(impl_->hmac_key.size()),
         reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &len);
    static constexpr char hex[] = "0123456789abcdef";
    std::string out = "hmac:";
    for (unsigned int i = 0; i < 16 && i < len; ++i) {
        out += hex[mac[i] >> 4];
        out += hex[mac[i] & 15];
    }
    return out;
}

std::vector<std::pair<std::string, std::uint64_t>> redactor::counts() const {
    std::vector<std::pair<std::string, std::uint64_t>> out;
    for (const auto& c : impl_->rules) out.emplace_back(c->rule.name, c->count.load(std::memory_order_relaxed));
    return out;
}

}  // namespace fastret
