// fastret::redactor: the default rules on arbitrary values, keys and paths, and rules built
// from fuzzed patterns.
//
// The first input byte picks the mode.
//
// Default rules (mode 0):
//  - redact_value terminates, and leaves `out` alone when it reports no match;
//  - the result is a fixed point: redacting it again changes nothing. (Matching again is
//    allowed, since a mask can sit where a secret sat, e.g. in scheme://user:********@host,
//    but the text must come out the same);
//  - nothing in the result is still visible to a default value pattern: every match of each
//    default pattern (compiled here from default_rules(), with RE2 directly) has its secret
//    part, or the whole match without a `secret` group, equal to the mask;
//  - well-formed UTF-8 stays well-formed; the rule counters grow exactly when it redacts;
//  - match_field on an arbitrary key and path agrees with a reference written from the
//    documented list (exact names and names containing password, passwd, secret, token,
//    private_key, api_key, apikey, ASCII case-insensitively; the path does not matter), and
//    with a key_cache kept across inputs gives the same answer;
//  - a redactor without the literal prefilter gives the same result, and every counter the
//    same value.
//
// Fuzzed rules (mode 1): one to three rules of any kind and mode with patterns from the input
// are either refused with config_error, or:
//  - match_field agrees with a reference (first matching rule wins; key globs fold ASCII case,
//    path segments do not; `*` any run and `?` one byte inside a segment, `**` any number of
//    segments), computed by straightforward recursion;
//  - match_field with a key_cache answers the same (and counts the same);
//  - redact_value terminates, leaves `out` alone when it reports no match, and keeps
//    well-formed UTF-8 well-formed (unless a pattern uses \C, which matches single bytes on
//    purpose); without the literal prefilter it gives the same result.
#include <re2/re2.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fastret/config.hpp"
#include "fastret/redact.hpp"
#include "fuzz_common.hpp"

