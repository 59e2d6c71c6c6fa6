"""The ``fastret`` command (also ``python -m fastret``)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from fastret import ConfigError, __version__, native, redaction_stats

DESCRIPTION = """\
fastret: fast, durable delivery of Salt job returns and events.

Commands:
  spool status   what is waiting in the spool: per sink directory, segments, bytes and
                 records not yet delivered (records stay there while a sink is down or after
                 a process exited before delivering them)
  spool drain    deliver what is waiting in the spool now, with the configuration Salt would
                 use, and report what was delivered
  stats          the state of the configured sinks: spool backlog and, for sqlite stores,
                 the number of jobs, returns and events stored; and how often each
                 redaction rule matched, summed over every process that delivered here
  jobs           the most recent jobs in the embedded store, with each minion's result
  config check   validate the fastret configuration the way Salt will load it
  schema TYPE    print the job store's DDL for postgres, mysql or sqlite (tables, indexes and
                 a writer and a reader role), or apply it with --apply
  docs           print the configuration reference (generated from the sinks' option tables)
  verify PATH    check the tamper-evident hash chain of a file sink's trail (chain_key):
                 every record's HMAC across path.N ... path, and the checkpoints; exit 0 if
                 intact, 1 with the first problem (file, line, seq), 2 on usage errors
"""


def _salt_opts(args):
    """Salt's own view of the configuration (cachedir, the fastret block)."""
    import salt.config  # noqa: PLC0415 - only needed by commands that read Salt's config

    path = os.path.join(args.config_dir, args.role)
    if args.role == "master":
        return salt.config.master_config(path)
    return salt.config.minion_config(path)


def _spool_root(args):
    if args.spool_dir:
        return args.spool_dir
    from fastret.config import default_spool_root  # noqa: PLC0415

    return default_spool_root(_salt_opts(args))


def spool_status(root: str) -> list[dict]:
    out = []
    if not os.path.isdir(root):
        return out
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.isdir(d) or name == redaction_stats.DIR_NAME:
            continue
        row = {"sink": name, "dir": d}
        row.update(native().spool_backlog(d))
        out.append(row)
    return out


def _configured_sinks(args):
    """SinkConfigs of everything this Salt config delivers to: the routed fastret block (or
    the default) and the one-sink returners with their default destinations."""
    from fastret import salt_glue  # noqa: PLC0415

    opts = _salt_opts(args)
    sinks = list(salt_glue.routed_backend(opts).cfg.sinks)
    for module in salt_glue.available_sink_modules(opts):
        sinks.extend(salt_glue.sink_backend(module, opts, None).cfg.sinks)
    return sinks


def cmd_spool_status(args):
    rows = spool_status(_spool_root(args))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("spool is empty")
        return 0
    print(f"{'sink':40} {'segments':>8} {'records':>9} {'pending bytes':>14}")
    for r in rows:
        print(f"{r['sink']:40} {r['segments']:>8} {r['pending_records']:>9} {r['pending_bytes']:>14}")
    return 0


def cmd_spool_drain(args):
    from fastret import pipeline  # noqa: PLC0415

    root = _spool_root(args)
    before = {r["sink"]: r for r in spool_status(root)}
    sinks = [s for s in _configured_sinks(args) if s.name in before]
    unknown = sorted(set(before) - {s.name for s in sinks})
    for s in sinks:
        pipeline.sink_id(s)
    nat = native()
    ok = nat.drain(args.timeout)
    stats = {s["name"]: s for s in nat.stats()}
    pipeline.close(args.timeout)
    for s in sinks:
        st = stats.get(s.name, {})
        print(f"{s.name}: delivered {st.get('delivered', 0)} record(s), "
              f"{st.get('dropped', 0)} dropped"
              + (f", last error: {st['last_error']}" if st.get("last_error") else ""))
    for name in unknown:
        print(f"{name}: not in the current configuration; left as is", file=sys.stderr)
    if not sinks:
        print("nothing to drain")
    return 0 if ok else 1


def cmd_stats(args):
    root = _spool_root(args)
    rows = {r["sink"]: r for r in spool_status(root)}
    result = []
    sinks = _configured_sinks(args)
    for s in sinks:
        row = {"sink": s.name, "type": s.type, "destination": s.options.get("path", "")}
        sp = rows.get(s.name)
        row["spool_pending_records"] = sp["pending_records"] if sp else 0
        if s.type == "sqlite" and not os.path.exists(s.options["path"]):
            pass  # nothing stored yet; opening would create it
        elif s.type in ("sqlite", "postgres", "mysql"):
            nat = native()
            try:
                store = nat.open_store(s.type, dict(s.options))
                row.update({t: store.count(t) for t in ("jids", "salt_returns", "salt_events")})
            except nat.StoreError as exc:
                row["store_error"] = str(exc)
        result.append(row)
    # Redactions per rule, over every process that delivered through these spool roots.
    redactions = {}
    for r in sorted({root} | {s.spool_root for s in sinks if s.spool_root}):
        for rule, n in redaction_stats.totals(r).items():
            redactions[rule] = redactions.get(rule, 0) + n
    redactions = dict(sorted(redactions.items()))
    if args.json:
        print(json.dumps({"sinks": result, "redactions": redactions}, indent=2))
    else:
        for row in result:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
        print("redactions: " + ("  ".join(f"{k}={v}" for k, v in redactions.items())
                                if redactions else "none"))
    return 0


def cmd_jobs(args):
    from fastret import salt_glue  # noqa: PLC0415

    backend = salt_glue.routed_backend(_salt_opts(args))
    store = backend.store()
    for jid, load in store.get_jobs(args.limit, False):
        load = json.loads(load)
        print(f"{jid}  {load.get('fun', '')}  target={load.get('tgt', '')}")
        for minion, full in store.get_returns(jid):
            ret = json.loads(full)
            text = json.dumps(ret.get("return"), sort_keys=True)
            if len(text) > 200:
                text = text[:200] + "..."
            print(f"    {minion}: success={ret.get('success')} retcode={ret.get('retcode')} "
                  f"return={text}")
    return 0


def cmd_config_check(args):
    from fastret import salt_glue  # noqa: PLC0415

    opts = _salt_opts(args)
    try:
        backend = salt_glue.routed_backend(opts)
        for module in salt_glue.available_sink_modules(opts):
            salt_glue.sink_backend(module, opts, None)
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    for s in backend.cfg.sinks:
        print(f"ok: sink {s.name} ({s.type})")
    return 0


def _apply_target(kind: str, target: str) -> dict:
    """Store options from --apply's argument: a libpq connection string or URI for postgres,
    mysql://user[:password]@host[:port]/db for mysql, a file path for sqlite."""
    from urllib.parse import unquote, urlsplit  # noqa: PLC0415

    if kind == "sqlite":
        return {"path": target}
    if kind == "postgres":
        return {"dsn": target}
    url = urlsplit(target)
    if url.scheme not in ("mysql", "mariadb") or not url.hostname:
        raise ConfigError("schema mysql --apply: give mysql://user[:password]@host[:port]/db")
    opts = {"host": url.hostname, "db": unquote(url.path.lstrip("/")) or "salt"}
    if url.port:
        opts["port"] = url.port
    if url.username:
        opts["user"] = unquote(url.username)
    if url.password:
        opts["pass"] = unquote(url.password)
    return opts


def cmd_schema(args):
    nat = native()
    try:
        ddl = nat.store_schema(args.type, args.writer, args.reader)
    except nat.ConfigError as exc:
        raise ConfigError(str(exc)) from None
    if not args.apply:
        sys.stdout.write(ddl)
        return 0
    options = _apply_target(args.type, args.apply)
    for item in args.option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"schema --option: expected KEY=VALUE, got '{item}'")
        options[key] = value
    from fastret.salt_glue import coerce_options  # noqa: PLC0415

    options = coerce_options(args.type, options)
    try:
        nat.apply_store_schema(args.type, options, args.writer, args.reader)
    except nat.ConfigError as exc:
        raise ConfigError(str(exc)) from None
    except nat.StoreError as exc:
        print(f"fastret: schema not applied: {exc}", file=sys.stderr)
        return 1
    print(f"schema applied ({args.type}; roles {args.writer}, {args.reader})")
    return 0


