#include "fastret/redact.hpp"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <re2/filtered_re2.h>
#include <re2/re2.h>
#include <re2/set.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>

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

// Up to 64 lower-case ASCII literals (at least 2 bytes each), found in a text ASCII
// case-insensitively in one pass: a byte pair of the text is looked up in two tables (which
// literals start with the first byte, which have the second byte next), and only the
// literals both tables name are compared further. Text bytes are mostly letters and digits
// that start no literal, so most positions cost two loads and an AND.
class literal_table {
public:
    static constexpr std::size_t capacity = 64;

    // The index of `lit` (added if new), or -1 when the table is full.
    int add(std::string_view lit) {
        for (std::size_t i = 0; i < lits_.size(); ++i)
            if (lits_[i] == lit) return static_cast<int>(i);
        if (lits_.size() == capacity) return -1;
        const std::uint64_t bit = std::uint64_t{1} << lits_.size();
        const int b0 = static_cast<unsigned char>(lit[0]), b1 = static_cast<unsigned char>(lit[1]);
        first_[static_cast<std::size_t>(b0)] |= bit;
        first_[static_cast<std::size_t>(upper(b0))] |= bit;
        second_[static_cast<std::size_t>(b1)] |= bit;
        second_[static_cast<std::size_t>(upper(b1))] |= bit;
        min_len_ = std::min(min_len_, lit.size());
        lits_.emplace_back(lit);
        return static_cast<int>(lits_.size() - 1);
    }

    bool empty() const noexcept { return lits_.empty(); }

    // Bit i set: literal i occurs in `text`. Stops early once every bit in `wanted` is found.
    std::uint64_t find(std::string_view text, std::uint64_t wanted) const noexcept {
        std::uint64_t found = 0;
        if (text.size() < min_len_) return 0;
        const auto* t = reinterpret_cast<const unsigned char*>(text.data());
        const std::size_t last = text.size() - min_len_;
        for (std::size_t i = 0; i <= last; ++i) {
            std::uint64_t m = first_[t[i]] & second_[t[i + 1]];
            if (!m) continue;  // the usual case
            for (m &= ~found; m; m &= m - 1) {
                const int j = std::countr_zero(m);
                const std::string& lit = lits_[static_cast<std::size_t>(j)];
                if (lit.size() > text.size() - i) continue;
                std::size_t k = 2;
                while (k < lit.size() && lower(static_cast<char>(t[i + k])) == lit[k]) ++k;
                if (k == lit.size()) {
                    found |= std::uint64_t{1} << j;
                    if ((found & wanted) == wanted) return found;
                }
            }
        }
        return found;
    }

private:
    static int upper(int c) noexcept { return (c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c; }

    std::vector<std::string> lits_;
    std::array<std::uint64_t, 256> first_{}, second_{};
    std::size_t min_len_ = std::numeric_limits<std::size_t>::max();
};

bool is_ascii(std::string_view s) noexcept {
    std::size_t i = 0;
    std::uint64_t acc = 0;
    for (; i + 8 <= s.size(); i += 8) {
        std::uint64_t w;
        std::memcpy(&w, s.data() + i, 8);
        acc |= w;
    }
    for (; i < s.size(); ++i) acc |= static_cast<unsigned char>(s[i]);
    return (acc & 0x8080808080808080ULL) == 0;
}

// The literals (lower case) of which any match of `pattern` contains at least one, ASCII
// case-insensitively in an ASCII text; empty when there are none to rely on. RE2's prefilter
// analysis (FilteredRE2) finds them: its contract is that a regexp can match a text only if
// its AND/OR formula over these atoms holds for the atoms found in the lower-cased text. The
// formula is monotone, so when it is false with no atom found (checked), a match needs at
// least one atom. Atoms shorter than 3 bytes are left out by the analysis (a weaker formula,
// still sound); a rule with a non-ASCII atom gets none: case folding beyond ASCII (the Kelvin
// sign is a K) is not what the search does.
std::vector<std::string> required_literals(const std::string& pattern, const RE2::Options& opts) {
    re2::FilteredRE2 filter(3);
    int id = 0;
    if (filter.Add(pattern, opts, &id) != RE2::NoError) return {};
    std::vector<std::string> atoms;
    filter.Compile(&atoms);
    if (atoms.empty()) return {};
    std::vector<int> potentials;
    filter.AllPotentials({}, &potentials);
    if (!potentials.empty()) return {};  // holds without any atom: no filter
    for (const auto& a : atoms)
        if (a.size() < 2 || !is_ascii(a)) return {};
    return atoms;
}

}  // namespace

