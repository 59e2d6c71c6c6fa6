"""The configuration model of the routed ``fastret`` returner.

A ``fastret:`` block in the master/minion config (or pillar) names sinks and routes::

    fastret:
      sinks:
        audit: {type: file, path: /var/log/salt/fastret.jsonl}
        store: {type: sqlite, path: /var/cache/salt/master/fastret/fastret.db}
      routes:                       # optional: by default every record goes to every sink
        - sinks: [audit]
          kinds: [job_return, event]
          fun: ["state.*"]
          tag: ["salt/auth*"]
          success: false
      deliver_timeout: 2.0

Everything is validated once, when the block is read; unknown keys, wrong types and
out-of-range values raise ConfigError naming the sink or route and the key.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field

from fastret import ConfigError, native

RECORD_KINDS = ("job_return", "job_load", "job_minions", "event", "job_endtime")

# Options read by the Python layer, not by a sink: (type, default, doc).
PYTHON_OPTIONS = {
    "deliver_timeout": (float, 2.0, "seconds returner()/save_load() wait for delivery before "
                        "leaving the rest to the spool and returning"),
    "max_depth": (int, 100, "nesting depth of return data kept; deeper containers become a "
                  "{\"__fastret_truncated__\": \"depth\"} marker"),
    "bytes_encoding": (str, "text", "bytes in return data: 'text' (UTF-8, invalid sequences "
                       "replaced) or 'base64'"),
    "redact": (dict, True, "redaction of secrets before any sink or the spool sees a record: "
               "true (the built-in rules), false (none), or a mapping, see Redaction below"),
}

class Secret(str):
    """A secret value: the text itself for code that uses it, masked in repr() and str() so
    that it cannot end up in a log line or a traceback by accident."""

    __slots__ = ()

    def __repr__(self):
        return "'********'"

    __str__ = __repr__


REDACT_KEYS = {"defaults", "rules", "hmac_key_file", "hmac_key_env"}
REDACT_RULE_KEYS = {"name", "keys", "paths", "pattern", "mode"}
REDACT_MODES = ("mask", "drop", "hash")


def _check_keys(owner: str, mapping: dict, allowed) -> None:
    """Refuses a key of `mapping` that is not in `allowed`, naming it and the allowed ones."""
    unknown = set(mapping) - set(allowed)
    if unknown:
        raise ConfigError(f"{owner}: unknown key '{sorted(unknown)[0]}'; allowed keys: "
                          f"{', '.join(sorted(allowed))}")


def _read_private_file(owner: str, key: str, path) -> str:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{owner}: '{key}' must be a file path")
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{owner}: '{key}': cannot read '{path}': {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise ConfigError(f"{owner}: '{key}': '{path}' may be read by group or others (mode "
                          f"{st.st_mode & 0o7777:04o}); a key file must be private (chmod 600)")
    with open(path, encoding="utf-8") as fh:
        return fh.read().rstrip("\r\n")


def parse_redact(owner: str, value):
    """A `redact` option (true / false / mapping) as the native layer takes it:
    {"defaults": bool, "hmac_key": str, "rules": [{name, kind, patterns, mode}]}, or None for
    no redaction at all."""
    owner = f"{owner}: redact"
    if value is True or value is None:
        value = {}
    if value is False:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{owner}: must be true, false or a mapping, got {value!r}")
    _check_keys(owner, value, REDACT_KEYS)
    defaults = value.get("defaults", True)
    if not isinstance(defaults, bool):
        raise ConfigError(f"{owner}: 'defaults' must be true or false")
    hmac_key = ""
    if "hmac_key_file" in value and "hmac_key_env" in value:
        raise ConfigError(f"{owner}: set only one of 'hmac_key_file' and 'hmac_key_env'")
    if "hmac_key_file" in value:
        hmac_key = _read_private_file(owner, "hmac_key_file", value["hmac_key_file"])
    elif "hmac_key_env" in value:
        name = value["hmac_key_env"]
        if not isinstance(name, str) or name not in os.environ:
            raise ConfigError(f"{owner}: 'hmac_key_env': environment variable {name!r} is not set")
        hmac_key = os.environ[name]
    rules = []
    raw_rules = value.get("rules", [])
    if not isinstance(raw_rules, list):
        raise ConfigError(f"{owner}: 'rules' must be a list of mappings")
    for i, rule in enumerate(raw_rules):
        rowner = f"{owner} rule {i + 1}"
        if not isinstance(rule, dict):
            raise ConfigError(f"{rowner}: must be a mapping")
        _check_keys(rowner, rule, REDACT_RULE_KEYS)
        kinds = [k for k in ("keys", "paths", "pattern") if k in rule]
        if len(kinds) != 1:
            raise ConfigError(f"{rowner}: give exactly one of 'keys', 'paths', 'pattern'")
        kind = kinds[0]
        patterns = rule[kind]
        patterns = list(_str_tuple(rowner, kind, patterns))
        if not patterns:
            raise ConfigError(f"{rowner}: '{kind}' is empty")
        mode = rule.get("mode", "mask")
        if mode not in REDACT_MODES:
            raise ConfigError(f"{rowner}: 'mode' is {mode!r}; allowed: {', '.join(REDACT_MODES)}")
        name = rule.get("name") or f"rule{i + 1}"
        if not isinstance(name, str):
            raise ConfigError(f"{rowner}: 'name' must be a string")
        rules.append({"name": name, "kind": {"keys": "key", "paths": "path",
                                             "pattern": "value"}[kind],
                      "patterns": patterns, "mode": mode})
    spec = {"defaults": defaults, "hmac_key": Secret(hmac_key), "rules": rules}
    try:
        native().redactor(spec)  # compiles the patterns: a bad one is refused here, by name
    except native().ConfigError as exc:
        raise ConfigError(f"{owner}: {exc}") from None
    return spec

TOP_LEVEL_KEYS = {"sinks", "routes", "spool_dir", "allow_return_kwargs"} | set(PYTHON_OPTIONS)
ROUTE_KEYS = {"sinks", "kinds", "fun", "tag", "success"}


def check_python_option(owner: str, key: str, value):
    """Validate one Python-level option; returns the value converted to its type."""
    if key == "redact":
        return parse_redact(owner, value)
    typ, _default, _doc = PYTHON_OPTIONS[key]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, typ) or isinstance(value, bool):
        raise ConfigError(f"{owner}: option '{key}' must be a {typ.__name__}, got {value!r}")
    if key == "deliver_timeout" and not 0 <= value <= 3600:
        raise ConfigError(f"{owner}: option '{key}' is {value}; allowed range: 0..3600")
    if key == "max_depth" and not 1 <= value <= 10000:
        raise ConfigError(f"{owner}: option '{key}' is {value}; allowed range: 1..10000")
    if key == "bytes_encoding" and value not in ("text", "base64"):
        raise ConfigError(f"{owner}: option '{key}' is {value!r}; allowed values: text, base64")
    return value


@dataclass(frozen=True)
class Route:
    sinks: tuple
    kinds: tuple = ()
    fun: tuple = ()
    tag: tuple = ()
    success: bool | None = None

    def matches(self, kind: str, fun: str, tag: str, success) -> bool:
        if self.kinds and kind not in self.kinds:
            return False
        if self.fun and not any(fnmatch.fnmatchcase(fun or "", p) for p in self.fun):
            return False
        if self.tag and not any(fnmatch.fnmatchcase(tag or "", p) for p in self.tag):
            return False
        if self.success is not None and success is not None and bool(success) != self.success:
            return False
        if self.success is not None and success is None and kind == "job_return":
            return False
        return True


@dataclass
class SinkConfig:
    name: str          # runtime-wide unique name; also the spool directory's name
    type: str
    options: dict      # sink + common options, as passed to the native layer
    spool_root: str = ""  # the spool goes to <spool_root>/<name> unless options set spool_dir

    @property
    def spool_dir(self) -> str | None:
        """The directory of this sink's spool, or None when it has none."""
        if self.options.get("spool") is False:
            return None
        if self.options.get("spool_dir"):
            return str(self.options["spool_dir"])
        return os.path.join(self.spool_root, self.name) if self.spool_root else None


