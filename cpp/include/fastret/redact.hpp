// Redaction: secrets are taken out of a record's payload while it is encoded, before any
// sink, the spool or a log sees it.
//
// Three kinds of rule:
//  - key:   a field whose name matches a case-insensitive glob (`*password*`, `token`) loses its
//           value, whatever the value is (a string, a number, a whole nested object);
//  - path:  a field at a path from the payload's root (`return.*.changes.diff`; `*` is one
//           segment: any key or array element, `**` any number of segments) likewise;
//  - value: every match of an RE2 pattern inside any string value is replaced; with a group
//           named `secret` (`(?P<secret>...)`) only that group is. RE2 runs in linear time:
//           no input makes a pattern backtrack catastrophically.
//
// Most strings hold no secret, so a value rule is tried on a string only if the string contains
// one of the rule's required literals (RE2's own prefilter analysis: `bearer` for the bearer
// rule, `akia`/`asia` for AWS keys, ...), searched ASCII case-insensitively in one pass over
// the string. The prefilter is exact: it skips only strings the pattern cannot match. A rule
// without such a literal (or with a non-ASCII one), and any string with a non-ASCII byte, go
// to RE2 as before.
// Modes: mask (the value becomes "********"), drop (key and path rules: the field is left out),
// hash (the value becomes "hmac:" + the first 128 bits of HMAC-SHA256 under the configured key,
// in hex: equal inputs give equal pseudonyms, so they still correlate across records and
// minions, while the value cannot be read back without the key).
//
// Thread-safety: a redactor is immutable after construction except for its match counters
// (atomics); any number of threads may use one at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fastret {

enum class redact_mode { mask, drop, hash };
enum class redact_kind { key, path, value };

struct redact_rule {
    std::string name;                  // for the counters ("key:password", "pem_private_key")
    redact_kind kind = redact_kind::key;
    std::vector<std::string> patterns;  // key globs, paths, or one RE2 pattern (value rules)
    redact_mode mode = redact_mode::mask;
};

// What a key or path rule says about one field.
enum class field_action { keep, mask, drop, hash };

constexpr std::string_view redaction_mask = "********";

class redactor;

// match_field()'s answers for keys seen before, for a redactor without path rules (whose
// answer depends on the key alone). A batch of records repeats the same keys (jid, fun,
// return, result, changes, ...): a repeated key costs one hash and one compare instead of the
// rules. Owned by one caller and used by one thread at a time (a stack object per batch, say);
// it may be reused with another redactor, and then forgets the old one's answers.
class key_cache {
public:
    key_cache() noexcept { clear(); }

private:
    friend class redactor;
    static constexpr std::size_t slots = 128;
    static constexpr std::size_t max_key = 23;  // longer keys are not cached
    struct slot {
        char key[max_key];
        std::uint8_t len;  // 0xFF: empty
        int rule;          // index of the first matching field rule, -1 for none
    };
    void clear() noexcept {
        for (auto& s : slots_) s.len = 0xFF;
    }
    std::uint64_t owner_ = 0;  // the redactor's serial number
    slot slots_[slots];
};

class redactor {
public:
    // Compiles the rules. Throws config_error naming the rule for a pattern RE2 rejects, an
    // empty rule, `drop` on a value rule, or `hash` without a key (`hmac_key` empty).
    // `literal_prefilter` false runs every value pattern on every string: the same results,
    // slower (the reference the prefilter is tested against).
    redactor(std::vector<redact_rule> rules, std::string hmac_key, bool literal_prefilter = true);
    ~redactor();
    redactor(const redactor&) = delete;
    redactor& operator=(const redactor&) = delete;

    // The built-in rules: secret-looking key names (password, passwd, pass, secret, token,
    // api_key, apikey, private_key, key_data, authorization, cookie, and names containing
    // password/passwd/secret/token/private_key) and value patterns for PEM private keys, bearer
    // tokens, passwords in URLs (scheme://user:password@host) and AWS access key ids. All mask.
    static std::vector<redact_rule> default_rules();

    bool has_field_rules() const noexcept;  // key or path rules exist
    bool has_path_rules() const noexcept;
    bool has_value_rules() const noexcept;
    // Value rules that have a literal prefilter; the others run RE2 on every string.
    std::size_t prefiltered_value_rules() const noexcept;

    // The action for the field `key` whose parent is at `path` (segments from the payload
    // root; array elements are "*"). The first matching rule wins and is counted. `cache`
    // (optional) remembers answers by key when there are no path rules.
    field_action match_field(std::span<const std::string_view> path, std::string_view key,
                             key_cache* cache = nullptr) const;

    // Applies the value rules to `in`. Returns false (and leaves `out` alone) if nothing
    // matched; otherwise `out` holds the redacted text and every match is counted.
    bool redact_value(std::string_view in, std::string& out) const;

    // "hmac:" + 32 hex digits of HMAC-SHA256(key, data). Requires an hmac key.
    std::string pseudonym(std::string_view data) const;

    // (rule name, matches so far), in rule order.
    std::vector<std::pair<std::string, std::uint64_t>> counts() const;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace fastret