struct redactor::impl {
    struct compiled {
        redact_rule rule;
        // key rules: globs other than exact names and `*literal*` (those are in key_names and
        // key_parts)
        std::vector<std::string> globs;
        // path rules
        std::vector<std::vector<std::string>> paths;
        // value rules
        std::unique_ptr<RE2> re;
        int secret_group = 0;  // 0: the whole match
        std::uint64_t literals = 0;  // bits of value_literals; 0: no prefilter, always tried
        mutable std::atomic<std::uint64_t> count{0};
    };
    std::vector<std::unique_ptr<compiled>> rules;
    std::vector<compiled*> field_rules, value_rules;
    std::unique_ptr<RE2::Set> any_value;  // one pass over a string says which rules match
    bool path_rules = false;
    std::string hmac_key;

    // ---- key rules, compiled across rules; a value is the index in field_rules ----
    // Exact names (lower case) in an open-addressing table: the first rule naming each.
    struct name_slot {
        std::string name;
        int rule = -1;
    };
    std::vector<name_slot> key_names;  // size a power of two, or empty
    std::uint64_t key_name_lengths = 0;  // bit n: a name of n bytes exists (bit 63: 63 or more)
    // `*literal*` globs: the literals, with the first rule of each.
    literal_table key_parts;
    std::vector<int> key_part_rule;
    // Rules that need a per-rule check (globs, paths), in order.
    std::vector<int> slow_field_rules;
    std::uint64_t serial = 0;  // tells key caches which redactor their answers are from

    int first_field_rule(std::span<const std::string_view> path, std::string_view key) const;

    // ---- value rules ----
    literal_table value_literals;
    std::uint64_t value_literal_bits = 0;  // the literals of all prefiltered rules
    bool prefilter = true;
    std::size_t prefiltered = 0;

    // A hash of `s` that ignores ASCII case (and, harmlessly, bit 5 of other bytes): the first
    // and last 8 bytes with the length, which tells the few names of a rule set apart.
    static std::uint64_t hash_folded(std::string_view s) noexcept { return hash_key(s, 0x2020202020202020ULL); }
    static std::uint64_t hash_key(std::string_view s, std::uint64_t fold) noexcept {
        std::uint64_t a = 0, b = 0;
        if (s.size() >= 8) {
            std::memcpy(&a, s.data(), 8);
            std::memcpy(&b, s.data() + s.size() - 8, 8);
        } else {
            for (std::size_t i = 0; i < s.size(); ++i) a |= std::uint64_t{static_cast<unsigned char>(s[i])} << (8 * i);
        }
        a |= fold;
        b |= fold;
        const std::uint64_t h = (a * 0x9E3779B97F4A7C15ULL) ^ (b * 0xC2B2AE3D27D4EB4FULL) ^ s.size();
        return h ^ (h >> 29);
    }
    static std::uint64_t length_bit(std::size_t n) noexcept { return std::uint64_t{1} << std::min<std::size_t>(n, 63); }

    void build_key_names(const std::vector<std::pair<std::string, int>>& names);
    int find_key_name(std::string_view key) const noexcept;
};

void redactor::impl::build_key_names(const std::vector<std::pair<std::string, int>>& names) {
    if (names.empty()) return;
    std::size_t size = 8;
    while (size < names.size() * 2) size *= 2;
    key_names.assign(size, {});
    for (const auto& [name, rule] : names) {
        key_name_lengths |= length_bit(name.size());
        for (std::size_t i = hash_folded(name) & (size - 1);; i = (i + 1) & (size - 1)) {
            auto& slot = key_names[i];
            if (slot.rule < 0) {
                slot = {name, rule};
                break;
            }
            if (slot.name == name) break;  // an earlier rule has it already: that one wins
        }
    }
}