namespace {

using fastret::field_action;
using fastret::redact_kind;
using fastret::redact_mode;

std::uint64_t total_count(const fastret::redactor& r) {
    std::uint64_t n = 0;
    for (const auto& [name, c] : r.counts()) n += c;
    return n;
}

const char* action_name(field_action a) {
    switch (a) {
        case field_action::keep:
            return "keep";
        case field_action::mask:
            return "mask";
        case field_action::drop:
            return "drop";
        case field_action::hash:
            return "hash";
    }
    return "?";
}

char fold(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// Reference glob: plain recursion with memoization over (pattern, text) positions.
bool ref_glob(std::string_view pat, std::string_view text, bool fold_case) {
    std::vector<signed char> memo((pat.size() + 1) * (text.size() + 1), -1);
    auto rec = [&](auto&& self, std::size_t p, std::size_t t) -> bool {
        signed char& m = memo[p * (text.size() + 1) + t];
        if (m >= 0) return m != 0;
        bool r;
        if (p == pat.size())
            r = t == text.size();
        else if (pat[p] == '*')
            r = self(self, p + 1, t) || (t < text.size() && self(self, p, t + 1));
        else if (t == text.size())
            r = false;
        else if (pat[p] == '?' || (fold_case ? fold(pat[p]) == fold(text[t]) : pat[p] == text[t]))
            r = self(self, p + 1, t + 1);
        else
            r = false;
        m = r ? 1 : 0;
        return r;
    };
    return rec(rec, 0, 0);
}

std::vector<std::string> split_dots(const std::string& s) {
    std::vector<std::string> out;
    std::size_t start = 0;
    for (std::size_t i = 0; i <= s.size(); ++i)
        if (i == s.size() || s[i] == '.') {
            out.push_back(s.substr(start, i - start));
            start = i + 1;
        }
    return out;
}

bool ref_path(const std::vector<std::string>& segs, std::size_t si,
              const std::vector<std::string_view>& items, std::size_t ii) {
    if (si == segs.size()) return ii == items.size();
    if (segs[si] == "**") {
        for (std::size_t j = ii; j <= items.size(); ++j)
            if (ref_path(segs, si + 1, items, j)) return true;
        return false;
    }
    if (ii == items.size()) return false;
    return ref_glob(segs[si], items[ii], false) && ref_path(segs, si + 1, items, ii + 1);
}

field_action ref_match_field(const std::vector<fastret::redact_rule>& rules,
                             const std::vector<std::string_view>& path, std::string_view key) {
    std::vector<std::string_view> full(path);
    full.push_back(key);
    for (const auto& rule : rules) {
        bool hit = false;
        if (rule.kind == redact_kind::key) {
            for (const auto& p : rule.patterns) hit = hit || ref_glob(p, key, true);
        } else if (rule.kind == redact_kind::path) {
            for (const auto& p : rule.patterns) hit = hit || ref_path(split_dots(p), 0, full, 0);
        }
        if (!hit) continue;
        switch (rule.mode) {
            case redact_mode::mask:
                return field_action::mask;
            case redact_mode::drop:
                return field_action::drop;
            case redact_mode::hash:
                return field_action::hash;
        }
    }
    return field_action::keep;
}

std::string rules_text(const std::vector<fastret::redact_rule>& rules) {
    static const char* kinds[] = {"key", "path", "value"};
    static const char* modes[] = {"mask", "drop", "hash"};
    std::string s;
    for (const auto& r : rules) {
        s += std::string("\n  ") + kinds[static_cast<int>(r.kind)] + "/" +
             modes[static_cast<int>(r.mode)] + ":";
        for (const auto& p : r.patterns) s += " " + fuzz::show(p);
    }
    return s;
}

std::vector<std::string_view> views(const std::vector<std::string>& v) {
    return {v.begin(), v.end()};
}

std::string path_text(const std::vector<std::string>& path, std::string_view key) {
    std::string s;
    for (const auto& p : path) s += fuzz::show(p) + ".";
    return s + fuzz::show(key);
}

// ---- mode 0: the default rules ----

struct defaults {
    std::vector<fastret::redact_rule> rules = fastret::redactor::default_rules();
    fastret::redactor red{fastret::redactor::default_rules(), ""};
    fastret::redactor full{fastret::redactor::default_rules(), "", false};  // no prefilter
    fastret::key_cache keys;
    struct value_pattern {
        std::string name;
        std::unique_ptr<RE2> re;
        int secret = 0;
    };
    std::vector<value_pattern> patterns;
    defaults() {
        for (const auto& r : rules) {
            if (r.kind != redact_kind::value) continue;
            value_pattern p{r.name, std::make_unique<RE2>(r.patterns[0]), 0};
            if (!p.re->ok()) fuzz::fail(__FILE__, __LINE__, "default pattern compiles", r.name);
            if (auto it = p.re->NamedCapturingGroups().find("secret");
                it != p.re->NamedCapturingGroups().end())
                p.secret = it->second;
            patterns.push_back(std::move(p));
        }
    }
};

// Every match of every default pattern in `text` shows only the mask where the secret is.
void check_nothing_visible(const defaults& d, const std::string& text) {
    for (const auto& p : d.patterns) {
        std::vector<re2::StringPiece> g(static_cast<std::size_t>(p.secret) + 1);
        std::size_t pos = 0;
        while (pos <= text.size() && p.re->Match(text, pos, text.size(), RE2::UNANCHORED, g.data(),
                                                 static_cast<int>(g.size()))) {
            const re2::StringPiece part = g[static_cast<std::size_t>(p.secret)].data()
                                              ? g[static_cast<std::size_t>(p.secret)]
                                              : g[0];
            FUZZ_CHECK(std::string_view(part.data(), part.size()) == fastret::redaction_mask,
                       p.name + " still matches " +
                           fuzz::show(std::string_view(part.data(), part.size())) + " in " +
                           fuzz::show(text));
            const std::size_t end =
                static_cast<std::size_t>(g[0].data() - text.data()) + g[0].size();
            pos = end > pos ? end : pos + 1;
        }
    }
}

bool ref_default_key(std::string_view key) {
    std::string low(key);
    for (auto& c : low) c = fold(c);
    for (const char* exact : {"password", "passwd", "pass", "secret", "token", "api_key", "apikey",
                              "private_key", "key_data", "authorization", "cookie", "set-cookie"})
        if (low == exact) return true;
    for (const char* part :
         {"password", "passwd", "secret", "token", "private_key", "api_key", "apikey"})
        if (low.find(part) != std::string::npos) return true;
    return false;
}

void run_defaults(FuzzedDataProvider& fdp) {
    static defaults d;
    std::vector<std::string> path;
    for (int n = fdp.ConsumeIntegralInRange(0, 3); n > 0; --n)
        path.push_back(fdp.ConsumeRandomLengthString(12));
    const std::string key = fdp.ConsumeRandomLengthString(40);
    const field_action a = d.red.match_field(views(path), key);
    const field_action want = ref_default_key(key) ? field_action::mask : field_action::keep;
    FUZZ_CHECK(a == want, std::string(action_name(a)) + " for key " + path_text(path, key) +
                              ", expected " + action_name(want));
    const field_action cached = d.full.match_field(views(path), key, &d.keys);
    FUZZ_CHECK(cached == want, std::string(action_name(cached)) + " from the key cache for " +
                                   path_text(path, key) + ", expected " + action_name(want));

    const std::string in = fdp.ConsumeRemainingBytesAsString();
    const std::uint64_t before = total_count(d.red);
    std::string out = "untouched";
    const bool changed = d.red.redact_value(in, out);
    if (!changed) FUZZ_CHECK(out == "untouched", "out written without a match: " + fuzz::show(out));
    FUZZ_CHECK((total_count(d.red) > before) == changed,
               "counters disagree with the result for " + fuzz::show(in));
    std::string full_out = "untouched";
    const bool full_changed = d.full.redact_value(in, full_out);
    FUZZ_CHECK(full_changed == changed && full_out == out,
               "the prefilter changed the result for " + fuzz::show(in) + ": " + fuzz::show(out) +
                   " instead of " + fuzz::show(full_out));
    FUZZ_CHECK(d.red.counts() == d.full.counts(), "counters differ with and without the prefilter");
    const std::string& text = changed ? out : in;
    fuzz::trace("key " + path_text(path, key) + ": " + action_name(a) + "; value " +
                fuzz::show(in) + " -> " + fuzz::show(text));
    if (fuzz::utf8_valid(in))
        FUZZ_CHECK(fuzz::utf8_valid(text),
                   "UTF-8 broken: " + fuzz::show(in) + " -> " + fuzz::show(text));
    std::string again;
    if (d.red.redact_value(text, again))
        FUZZ_CHECK(again == text, "not a fixed point: " + fuzz::show(in) + "\n -> " +
                                      fuzz::show(text) + "\n -> " + fuzz::show(again));
    std::string full_again;
    d.full.redact_value(text, full_again);  // keeps the two redactors' counters in step
    check_nothing_visible(d, text);
}

// ---- mode 1: rules from the input ----

// A pattern from the input, in one of three shapes: raw bytes; a soup of regex and glob syntax
// (mostly refused, which exercises the refusals); or a well-formed pattern assembled from
// pieces whose matching text is known, so that the value text can be made to match it (random
// text almost never matches a random pattern). `sample` gets text the pattern matches (for the
// third shape; RE2 decides, the harness does not rely on it).
std::string pattern_text(FuzzedDataProvider& fdp, std::string& sample) {
    static const char* soup[] = {"(",   ")",    "(?P<secret>", "*", "**",     "?",   ".",    "\\b",
                                 "\\B", "\\s+", "[",           "]", "[^a-z]", "a",   "A",    "é",
                                 "+",   "{2,}", "|",           "^", "$",      "\\C", "(?i)", "x*",
                                 "0",   "\\",   "-",           "=", ":",      "//"};
    static const struct {
        const char* re;
        const char* text;
    } known[] = {
        {"(a)", "a"},
        {"(?P<secret>[0-9]+)", "4711"},
        {"(?P<secret>\\S*)", "pw"},
        {"(?:x|yz)", "yz"},
        {"[A-Za-z]{2,}", "Ab"},
        {"\\s+", " \t"},
        {"é", "é"},
        {"x*", ""},
        {".", "ü"},
        {"(?i)", ""},
        {"=", "="},
        {"://", "://"},
        {"@", "@"},
        {"(b+)", "bb"},
        {"\\C", "q"},
        {"[^\\s/@]+", "hunter2"},
        {"\\b", ""},
        {"(?:)", ""},
    };
    switch (fdp.ConsumeIntegralInRange(0, 2)) {
        case 0:
            return fdp.ConsumeRandomLengthString(48);
        case 1: {
            std::string s;
            for (int n = fdp.ConsumeIntegralInRange(1, 24); n > 0; --n)
                s += soup[fdp.ConsumeIntegralInRange<std::size_t>(0, std::size(soup) - 1)];
            return s;
        }
        default: {
            std::string s;
            for (int n = fdp.ConsumeIntegralInRange(1, 8); n > 0; --n) {
                const auto& k =
                    known[fdp.ConsumeIntegralInRange<std::size_t>(0, std::size(known) - 1)];
                // Sometimes many times over: real patterns have dozens of groups.
                for (int r = fdp.ConsumeBool() ? 1 : fdp.ConsumeIntegralInRange(1, 24); r > 0;
                     --r) {
                    s += k.re;
                    sample += k.text;
                }
            }
            return s;
        }
    }
}

void run_fuzzed_rules(FuzzedDataProvider& fdp) {
    std::vector<fastret::redact_rule> rules;
    std::string samples;  // text the generated patterns match
    bool uses_any_byte = false;
    for (int n = fdp.ConsumeIntegralInRange(1, 3); n > 0; --n) {
        fastret::redact_rule r;
        r.name = "rule" + std::to_string(rules.size());
        r.kind = static_cast<redact_kind>(fdp.ConsumeIntegralInRange(0, 2));
        r.mode = static_cast<redact_mode>(fdp.ConsumeIntegralInRange(0, 2));
        for (int k = fdp.ConsumeIntegralInRange(0, 3); k > 0; --k) {
            r.patterns.push_back(pattern_text(fdp, samples));
            uses_any_byte = uses_any_byte || r.patterns.back().find("\\C") != std::string::npos;
        }
        rules.push_back(std::move(r));
    }
    const std::string hmac_key = fdp.ConsumeBool() ? fdp.ConsumeRandomLengthString(16) : "";
    std::unique_ptr<fastret::redactor> red, full;
    try {
        red = std::make_unique<fastret::redactor>(rules, hmac_key);
        full = std::make_unique<fastret::redactor>(rules, hmac_key, false);
    } catch (const fastret::config_error& e) {
        fuzz::trace("refused" + rules_text(rules) + ": " + e.what());
        return;  // refused, by name: fine
    }
    fuzz::trace("rules" + rules_text(rules));
    fastret::key_cache keys;
    for (int n = fdp.ConsumeIntegralInRange(0, 3); n > 0; --n) {
        std::vector<std::string> path;
        for (int k = fdp.ConsumeIntegralInRange(0, 4); k > 0; --k)
            path.push_back(fdp.ConsumeRandomLengthString(8));
        const std::string key = fdp.ConsumeRandomLengthString(16);
        const field_action a = red->match_field(views(path), key);
        const field_action want = ref_match_field(rules, views(path), key);
        FUZZ_CHECK(a == want, std::string(action_name(a)) + " for " + path_text(path, key) +
                                  ", expected " + action_name(want) +
                                  "; rules:" + rules_text(rules));
        for (int twice = 0; twice < 2; ++twice) {
            const field_action cached = full->match_field(views(path), key, &keys);
            FUZZ_CHECK(cached == want, std::string(action_name(cached)) + " from the key cache for " +
                                           path_text(path, key) + ", expected " + action_name(want) +
                                           "; rules:" + rules_text(rules));
        }
    }
    const std::string in = fdp.ConsumeBool()
                               ? fuzz::any_string(fdp, 256)
                               : fuzz::any_string(fdp, 16) + samples + fuzz::any_string(fdp, 16);
    std::string out = "untouched";
    const bool changed = red->redact_value(in, out);
    fuzz::trace("value " + fuzz::show(in) + (changed ? " -> " + fuzz::show(out) : " unchanged"));
    std::string full_out = "untouched";
    const bool full_changed = full->redact_value(in, full_out);
    FUZZ_CHECK(full_changed == changed && full_out == out,
               "the prefilter changed the result for " + fuzz::show(in) + ": " + fuzz::show(out) +
                   " instead of " + fuzz::show(full_out) + "; rules:" + rules_text(rules));
    if (!changed) {
        FUZZ_CHECK(out == "untouched", "out written without a match");
        return;
    }
    if (!uses_any_byte && fuzz::utf8_valid(in))
        FUZZ_CHECK(fuzz::utf8_valid(out), "UTF-8 broken: " + fuzz::show(in) + " -> " +
                                              fuzz::show(out) + "; rules:" + rules_text(rules));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    FuzzedDataProvider fdp(data + 1, size - 1);
    if (data[0] & 1)
        run_fuzzed_rules(fdp);
    else
        run_defaults(fdp);
    return 0;
}