@dataclass
class PipelineConfig:
    sinks: list
    routes: list = field(default_factory=list)
    spool_root: str = ""
    deliver_timeout: float = 2.0
    max_depth: int = 100
    bytes_encoding: str = "text"
    redact: dict | None = field(default_factory=lambda: parse_redact("fastret", True))



def _str_tuple(owner, key, value):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{owner}: '{key}' must be a string or a list of strings, got {value!r}")
    return tuple(value)


def _fastret_dir(opts) -> str:
    return os.path.join(opts.get("cachedir") or "/var/cache/salt", "fastret")


def default_store_path(opts) -> str:
    return os.path.join(_fastret_dir(opts), "fastret.db")


def default_spool_root(opts) -> str:
    return os.path.join(_fastret_dir(opts), "spool")


def default_block(opts) -> dict:
    """The embedded default: a SQLite job store and a JSON-lines audit file under cachedir."""
    base = _fastret_dir(opts)
    return {
        "sinks": {
            "store": {"type": "sqlite", "path": os.path.join(base, "fastret.db")},
            "audit": {"type": "file", "path": os.path.join(base, "audit.jsonl")},
        }
    }


def parse_block(block, opts, name_prefix: str = "fastret") -> PipelineConfig:
    """Validate a ``fastret:`` block (or the default) into a PipelineConfig."""
    owner = "fastret config"
    if block is None:
        block = default_block(opts)
    if not isinstance(block, dict):
        raise ConfigError(f"{owner}: must be a mapping, got {type(block).__name__}")
    _check_keys(owner, block, TOP_LEVEL_KEYS)
    sinks_raw = block.get("sinks")
    if not isinstance(sinks_raw, dict) or not sinks_raw:
        raise ConfigError(f"{owner}: 'sinks' must be a non-empty mapping of name -> sink options")
    cfg = PipelineConfig(sinks=[])
    for key in PYTHON_OPTIONS:
        if key in block:
            setattr(cfg, key, check_python_option(owner, key, block[key]))
    spool_dir = block.get("spool_dir", default_spool_root(opts))
    if not isinstance(spool_dir, str) or not spool_dir:
        raise ConfigError(f"{owner}: 'spool_dir' must be a non-empty string")
    cfg.spool_root = spool_dir
    nat = native()
    for name, raw in sinks_raw.items():
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{owner}: sink name {name!r} must be letters, digits, '-' or '_'")
        if not isinstance(raw, dict):
            raise ConfigError(f"{owner}: sink '{name}' must be a mapping of options")
        raw = dict(raw)
        typ = raw.pop("type", None)
        if not isinstance(typ, str):
            known = ", ".join(t["type"] for t in nat.sink_types())
            raise ConfigError(f"sink '{name}': option 'type' is required; known types: {known}")
        from fastret.salt_glue import resolve_secrets  # noqa: PLC0415 - a cycle otherwise

        if typ in {t["type"] for t in nat.sink_types()}:
            raw = resolve_secrets(f"sink '{name}'", typ, raw, opts)
        try:
            nat.validate_sink(name, typ, raw)
        except nat.ConfigError as exc:
            raise ConfigError(str(exc)) from None
        cfg.sinks.append(SinkConfig(name=f"{name_prefix}.{name}", type=typ, options=raw,
                                    spool_root=spool_dir))
    short_names = {s.name.split(".", 1)[1]: s.name for s in cfg.sinks}
    routes = block.get("routes") or []
    if not isinstance(routes, list):
        raise ConfigError(f"{owner}: 'routes' must be a list of mappings, got {type(routes).__name__}")
    for i, route in enumerate(routes):
        rowner = f"fastret route {i + 1}"
        if not isinstance(route, dict):
            raise ConfigError(f"{rowner}: must be a mapping")
        _check_keys(rowner, route, ROUTE_KEYS)
        targets = _str_tuple(rowner, "sinks", route.get("sinks", []))
        if not targets:
            raise ConfigError(f"{rowner}: 'sinks' must name at least one sink")
        for t in targets:
            if t not in short_names:
                raise ConfigError(f"{rowner}: unknown sink '{t}'; defined sinks: "
                                  f"{', '.join(sorted(short_names))}")
        kinds = _str_tuple(rowner, "kinds", route.get("kinds", []))
        for k in kinds:
            if k not in RECORD_KINDS:
                raise ConfigError(f"{rowner}: unknown kind '{k}'; allowed: {', '.join(RECORD_KINDS)}")
        success = route.get("success")
        if success is not None and not isinstance(success, bool):
            raise ConfigError(f"{rowner}: 'success' must be true or false")
        cfg.routes.append(Route(
            sinks=tuple(short_names[t] for t in targets), kinds=kinds,
            fun=_str_tuple(rowner, "fun", route.get("fun", [])),
            tag=_str_tuple(rowner, "tag", route.get("tag", [])), success=success))
    return cfg