int redactor::impl::find_key_name(std::string_view key) const noexcept {
    if (key_names.empty() || !(key_name_lengths & length_bit(key.size()))) return -1;
    const std::size_t mask = key_names.size() - 1;
    for (std::size_t i = hash_folded(key) & mask;; i = (i + 1) & mask) {
        const auto& slot = key_names[i];
        if (slot.rule < 0) return -1;
        if (slot.name.size() == key.size() &&
            std::equal(key.begin(), key.end(), slot.name.begin(), [](char a, char b) { return lower(a) == b; }))
            return slot.rule;
    }
}

redactor::redactor(std::vector<redact_rule> rules, std::string hmac_key, bool literal_prefilter)
    : impl_(std::make_unique<impl>()) {
    impl_->hmac_key = std::move(hmac_key);
    impl_->prefilter = literal_prefilter;
    static std::atomic<std::uint64_t> serials{0};
    impl_->serial = ++serials;
    std::vector<std::pair<std::string, int>> key_names;
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
            case redact_kind::key: {
                const int index = static_cast<int>(impl_->field_rules.size());
                for (const auto& p : rule.patterns) {
                    std::string low(p.size(), '\0');
                    std::transform(p.begin(), p.end(), low.begin(), lower);
                    const bool inner_literal =
                        low.size() > 3 && low.front() == '*' && low.back() == '*' &&
                        !has_wildcard(std::string_view(low).substr(1, low.size() - 2));
                    int part = -1;
                    if (inner_literal) part = impl_->key_parts.add(std::string_view(low).substr(1, low.size() - 2));
                    if (part >= 0) {
                        if (static_cast<std::size_t>(part) == impl_->key_part_rule.size())
                            impl_->key_part_rule.push_back(index);  // else an earlier rule has it
                    } else if (has_wildcard(low)) {
                        c->globs.push_back(std::move(low));
                    } else {
                        key_names.emplace_back(std::move(low), index);
                    }
                }
                if (!c->globs.empty()) impl_->slow_field_rules.push_back(index);
                impl_->field_rules.push_back(c.get());
                break;
            }
            case redact_kind::path:
                for (const auto& p : rule.patterns) {
                    if (p.empty())
                        throw config_error(fmt::format("redaction rule '{}': empty path", rule.name));
                    c->paths.push_back(split_path(p));
                }
                impl_->path_rules = true;
                impl_->slow_field_rules.push_back(static_cast<int>(impl_->field_rules.size()));
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
                if (impl_->prefilter) {
                    // All of the rule's literals in the table, or no prefilter for it.
                    std::uint64_t bits = 0;
                    for (const auto& lit : required_literals(rule.patterns[0], re_opts)) {
                        const int j = impl_->value_literals.add(lit);
                        if (j < 0) {
                            bits = 0;
                            break;
                        }
                        bits |= std::uint64_t{1} << j;
                    }
                    c->literals = bits;
                    impl_->value_literal_bits |= bits;
                    if (bits) ++impl_->prefiltered;
                }
                impl_->value_rules.push_back(c.get());
                break;
            }
        }
        impl_->rules.push_back(std::move(c));
    }
    if (!impl_->value_rules.empty() && !impl_->any_value->Compile())
        throw config_error("redaction: the value patterns together are too large to compile");
    // A name that contains a `*literal*` of its own rule or an earlier one is found through
    // the literal already (default rules: password, secret, token, ...).
    std::erase_if(key_names, [&](const std::pair<std::string, int>& n) {
        const std::uint64_t parts = impl_->key_parts.find(n.first, ~std::uint64_t{0});
        for (std::uint64_t f = parts; f; f &= f - 1)
            if (impl_->key_part_rule[static_cast<std::size_t>(std::countr_zero(f))] <= n.second) return true;
        return false;
    });
    impl_->build_key_names(key_names);
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
std::size_t redactor::prefiltered_value_rules() const noexcept { return impl_->prefiltered; }

