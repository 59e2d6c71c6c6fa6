"""Salt adaptation: Salt's returns, loads and events become records; options are resolved the
Salt way; job-cache reads come back in the shapes Salt's ``jobs`` runner expects.

The returner modules in ``returners/`` are thin: they call ``backend(...)`` and one method.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time

from fastret import ConfigError, native
from fastret.config import (
    PYTHON_OPTIONS,
    TOP_LEVEL_KEYS,
    default_block,
    PipelineConfig,
    SinkConfig,
    check_python_option,
    default_spool_root,
    default_store_path,
    parse_block,
)
from fastret.pipeline import Pipeline

log = logging.getLogger("fastret")

# Seconds save_load()/prep_jid() wait: the salt CLI reads the load right after publishing.
JOB_CACHE_WAIT = 10.0
# Sink types with a job store (job-cache reads).
STORE_TYPES = ("sqlite", "postgres", "mysql")
# After a job store read fails, reads answer from the spool alone for this long.
STORE_RETRY_SECONDS = 5.0
# How many stored jids a process remembers to skip Salt's repeated save_load calls.
SAVED_LOADS_KEPT = 4096

# ---------------------------------------------------------------------------------------------
# records


def _text(value) -> str:
    return "" if value is None else str(value)


def return_record(ret: dict):
    success, retcode = ret.get("success"), ret.get("retcode")
    # salt-call sets ret["success"] = True before calling the returners whatever the retcode
    # (a minion sets success = retcode == 0): a nonzero retcode is a failure either way, so that
    # `success: false` routes and the success column see salt-call failures too. The payload
    # keeps Salt's ret as it was.
    if isinstance(retcode, int) and not isinstance(retcode, bool) and retcode != 0:
        success = False
    return ("job_return", _text(ret.get("jid")), _text(ret.get("id")), _text(ret.get("fun")), "",
            success, retcode, ret)


# Credentials a client sends with an eauth publish (in the load's `kwargs`): never stored,
# whatever the configuration says.
EAUTH_KEYS = ("username", "password", "token", "eauth")
SCRUBBED = "********"


def scrub_eauth(data):
    """`data` with eauth credentials masked in its `kwargs` (a copy; `data` is unchanged)."""
    if not isinstance(data, dict):
        return data
    kwargs = data.get("kwargs")
    if not isinstance(kwargs, dict) or not any(k in kwargs for k in EAUTH_KEYS):
        return data
    return {**data, "kwargs": {k: (SCRUBBED if k in EAUTH_KEYS else v) for k, v in kwargs.items()}}


def load_record(jid, load: dict):
    return ("job_load", _text(jid), "", _text(load.get("fun")), "", None, None, scrub_eauth(load))


def minions_record(jid, minions):
    return ("job_minions", _text(jid), "", "", "", None, None, sorted({str(m) for m in minions}))


def endtime_record(jid, endtime):
    return ("job_endtime", _text(jid), "", "", "", None, None, _text(endtime))


def event_record(event: dict, master_id: str):
    data = event.get("data")
    fun = data.get("fun") if isinstance(data, dict) else None
    jid = data.get("jid") if isinstance(data, dict) else None
    success = data.get("success") if isinstance(data, dict) else None
    return ("event", _text(jid), master_id, _text(fun), _text(event.get("tag")), success, None, data)


# ---------------------------------------------------------------------------------------------
# option resolution


def _sink_table(sink_type: str):
    nat = native()
    for info in nat.sink_types():
        if info["type"] == sink_type:
            return info["options"]
    raise ConfigError(f"unknown sink type '{sink_type}'")


def _option_tables(sink_type: str) -> tuple[list, list]:
    """(the sink type's option table, the options common to every sink), read once."""
    return _sink_table(sink_type), native().common_options()


def _secret_keys(table) -> set:
    return {o["key"] for o in table if o.get("secret")}


def allowed_keys(sink_type: str, tables=None) -> list:
    table, common = tables or _option_tables(sink_type)
    keys = [o["key"] for o in table] + [o["key"] for o in common]
    return sorted(set(keys) | set(PYTHON_OPTIONS))


def _configured_keys(virtualname: str, opts: dict):
    """Keys the user set for this returner in the config or pillar: nested `name: {...}` and
    flat `name.key`, including `--return_config` profiles (`profile.name.key`)."""
    keys = set()
    pillar = opts.get("pillar") if isinstance(opts.get("pillar"), dict) else {}
    for source in (opts, pillar):
        nested = source.get(virtualname)
        if isinstance(nested, dict):
            keys.update(nested)
        for key, value in source.items():
            if not isinstance(key, str):
                continue
            if key.startswith(virtualname + "."):
                keys.add(key[len(virtualname) + 1:])
            elif f".{virtualname}." in key:
                keys.add(key.split(f".{virtualname}.", 1)[1])
            elif key.endswith("." + virtualname) and isinstance(value, dict):
                keys.update(value)
    return keys


def _opts_config_option(opts: dict):
    """Salt's config.option over opts and pillar alone, for callers without a loaded __salt__
    (the fastret CLI, returners loaded with functions={}). Without a config.option,
    get_returner_options looks up a nested `<module>: {key: ...}` option at the top level of
    opts, where it is not, so the CLI would resolve another destination (and another spool)
    than Salt does."""
    pillar = opts.get("pillar") if isinstance(opts.get("pillar"), dict) else {}

    def option(key, default=""):
        if key in opts:
            return opts[key]
        return pillar.get(key, default)

    return option


# --return_kwargs comes from whoever may publish a job, not from the administrator: it may not
# change where records go, who connects or how the connection is secured, unless the
# configuration's `allow_return_kwargs` list names the key.
PROTECTED_KWARGS = {"host", "port", "user", "pass", "password", "db", "database", "dsn",
                    "unix_socket", "path", "spool", "spool_dir", "sinks", "routes",
                    "allow_return_kwargs", "url", "create_schema", "redact"}
PROTECTED_PREFIXES = ("ssl", "tls", "verify", "ca_", "cert", "client_cert", "pin")
PROTECTED_SUFFIXES = ("_file", "_env", "_path", "_dir", "_key", "_cert", "_ca")


def _protected(key: str, secret_keys=()) -> bool:
    return (key in PROTECTED_KWARGS or key in secret_keys or key.startswith(PROTECTED_PREFIXES)
            or key.endswith(PROTECTED_SUFFIXES))


def _allow_list(virtualname: str, opts: dict, block=None) -> set:
    """The configuration's `allow_return_kwargs` for a returner (never from a job's kwargs)."""
    if virtualname == "fastret":
        value = block.get("allow_return_kwargs") if isinstance(block, dict) else None
    else:
        pillar = opts.get("pillar") if isinstance(opts.get("pillar"), dict) else {}
        value = None
        for source in (opts, pillar):
            nested = source.get(virtualname)
            if isinstance(nested, dict) and "allow_return_kwargs" in nested:
                value = nested["allow_return_kwargs"]
            if f"{virtualname}.allow_return_kwargs" in source:
                value = source[f"{virtualname}.allow_return_kwargs"]
            if value is not None:
                break
    if value is None:
        return set()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{virtualname}: 'allow_return_kwargs' must be a list of option names")
    return set(value)


def check_return_kwargs(virtualname: str, ret, allowed_extra: set, secret_keys=()) -> None:
    """Refuse --return_kwargs that would redirect or re-authenticate the returner."""
    kwargs = ret.get("ret_kwargs") if isinstance(ret, dict) else None
    if not isinstance(kwargs, dict):
        return
    refused = sorted(k for k in kwargs if _protected(str(k), secret_keys)
                     and (k not in allowed_extra or k == "allow_return_kwargs"))
    if refused:
        raise ConfigError(
            f"{virtualname}: --return_kwargs may not set '{refused[0]}': it would change where "
            f"records go or how the connection is made; an administrator can allow it with "
            f"'allow_return_kwargs' in the {virtualname} configuration")


def resolve_secrets(owner: str, sink_type: str, options: dict, opts: dict,
                    table=None) -> dict:
    """Secret options given as Salt `sdb://profile/key` URIs, resolved through Salt's sdb (the
    profile comes from the master/minion config). A URI that resolves to nothing is an error
    naming the option, never a login with the URI as password. `table`: the sink type's
    option table, if the caller has it."""
    secret_keys = _secret_keys(_sink_table(sink_type) if table is None else table)
    out = dict(options)
    for key in secret_keys & set(out):
        value = out[key]
        if not (isinstance(value, str) and value.startswith("sdb://")):
            continue
        import salt.utils.sdb  # noqa: PLC0415 - only ever called inside Salt

        try:
            resolved = salt.utils.sdb.sdb_get(value, opts, strict=True)
        except Exception as exc:  # noqa: BLE001 - sdb drivers raise anything
            raise ConfigError(f"{owner}: option '{key}': cannot read its sdb URI: "
                              f"{type(exc).__name__}") from None
        if resolved is None or resolved == value:
            raise ConfigError(f"{owner}: option '{key}': its sdb URI gave no value")
        out[key] = str(resolved)
    return out


def resolve_sink_options(virtualname: str, sink_type: str, ret, opts: dict, salt_funcs,
                         defaults: dict) -> tuple[dict, dict]:
    """Options for a one-sink returner: (sink options, python options). Unknown keys in the
    config or in --return_kwargs are errors naming the key, and so are --return_kwargs that
    would redirect the returner (see check_return_kwargs)."""
    import salt.returners  # noqa: PLC0415 - only ever called inside Salt

    tables = _option_tables(sink_type)
    check_return_kwargs(virtualname, ret, _allow_list(virtualname, opts), _secret_keys(tables[0]))
    allowed = sorted(set(allowed_keys(sink_type, tables)) | {"allow_return_kwargs"})
    unknown = sorted(_configured_keys(virtualname, opts).difference(allowed))
    if ret and isinstance(ret.get("ret_kwargs"), dict):
        unknown += sorted(set(ret["ret_kwargs"]).difference(allowed))
    if unknown:
        raise ConfigError(f"{virtualname}: unknown option '{unknown[0]}'; allowed options: "
                          f"{', '.join(allowed)}")
    if not salt_funcs or "config.option" not in salt_funcs:
        salt_funcs = {"config.option": _opts_config_option(opts)}
    found = dict(defaults)
    # The stock returner's keys first (`returner.pgjsonb.host`, `mysql.pass`, ...), so that
    # switching `master_job_cache: pgjsonb` to fastret_postgres is a one-line change; fastret's
    # own keys win over them.
    for prefix, keymap in STOCK_FALLBACKS.get(virtualname, ()):
        stock = salt.returners.get_returner_options(
            prefix, ret, {k: k for k in keymap}, __salt__=salt_funcs, __opts__=opts)
        for stock_key, value in stock.items():
            if stock_key in keymap:
                own_key, convert = keymap[stock_key]
                found[own_key] = convert(value)
    found.update(salt.returners.get_returner_options(
        virtualname, ret, {k: k for k in allowed}, __salt__=salt_funcs, __opts__=opts))
    found = coerce_options(sink_type, found, tables)
    found.pop("allow_return_kwargs", None)
    found = resolve_secrets(virtualname, sink_type, found, opts, tables[0])
    py_opts = {k: spec[1] for k, spec in PYTHON_OPTIONS.items() if k != "redact"}
    sink_opts = {}
    for key, value in found.items():
        if key in PYTHON_OPTIONS:
            py_opts[key] = check_python_option(virtualname, key, value)
        else:
            sink_opts[key] = value
    return sink_opts, py_opts


def _same(value):
    return value


def _seconds_to_ms(value):
    return int(float(value) * 1000)


# Per module: (stock prefix, {stock key: (fastret key, conversion)}), first one first.
_PG_KEYS = {k: (k, _same) for k in ("host", "port", "db", "user", "pass", "sslmode",
                                     "sslrootcert", "sslcert", "sslkey")}
_PG_KEYS["connect_timeout"] = ("connect_timeout_ms", _seconds_to_ms)
STOCK_FALLBACKS = {
    "fastret_postgres": (("returner.postgres", _PG_KEYS), ("returner.pgjsonb", _PG_KEYS)),
    "fastret_mysql": (("mysql", {k: (k, _same) for k in ("host", "port", "db", "user", "pass",
                                                         "ssl_ca", "ssl_cert", "ssl_key")}),),
    # The stock syslog returner's keys (syslog.level: LOG_INFO, syslog.facility: LOG_USER,
    # syslog.tag, syslog.options: [LOG_PID, ...]); the sink accepts the LOG_* spellings.
    "fastret_syslog": (("syslog", {k: (k, _same) for k in ("level", "facility", "tag",
                                                           "options")}),),
}


def coerce_options(sink_type: str, found: dict, tables=None) -> dict:
    """Values from pillar, the command line or an environment often come as strings: an
    integer or boolean option given as "5432" or "true" is taken as such. Anything else is
    left for the strict validation to refuse with the key named. `tables`: what
    _option_tables(sink_type) gives, if the caller has it."""
    table, common = tables or _option_tables(sink_type)
    types = {o["key"]: o["type"] for o in (*table, *common)}
    out = {}
    for key, value in found.items():
        kind = types.get(key)
        if isinstance(value, str) and kind == "integer" and value.strip().lstrip("-").isdigit():
            value = int(value)
        elif isinstance(value, str) and kind == "boolean" and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# backends


class Backend:
    """What a returner module calls. One per (module, resolved options) per process."""

    def __init__(self, name: str, cfg: PipelineConfig, opts: dict):
        self.name = name
        self.cfg = cfg
        self.opts = opts
        self.pipeline = Pipeline(cfg)
        self.logger = logging.getLogger(f"salt.loaded.ext.returners.{name}")
        self._store = None
        self._store_down_until = 0.0  # reads skip the database until then (see store())
        self._saved_loads: dict = {}  # jids whose load this process stored, oldest first
        self._store_sink = next((sk for sk in cfg.sinks if sk.type in STORE_TYPES), None)

    # -- writes -----------------------------------------------------------------------------

    def _submit(self, records, wait):
        delivered = self.pipeline.submit(records, wait=wait, logger=self.logger)
        if wait and not delivered:
            self.logger.warning(
                "%s: not delivered yet (the destination is failing or slower than %.1fs); "
                "kept in the spool and delivered later", self.name, wait)
        return delivered

    def returner(self, ret: dict):
        if ret.get("jid") == "req":
            ret["jid"] = self.prep_jid(nocache=ret.get("nocache", False))
        records = [return_record(ret)]
        if self.opts.get("__role") == "minion":
            # A minion's --return has no publish load (no master stored one): record the job
            # the way Salt's own job store does for a minion-initiated job, so the job list
            # shows it. On a master the publish load always comes first and wins.
            records.insert(0, load_record(ret.get("jid"), {
                "jid": ret.get("jid"), "fun": ret.get("fun"), "arg": ret.get("fun_args", []),
                "tgt": ret.get("id"), "tgt_type": "glob", "user": ret.get("user", "")}))
        self._submit(records, self.cfg.deliver_timeout)

    def event_return(self, events):
        master_id = _text(self.opts.get("id"))
        # Salt clears the list after the call: records are built (copied) here and now, in
        # the native layer when no route needs to look at them first.
        self.pipeline.submit_events(events, master_id, logger=self.logger,
                                    record_of=lambda e: event_record(e, master_id))

    def save_load(self, jid, load, minions=None):
        # Salt's master calls save_load again with every return of a job (for any job cache
        # but local_cache). The store keeps the first load anyway (insert-if-absent); skipping
        # the jids this process already stored spares each return a write and a wait.
        key = str(jid)
        if not minions and key in self._saved_loads:
            return
        records = [load_record(jid, load)]
        if minions:
            records.append(minions_record(jid, minions))
        if self._submit(records, max(self.cfg.deliver_timeout, JOB_CACHE_WAIT)):
            self._saved_loads[key] = None
            while len(self._saved_loads) > SAVED_LOADS_KEPT:
                del self._saved_loads[next(iter(self._saved_loads))]

    def save_minions(self, jid, minions, syndic_id=None):  # noqa: ARG002 - Salt's signature
        self._submit([minions_record(jid, minions)], max(self.cfg.deliver_timeout, JOB_CACHE_WAIT))

    def prep_jid(self, nocache=False, passed_jid=None):  # noqa: ARG002 - Salt's signature
        if passed_jid:
            return passed_jid
        import salt.utils.jid  # noqa: PLC0415

        return salt.utils.jid.gen_jid(self.opts)

    def update_endtime(self, jid, endtime):
        self._submit([endtime_record(jid, endtime)], self.cfg.deliver_timeout)

    # -- reads ------------------------------------------------------------------------------

    def store(self, force: bool = False):
        """The job store of the first database sink, opened on first use. Raises StoreError
        while the database cannot be reached; after a failure the next STORE_RETRY_SECONDS of
        reads do not try again (each try could cost a connect timeout), they use the spool."""
        if self._store_sink is None:
            raise ConfigError(f"{self.name}: job-cache reads need a database sink "
                              f"({', '.join(STORE_TYPES)}) in the configuration")
        if self._store is None:
            nat = native()
            if not force and time.monotonic() < self._store_down_until:
                raise nat.StoreError(f"{self.name}: the job store was unreachable moments ago")
            try:
                self._store = nat.open_store(self._store_sink.type, dict(self._store_sink.options))
            except nat.ConfigError as exc:
                raise ConfigError(str(exc)) from None
            except nat.StoreError:
                self._store_down_until = time.monotonic() + STORE_RETRY_SECONDS
                raise
        return self._store

    def _read(self, what, fn, default, force=False):
        """A read of the job store; when the database fails, (default, False) and a warning,
        so that the caller can answer from the spool. `force` tries the database even within
        the pause after a failure."""
        try:
            return fn(self.store(force)), True
        except native().StoreError as exc:
            if self._store is not None:
                # A store whose connection failed is reopened (after the pause) by a later read.
                self._store = None
                self._store_down_until = time.monotonic() + STORE_RETRY_SECONDS
            now = time.monotonic()
            if now >= self._warned_until:
                self._warned_until = now + STORE_RETRY_SECONDS
                self.logger.warning("%s: %s: job store unavailable, answering from the spool: "
                                    "%s", self.name, what, exc)
            return default, False

    _warned_until = 0.0

    def _spooled(self, jid):
        """(kind, minion, payload JSON, ts_us) of this jid's records still waiting in the
        database sink's spool: written, not yet in the database."""
        sink = self._store_sink
        if sink is None or not sink.spool_dir:
            return []
        return native().spool_records(sink.spool_dir, str(jid))

    def get_load(self, jid):
        jid = str(jid)

        def read(st):
            return st.get_load(jid), st.get_minions_of(jid)

        found, ok = self._read("get_load", read, (None, None))
        if not ok and not self._spooled(jid):
            # Within the pause after a failure, with nothing of this job in the spool: the
            # database may be back and have drained the spool already.
            found, ok = self._read("get_load", read, (None, None), force=True)
        text, minions_text = found
        load = json.loads(text) if text else None
        minions = set(json.loads(minions_text)) if minions_text else set()
        if load is None or not minions:
            # Not in the database (yet): the database is down or the spool has not drained.
            for kind, _minion, payload, _ts in self._spooled(jid):
                if kind == "job_load" and load is None:
                    load = json.loads(payload)  # the first load wins, as in the store
                elif kind == "job_minions":
                    minions.update(json.loads(payload))
        if not load:
            return {}
        if minions:
            load["Minions"] = sorted(minions)
        return load

    def get_jid(self, jid):
        jid = str(jid)
        rows, ok = self._read("get_jid", lambda st: st.get_returns(jid), [])
        if not ok and not self._spooled(jid):
            rows, ok = self._read("get_jid", lambda st: st.get_returns(jid), [], force=True)
        latest = {minion: full_ret for minion, full_ret in rows}
        for kind, minion, payload, _ts in self._spooled(jid):
            if kind == "job_return":
                latest[minion] = payload  # newer than anything the database has
        out = {}
        for minion, full_ret in latest.items():
            data = json.loads(full_ret)
            if not isinstance(data, dict):
                data = {"return": data}
            out[minion] = {k: data[k] for k in ("return", "retcode", "success", "out") if k in data}
        return out

    def get_fun(self, fun):
        return dict(self.store().get_fun(str(fun)))

    def get_jids(self):
        import salt.utils.jid  # noqa: PLC0415

        return {jid: salt.utils.jid.format_jid_instance(jid, json.loads(load))
                for jid, load in self.store().get_jobs(0, False)}

    def get_jids_filter(self, count, filter_find_job=True):
        import salt.utils.jid  # noqa: PLC0415

        if int(count) <= 0:
            return []
        rows = self.store().get_jobs(int(count), bool(filter_find_job))
        return [salt.utils.jid.format_jid_instance_ext(jid, json.loads(load))
                for jid, load in reversed(rows)]

    def get_minions(self):
        return self.store().get_minion_ids()

    def get_endtime(self, jid):
        return self.store().get_endtime(str(jid)) or False

    def clean_old_jobs(self):
        seconds = self.opts.get("keep_jobs_seconds")
        if seconds is None:
            seconds = int(self.opts.get("keep_jobs", 24)) * 3600
        seconds = int(seconds)
        if seconds <= 0:
            return 0
        cutoff_us = int((time.time() - seconds) * 1_000_000)
        return self.store().clean_old_jobs(cutoff_us)


_backends_lock = threading.Lock()
_backends: dict = {}
_resolved: dict = {}  # see _resolve_cached
_cache_pid = [None]

# Objects a forked child inherited from its parent: kept alive, never closed there (closing
# an SQLite connection opened before fork() from the child is what SQLite forbids).
_inherited: list = []


def _this_process_locked():
    """Start both caches afresh in a forked child (the parent's entries are kept in
    _inherited, untouched). Called with _backends_lock held."""
    global _backends, _resolved  # noqa: PLW0603 - replaced, not cleared, after a fork
    if _cache_pid[0] != os.getpid():
        if _backends or _resolved:
            _inherited.append((_backends, _resolved))
            _backends, _resolved = {}, {}
        _cache_pid[0] = os.getpid()


def _cached(key, build):
    with _backends_lock:
        _this_process_locked()
        b = _backends.get(key)
        if b is None:
            b = _backends[key] = build()
        return b


def routed_block(opts: dict, ret=None, salt_funcs=None):
    """The `fastret:` block Salt would give this call: the config's (or pillar's) block; with
    `--return_config PROFILE`, the keys of `PROFILE.fastret` over it; with `--return_kwargs`,
    those keys over that (all resolved by salt.returners.get_returner_options, then validated
    like any block, so an unknown key is an error)."""
    block = opts.get("fastret")
    if block is None:
        block = (opts.get("pillar") or {}).get("fastret")
    if not (isinstance(ret, dict) and (ret.get("ret_config") or ret.get("ret_kwargs"))):
        return block
    import salt.returners  # noqa: PLC0415 - only ever called inside Salt

    if not salt_funcs or "config.option" not in salt_funcs:
        salt_funcs = {"config.option": _opts_config_option(opts)}
    check_return_kwargs("fastret", ret, _allow_list("fastret", opts, block))
    found = salt.returners.get_returner_options(
        "fastret", ret, {k: k for k in TOP_LEVEL_KEYS}, __salt__=salt_funcs, __opts__=opts)
    merged = dict(block if isinstance(block, dict) else default_block(opts))
    merged.update(found)
    return merged


# Resolving options walks Salt's opts (a locked mapping in 3008) and costs far more than
# delivering a record, so the result is reused for a few seconds per (module, opts object,
# --return_config, --return_kwargs). A sink, once started in a process, keeps the options it
# started with (its name is its identity, and its spool); a changed sink configuration takes
# effect when the process restarts, a new destination (another path) at once.
RESOLVE_TTL = 10.0


def _resolve_cached(key, resolve):
    now = time.monotonic()
    with _backends_lock:
        _this_process_locked()
        hit = _resolved.get(key)
        if hit and hit[0] > now:
            return hit[1]
    backend = resolve()
    with _backends_lock:
        if len(_resolved) > 256:
            _resolved.clear()
        _resolved[key] = (now + RESOLVE_TTL, backend)
    return backend


def _call_key(virtualname, opts, ret):
    ret_config = ret.get("ret_config") if isinstance(ret, dict) else None
    ret_kwargs = ret.get("ret_kwargs") if isinstance(ret, dict) else None
    kwargs = json.dumps(ret_kwargs, sort_keys=True, default=str) if ret_kwargs else None
    return (virtualname, id(opts), ret_config, kwargs)


def routed_backend(opts: dict, ret=None, salt_funcs=None) -> Backend:
    """The `fastret` returner: the routed pipeline of the `fastret:` block, or the default."""

    def resolve():
        block = routed_block(opts, ret, salt_funcs)
        key = ("fastret", json.dumps(block, sort_keys=True, default=str), opts.get("cachedir"))
        # Sinks are named (and spooled) per process by name: sinks that a --return_config
        # profile or --return_kwargs define differently get names of their own.
        base = routed_block(opts)
        base = base if isinstance(base, dict) else default_block(opts)
        prefix = "fastret"
        if isinstance(block, dict) and block.get("sinks") != base.get("sinks"):
            digest = hashlib.sha256(json.dumps(block.get("sinks"), sort_keys=True,
                                               default=str).encode()).hexdigest()[:8]
            prefix = f"fastret-{digest}"
        return _cached(key, lambda: Backend("fastret", parse_block(block, opts, prefix), opts))

    return _resolve_cached(_call_key("fastret", opts, ret), resolve)


SINK_MODULES = {
    "fastret_sqlite": "sqlite",
    "fastret_file": "file",
    "fastret_postgres": "postgres",
    "fastret_mysql": "mysql",
    "fastret_syslog": "syslog",
    "fastret_logstash": "logstash",
}


def available_sink_modules(opts: dict | None = None) -> dict:
    """SINK_MODULES whose sink type this build has; with `opts`, only those this configuration
    uses: the local ones (their default destination is under the cachedir) and the others when
    named by master_job_cache/event_return/ext_job_cache or configured by key."""
    known = {t["type"] for t in native().sink_types()}
    out = {m: t for m, t in SINK_MODULES.items() if t in known}
    if opts is None:
        return out
    named = set()
    for key in ("master_job_cache", "ext_job_cache", "event_return"):
        value = opts.get(key)
        named.update([value] if isinstance(value, str) else value or [])
    return {m: t for m, t in out.items()
            if t in ("sqlite", "file") or m in named or _configured_keys(m, opts)}


def _default_sink_options(virtualname: str, opts: dict) -> dict:
    if virtualname == "fastret_sqlite":
        return {"path": default_store_path(opts)}
    if virtualname == "fastret_file":
        return {"path": os.path.join(os.path.dirname(default_store_path(opts)), "returns.jsonl")}
    return {}


def _destination(sink_opts: dict) -> str:
    """What identifies where a one-sink returner writes (never a secret)."""
    if any(k in sink_opts for k in ("transport", "protocol", "host", "url")):
        # Network sinks: the transport and the peer (a path is the unix socket or HTTP path).
        return json.dumps([str(sink_opts.get(k, "")) for k in
                           ("transport", "protocol", "host", "port", "path")])
    if "path" in sink_opts:
        return str(sink_opts["path"])
    keys = ("dsn", "host", "port", "unix_socket", "db", "user")
    dsn = str(sink_opts.get("dsn", ""))
    if dsn:
        # A DSN may carry a password: only its digest goes into the spool's name.
        return json.dumps([hashlib.sha256(dsn.encode()).hexdigest()] +
                          [str(sink_opts.get(k, "")) for k in keys[1:]])
    return json.dumps([str(sink_opts.get(k, "")) for k in keys])


def sink_backend(virtualname: str, opts: dict, salt_funcs=None, ret=None) -> Backend:
    """A one-sink returner (fastret_sqlite, fastret_file)."""
    return _resolve_cached(_call_key(virtualname, opts, ret),
                           lambda: _sink_backend(virtualname, opts, salt_funcs, ret))


def _sink_backend(virtualname: str, opts: dict, salt_funcs, ret) -> Backend:
    sink_type = SINK_MODULES[virtualname]
    sink_opts, py_opts = resolve_sink_options(virtualname, sink_type, ret, opts, salt_funcs,
                                              _default_sink_options(virtualname, opts))
    key = (virtualname, json.dumps([sink_opts, py_opts], sort_keys=True, default=str),
           opts.get("cachedir"))

    def build():
        nat = native()
        try:
            nat.validate_sink(virtualname, sink_type, sink_opts)
        except nat.ConfigError as exc:
            raise ConfigError(str(exc)) from None
        # The destination names the spool: the same destination in any process finds it.
        ident = hashlib.sha256(_destination(sink_opts).encode()).hexdigest()[:12]
        spool_root = default_spool_root(opts)
        sink = SinkConfig(name=f"{virtualname}-{ident}", type=sink_type, options=sink_opts,
                          spool_root=spool_root)
        cfg = PipelineConfig(sinks=[sink], spool_root=spool_root, **py_opts)
        return Backend(virtualname, cfg, opts)

    return _cached(key, build)


def check_virtual(virtualname: str, opts: dict, salt_funcs=None):
    """__virtual__ helper: the module name, or (False, reason) if the configuration is bad."""
    try:
        if virtualname == "fastret":
            routed_backend(opts)
        else:
            sink_backend(virtualname, opts, salt_funcs)
    except ConfigError as exc:
        log.error("%s", exc)
        return False, str(exc)
    except ImportError as exc:
        return False, f"fastret's compiled core cannot be loaded: {exc}"
    return virtualname


def call(logger: logging.Logger, what: str, fn, default=None):
    """Run a returner entry point; log and count failures, never raise into Salt."""
    try:
        return fn()
    except ConfigError as exc:
        logger.error("%s: %s", what, exc)
    except Exception:  # noqa: BLE001 - a returner must never raise into Salt
        logger.exception("%s failed", what)
    return default