def cmd_docs(_args):
    from fastret.docs import config_reference  # noqa: PLC0415

    sys.stdout.write(config_reference())
    return 0


def cmd_verify(args):
    from fastret.verify import Broken, UsageError, read_key, verify  # noqa: PLC0415

    try:
        if not args.key_file:
            raise UsageError("--key-file is required (the file holding the sink's chain_key)")
        key = read_key(args.key_file)
        report = verify(args.path, key, args.checkpoints, args.allow_rotated_away)
    except UsageError as exc:
        print(f"fastret verify: {exc}", file=sys.stderr)
        return 2
    except Broken as exc:
        print(f"fastret verify: BROKEN: {exc}")
        return 1
    except OSError as exc:
        print(f"fastret verify: {exc}", file=sys.stderr)
        return 2
    print(f"fastret verify: OK: {report.summary()}")
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="fastret", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"fastret {__version__}")
    p.add_argument("-c", "--config-dir", default="/etc/salt",
                   help="Salt configuration directory (default /etc/salt)")
    p.add_argument("--role", choices=["minion", "master"], default="minion",
                   help="which Salt configuration file to read (default minion)")
    p.add_argument("--spool-dir", help="spool root directory (default <cachedir>/fastret/spool)")
    sub = p.add_subparsers(dest="command", required=True)

    spool = sub.add_parser("spool", help="inspect or drain the durable spool")
    ssub = spool.add_subparsers(dest="spool_command", required=True)
    st = ssub.add_parser("status", help="records waiting in the spool, per sink")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_spool_status)
    dr = ssub.add_parser("drain", help="deliver what waits in the spool now")
    dr.add_argument("--timeout", type=float, default=60.0,
                    help="seconds to wait for delivery (default 60)")
    dr.set_defaults(func=cmd_spool_drain)

    s = sub.add_parser("stats", help="state of the configured sinks")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_stats)

    j = sub.add_parser("jobs", help="recent jobs in the embedded store")
    j.add_argument("--limit", type=int, default=10, help="how many jobs (default 10)")
    j.set_defaults(func=cmd_jobs)

    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_command", required=True)
    cc = csub.add_parser("check", help="validate the fastret configuration")
    cc.set_defaults(func=cmd_config_check)

    sc = sub.add_parser("schema", help="print or apply a database job store's schema",
                        description="Print the DDL of a job store: tables compatible with the "
                        "stock returner's, fastret's columns and indexes, and two roles: a "
                        "writer (what the returner needs: insert, select, the updates of "
                        "save_minions/update_endtime, deletes of clean_old_jobs) and a reader "
                        "(select only). Idempotent: also upgrades a stock returner's database "
                        "in place.")
    sc.add_argument("type", choices=["postgres", "mysql", "sqlite"])
    sc.add_argument("--writer", default="salt_writer", help="writer role (default salt_writer)")
    sc.add_argument("--reader", default="salt_reader", help="reader role (default salt_reader)")
    sc.add_argument("--apply", metavar="DSN",
                    help="apply it: a libpq connection string or URI (postgres), "
                    "mysql://user:password@host:port/db (mysql), or a file path (sqlite); "
                    "connect as a user that may create tables and roles")
    sc.add_argument("--option", action="append", metavar="KEY=VALUE",
                    help="more store options for --apply, e.g. sslrootcert=/etc/ssl/ca.pem "
                    "(repeatable)")
    sc.set_defaults(func=cmd_schema)

    d = sub.add_parser("docs", help="print the configuration reference (Markdown)")
    d.set_defaults(func=cmd_docs)

    v = sub.add_parser("verify", help="check the hash chain of a file sink's trail",
                       description="Check a file sink's tamper-evident trail (chain_key): "
                       "path.N (oldest) ... path.1, path; every record's HMAC, seq and prev, "
                       "and the checkpoints. Exit 0: intact; 1: broken (the first problem, "
                       "with file, line and seq); 2: usage error.")
    v.add_argument("path", help="the sink's path (rotated files path.1 ... are found)")
    v.add_argument("--key-file", help="file holding the chain key (mode 0600), as the sink's "
                   "chain_key_file")
    v.add_argument("--checkpoints", help="checkpoint file (default PATH.checkpoints)")
    v.add_argument("--allow-rotated-away", action="store_true",
                   help="accept a trail that starts after seq 1 because rotation deleted the "
                   "oldest files (the checkpoints still tell which files must exist)")
    v.set_defaults(func=cmd_verify)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"fastret: {exc}", file=sys.stderr)
        return 2