int redactor::impl::first_field_rule(std::span<const std::string_view> path, std::string_view key) const {
    // Exact names and `*literal*` parts of all key rules are looked up at once (the key folded
    // on the fly, never copied) and give the first rule that matches through them; only rules
    // before that one with other globs or paths are then checked one by one.
    int best = find_key_name(key);
    if (best < 0) best = std::numeric_limits<int>::max();
    if (!key_parts.empty()) {
        for (std::uint64_t found = key_parts.find(key, ~std::uint64_t{0}); found; found &= found - 1)
            best = std::min(best, key_part_rule[static_cast<std::size_t>(std::countr_zero(found))]);
    }
    for (int idx : slow_field_rules) {
        if (idx >= best) break;
        const auto* c = field_rules[static_cast<std::size_t>(idx)];
        bool hit = false;
        if (c->rule.kind == redact_kind::key) {
            for (std::size_t i = 0; !hit && i < c->globs.size(); ++i) hit = glob_match(c->globs[i], key, true);
        } else {
            for (std::size_t i = 0; !hit && i < c->paths.size(); ++i) hit = path_match(c->paths[i], path, key);
        }
        if (hit) return idx;
    }
    return best == std::numeric_limits<int>::max() ? -1 : best;
}

field_action redactor::match_field(std::span<const std::string_view> path, std::string_view key,
                                   key_cache* cache) const {
    const auto& im = *impl_;
    int rule;
    if (cache && !im.path_rules && key.size() <= key_cache::max_key) {
        if (cache->owner_ != im.serial) {
            cache->clear();
            cache->owner_ = im.serial;
        }
        auto& slot = cache->slots_[impl::hash_key(key, 0) % key_cache::slots];
        if (slot.len == key.size() && std::memcmp(slot.key, key.data(), key.size()) == 0) {
            rule = slot.rule;
        } else {
            rule = im.first_field_rule(path, key);
            std::memcpy(slot.key, key.data(), key.size());
            slot.len = static_cast<std::uint8_t>(key.size());
            slot.rule = rule;
        }
    } else {
        rule = im.first_field_rule(path, key);
    }
    if (rule < 0) return field_action::keep;
    const auto* c = im.field_rules[static_cast<std::size_t>(rule)];
    c->count.fetch_add(1, std::memory_order_relaxed);
    switch (c->rule.mode) {
        case redact_mode::mask: return field_action::mask;
        case redact_mode::drop: return field_action::drop;
        case redact_mode::hash: return field_action::hash;
    }
    return field_action::keep;
}

bool redactor::redact_value(std::string_view in, std::string& out) const {
    const auto& im = *impl_;
    if (im.value_rules.empty()) return false;
    // The rules that could match (see the header): usually none, and then no RE2 pass at all.
    std::size_t candidates = 0, only = 0;
    if (im.prefiltered == 0 || !is_ascii(in)) {
        candidates = im.value_rules.size();
    } else {
        const std::uint64_t found = im.value_literals.find(in, im.value_literal_bits);
        if (!found && im.prefiltered == im.value_rules.size()) return false;  // the usual case
        for (std::size_t i = 0; i < im.value_rules.size() && candidates < 2; ++i) {
            const auto bits = im.value_rules[i]->literals;
            if (bits == 0 || (bits & found)) {
                ++candidates;
                only = i;
            }
        }
    }
    if (candidates == 0) return false;
    std::vector<int> which;
    if (candidates == 1) {
        // One RE2 pass without submatches says whether it matches.
        if (!im.value_rules[only]->re->Match(in, 0, in.size(), RE2::UNANCHORED, nullptr, 0)) return false;
        which.push_back(static_cast<int>(only));
    } else {
        if (!im.any_value->Match(in, &which)) return false;
        std::sort(which.begin(), which.end());
    }
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
