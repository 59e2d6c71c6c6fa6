#!/usr/bin/env python3
"""fastret foundation benchmark: fastret's returners against Salt's stock returners.

A benchmark, not a test: it prints absolute rates and ratios, checks them against the
project's targets, and optionally writes everything as JSON. Run it with the virtualenv that
has Salt and fastret installed::

    .venv/bin/python bench/bench_foundation.py [--quick] [--json results.json]

Sections (see bench/README.md for what each number means):

 1. returner() calls/s: fastret (routed default: sqlite + file), fastret_sqlite, fastret_file
    against salt.returners.rawfile_json and salt.returners.local_cache, all loaded through
    salt.loader.returners(opts, funcs) with a temporary root_dir.
 2. event_return() events/s, batches of 100 realistic ~500 B events, including the time until
    fastret has delivered everything (a flush at the end of every timed chunk).
 3. `salt-call --local test.ping` wall time with `--return fastret` against no returner.
 4. RSS of a process that pushes many events through event_return while its sink is down:
    the backlog must go to the spool on disk, not to memory.

Everything happens under one temporary directory, removed at the end (--keep keeps it).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import (  # noqa: E402  (same directory)
    JidGen,
    close_fastret,
    dir_bytes,
    environment,
    event_batches,
    fmt_ratio,
    fmt_rate,
    job_ret_event,
    load_returners,
    mib,
    print_environment,
    rss_kib,
    state_apply_return,
    write_master_config,
    write_results,
)

# ---------------------------------------------------------------------------------------------
# Salt set-up


def redaction_encode_cost(jidgen, minions, rounds: int = 15, number: int = 20) -> dict:
    """Encoding one 100-event batch (the encode step of event_return) without and with the
    default redaction rules, alternating in this process; the best of `rounds` each, in
    microseconds per event. Steadier than two event_return rates taken one after the other on
    a busy machine."""
    import fastret  # noqa: PLC0415
    from fastret.config import parse_redact  # noqa: PLC0415

    nat = fastret.native()
    variants = {"without": nat.redactor({"defaults": False, "rules": []}),
                "with": nat.redactor(parse_redact("bench", True))}
    jid = jidgen()
    batch = [job_ret_event(jid, minions[i % len(minions)])["data"] for i in range(100)]
    best = {k: float("inf") for k in variants}
    for _ in range(rounds):
        for name, red in variants.items():
            start = time.perf_counter()
            for _ in range(number):
                nat.encode_json(batch, 100, False, red)
            best[name] = min(best[name], (time.perf_counter() - start) / (number * len(batch)))
    return {f"{k}_us": v * 1e6 for k, v in best.items()}


def fastret_stats() -> list:
    import fastret  # noqa: PLC0415

    return fastret.native().stats()


# ---------------------------------------------------------------------------------------------
# 1. returner() calls/s


def bench_returner(name, rets, fn_name, prep, min_time, chunk, jidgen, minions):
    """Times only the returner() calls; jids (and for local_cache their directories, as
    prep_jid would make them) are prepared untimed, chunk by chunk."""
    fn = rets[fn_name]
    # warm-up (first call registers sinks, opens files, starts the I/O thread)
    for _ in range(10):
        jid = jidgen()
        if prep:
            prep(passed_jid=jid)
        fn(state_apply_return(jid, minions[0]))
    # size chunks from a short probe so that a slow returner does not overshoot min_time
    t0 = time.perf_counter()
    for _ in range(10):
        jid = jidgen()
        if prep:
            prep(passed_jid=jid)
        fn(state_apply_return(jid, minions[0]))
    per_call = (time.perf_counter() - t0) / 10
    chunk = int(max(10, min(chunk, min_time / 4 / per_call)))
    calls = 0
    elapsed = 0.0
    sample_bytes = len(json.dumps(state_apply_return(jidgen(), minions[0])))
    while elapsed < min_time:
        work = []
        while len(work) < chunk:
            jid = jidgen()
            if prep:
                prep(passed_jid=jid)
            work.extend(state_apply_return(jid, m) for m in minions[:chunk - len(work)])
        gc.collect()
        t0 = time.perf_counter()
        for ret in work:
            fn(ret)
        elapsed += time.perf_counter() - t0
        calls += len(work)
    return {"name": name, "calls": calls, "seconds": elapsed, "rate": calls / elapsed,
            "ret_bytes": sample_bytes}


# ---------------------------------------------------------------------------------------------
# 2. event_return events/s


def bench_event_return(name, rets, fn_name, min_time, batches_per_chunk, jidgen, minions,
                       is_fastret):
    """Times event_return() over pre-built batches of 100 events; for fastret each timed chunk
    ends with native().flush(), so the time includes delivery of everything submitted."""
    import fastret  # noqa: PLC0415

    fn = rets[fn_name]
    nat = fastret.native()

    def make_batches(n):
        return event_batches(n, jidgen, minions)

    for batch in make_batches(3):  # warm-up
        fn(batch)
    if is_fastret:
        nat.flush(60.0)
    sample_bytes = len(json.dumps(make_batches(1)[0][0]))
    events = 0
    elapsed = 0.0
    flush_s = 0.0
    while elapsed < min_time:
        batches = make_batches(batches_per_chunk)
        gc.collect()
        t0 = time.perf_counter()
        for batch in batches:
            fn(batch)
            batch.clear()  # what Salt's EventReturn does after the call
        t1 = time.perf_counter()
        if is_fastret:
            if not nat.flush(120.0):
                raise RuntimeError(f"{name}: flush timed out: {nat.stats()}")
        t2 = time.perf_counter()
        elapsed += t2 - t0
        flush_s += t2 - t1
        events += 100 * len(batches)
    return {"name": name, "events": events, "seconds": elapsed, "rate": events / elapsed,
            "flush_seconds": flush_s, "event_bytes": sample_bytes}


# ---------------------------------------------------------------------------------------------
# 3. salt-call --local test.ping overhead


def bench_salt_call(base: str, runs: int):
    import salt.utils.yaml  # noqa: PLC0415

    root = os.path.join(base, "saltcall")
    conf_dir = os.path.join(root, "etc", "salt")
    os.makedirs(conf_dir, exist_ok=True)
    os.makedirs(os.path.join(root, "srv", "salt"), exist_ok=True)
    with open(os.path.join(conf_dir, "minion"), "w", encoding="utf-8") as fh:
        salt.utils.yaml.safe_dump({
            "root_dir": root, "id": "bench-minion", "file_client": "local",
            "file_roots": {"base": [os.path.join(root, "srv", "salt")]},
        }, fh, default_flow_style=False)
    salt_call = os.path.join(os.path.dirname(sys.executable), "salt-call")
    base_cmd = [salt_call, "--local", "-c", conf_dir, "--out=quiet", "test.ping"]
    variants = {"none": base_cmd, "fastret": base_cmd + ["--return", "fastret"]}

    def run(cmd):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, check=False)
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
        return dt

    # warm-up: caches, .pyc files, fastret's store and spool directories
    for cmd in variants.values():
        run(cmd)
    times = {k: [] for k in variants}
    for i in range(runs):
        order = ["none", "fastret"] if i % 2 == 0 else ["fastret", "none"]
        for k in order:
            times[k].append(run(variants[k]))
    med = {k: statistics.median(v) for k, v in times.items()}
    overhead = (med["fastret"] - med["none"]) / med["none"]
    # the same from pairs run back to back (less sensitive to load drifting during the runs)
    paired = statistics.median(f - n for f, n in zip(times["fastret"], times["none"])) / med["none"]

    # sanity: the returns really landed in fastret's default store
    delivered = None
    db = os.path.join(root, "var", "cache", "salt", "minion", "fastret", "fastret.db")
    if os.path.exists(db):
        import sqlite3  # noqa: PLC0415

        con = sqlite3.connect(db)
        try:
            tables = [r[0] for r in
                      con.execute("select name from sqlite_master where type='table'")]
            for table in ("salt_returns", "returns", "job_returns"):
                if table in tables:
                    delivered = con.execute(f"select count(*) from {table}").fetchone()[0]
                    break
            if delivered is None:
                delivered = {t: con.execute(f"select count(*) from {t}").fetchone()[0]
                             for t in tables}
        finally:
            con.close()
    return {"runs": runs, "times": times, "median": med, "overhead": overhead,
            "overhead_paired": paired,
            "min": {k: min(v) for k, v in times.items()},
            "fastret_store_rows": delivered, "expected_returns": runs + 1}


# ---------------------------------------------------------------------------------------------
# 4. memory while a sink is down (runs in a child process: a clean RSS baseline)


def memory_child(args) -> dict:
    """Child process: push `events` events through fastret.event_return with a sink that
    cannot write; sample VmRSS; report it against the spool's size on disk."""
    import fastret  # noqa: PLC0415
    from fastret import pipeline  # noqa: PLC0415

    base = args.child_dir
    mode = args.child_mode
    os.makedirs(base, exist_ok=True)
    sink = {"type": "file"}
    if mode == "notdir":
        # The path goes through a regular file: open() fails with ENOTDIR on every attempt.
        blocker = os.path.join(base, "not-a-directory")
        with open(blocker, "w", encoding="utf-8") as fh:
            fh.write("x\n")
        sink["path"] = os.path.join(blocker, "events.jsonl")
    else:
        # The parent directory refuses new files (EACCES / EPERM): a retryable failure.
        locked = os.path.join(base, "locked")
        os.makedirs(locked, exist_ok=True)
        sink["path"] = os.path.join(locked, "events.jsonl")
        sink["retry_initial_ms"] = 5
        sink["retry_max_ms"] = 50
        lock_dir(locked)
    spool_dir = os.path.join(base, "spool")
    cfg = write_master_config(base, "master", {"fastret": {"sinks": {f"down_{mode}": sink},
                                                           "spool_dir": spool_dir}})
    opts, rets = load_returners(cfg)
    fn = rets["fastret.event_return"]
    jidgen = JidGen()
    minions = [f"minion-{i:04d}" for i in range(100)]
    total_batches = max(10, args.child_events // 100)

    samples = []
    t0 = time.perf_counter()
    rss0 = rss_kib()
    for b in range(total_batches):
        jid = jidgen()
        fn([job_ret_event(jid, minions[i]) for i in range(100)])
        if (b + 1) % max(1, total_batches // 20) == 0 or b + 1 == total_batches:
            samples.append({"events": (b + 1) * 100, "rss_kib": rss_kib(),
                            "spool_bytes": dir_bytes(spool_dir),
                            "seconds": time.perf_counter() - t0})
    seconds = time.perf_counter() - t0
    time.sleep(0.5)  # let the worker attempt (and fail) a few more times
    stats = [s for s in fastret.native().stats() if s["name"].startswith("fastret.down_")]
    final = {"rss_kib": rss_kib(), "spool_bytes": dir_bytes(spool_dir)}
    # Stop the runtime now (records stay in the spool); the down sink would make atexit wait.
    pipeline.close(0.2)
    if mode != "notdir":
        unlock_dir(os.path.join(base, "locked"))
    at10 = samples[max(0, len(samples) // 10 - 1)]
    return {"mode": mode, "events": total_batches * 100, "seconds": seconds,
            "rss_start_kib": rss0, "rss_at_10pct_kib": at10["rss_kib"],
            "rss_end_kib": final["rss_kib"], "rss_max_kib": max(s["rss_kib"] for s in samples),
            "spool_bytes": final["spool_bytes"], "samples": samples, "stats": stats}


def lock_dir(path: str):
    if os.geteuid() == 0:
        # root ignores permission bits: make the directory immutable instead (ext4/xfs/btrfs)
        subprocess.run(["chattr", "+i", path], check=True, capture_output=True)
    else:
        os.chmod(path, 0o500)


def unlock_dir(path: str):
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", path], check=False, capture_output=True)
    else:
        os.chmod(path, 0o700)


def can_lock_dir(base: str) -> bool:
    probe = os.path.join(base, "lock-probe")
    os.makedirs(probe, exist_ok=True)
    try:
        lock_dir(probe)
    except (OSError, subprocess.CalledProcessError):
        return False
    try:
        try:
            with open(os.path.join(probe, "x"), "w", encoding="utf-8"):
                pass
        except OSError:
            return True
        return False
    finally:
        unlock_dir(probe)


def bench_memory(base: str, events: int, mode: str) -> dict:
    child_dir = os.path.join(base, f"memory-{mode}")
    cmd = [sys.executable, os.path.abspath(__file__), "--child-memory", "--child-dir", child_dir,
           "--child-mode", mode, "--child-events", str(events)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child ({mode}) failed: {proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    growth_kib = res["rss_end_kib"] - res["rss_at_10pct_kib"]
    res["rss_growth_kib"] = growth_kib
    res["rss_growth_total_kib"] = res["rss_end_kib"] - res["rss_start_kib"]
    # Bounded: from 10% to 100% of the events (when the allocator and the first batches have
    # settled) RSS grows by less than 16 MiB, while the spool takes the whole backlog.
    at10 = res["samples"][max(0, len(res["samples"]) // 10 - 1)]
    spool_growth = res["spool_bytes"] - at10["spool_bytes"]
    res["spool_growth_bytes"] = spool_growth
    res["rss_growth_per_spool_byte"] = growth_kib * 1024 / max(spool_growth, 1)
    res["bounded"] = growth_kib * 1024 < (16 << 20)
    return res


# ---------------------------------------------------------------------------------------------
# main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--min-time", type=float, default=None,
                    help="seconds of timed work per measurement and round (default 1, --quick 0.3)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds of sections 1 and 2; a rate is the median (default 3, --quick 1)")
    ap.add_argument("--salt-call-runs", type=int, default=None,
                    help="salt-call runs per variant (default 10, --quick 3)")
    ap.add_argument("--memory-events", type=int, default=None,
                    help="events for the sink-down memory test (default 200000, --quick 20000)")
    ap.add_argument("--skip", action="append", default=[], choices=["returner", "events",
                    "salt-call", "memory"], help="skip a section (repeatable)")
    # internal: the memory test's child process
    ap.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-dir", help=argparse.SUPPRESS)
    ap.add_argument("--child-mode", help=argparse.SUPPRESS)
    ap.add_argument("--child-events", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-info", choices=sorted(INFO_PROFILES), help=argparse.SUPPRESS)
    ap.add_argument("--child-section", help=argparse.SUPPRESS)
    args = ap.parse_args()

    logging.basicConfig(level=logging.CRITICAL)  # Salt/fastret warnings would garble the table

    if args.child_memory:
        print(json.dumps(memory_child(args)))
        return 0
    if args.child_info:
        print(json.dumps(info_child(args)))
        from fastret import pipeline  # noqa: PLC0415

        pipeline.close(5.0)
        return 0

    min_time = args.min_time if args.min_time is not None else (0.3 if args.quick else 1.0)
    rounds = args.rounds or (1 if args.quick else 3)
    sc_runs = args.salt_call_runs or (3 if args.quick else 10)
    mem_events = args.memory_events or (20_000 if args.quick else 200_000)

    import salt.version  # noqa: PLC0415

    import fastret  # noqa: PLC0415

    base = tempfile.mkdtemp(prefix="fastret-bench-")
    results = {"env": environment(base, quick=args.quick, min_time=min_time, rounds=rounds)}
    print_environment(f"fastret {fastret.__version__} vs Salt {salt.version.__version__} stock "
                      "returners", results["env"])
    try:
        run_all(args, base, results, min_time, rounds, sc_runs, mem_events)
    finally:
        write_results(args.json, results)
        close_fastret()  # before removing its directories
        if args.keep:
            print(f"kept {base}")
        else:
            for root, dirs, _files in os.walk(base):
                for d in dirs:
                    if d in ("locked", "lock-probe"):
                        unlock_dir(os.path.join(root, d))
            shutil.rmtree(base, ignore_errors=True)
    return 0 if all(t["met"] for t in results.get("targets", [])) else 1


def run_rounds(cases, rounds, run_one, describe, out=None):
    """Runs every case once per round, cases interleaved (so that a burst of load from other
    processes hits all of them alike); a case's rate is the median over the rounds."""
    per_case = {c[0]: [] for c in cases}
    for rnd in range(rounds):
        if rounds > 1:
            print(f"  round {rnd + 1}/{rounds}", file=out or sys.stdout, flush=True)
        for case in cases:
            res = run_one(case)
            per_case[case[0]].append(res)
            print(f"    {case[0]:46s} {fmt_rate(res['rate']):>12s}  ({describe(res)})",
                  file=out or sys.stdout, flush=True)
    rows = []
    for case in cases:
        runs = per_case[case[0]]
        rates = [r["rate"] for r in runs]
        row = dict(runs[0])
        for key in ("calls", "events", "seconds", "flush_seconds"):
            if key in row:
                row[key] = sum(r[key] for r in runs)
        row.update(rate=statistics.median(rates), rates=rates, rate_min=min(rates),
                   rate_max=max(rates))
        rows.append(row)
    return rows


INFO_NODELAY = "info: fastret_file batch_delay=0"
INFO_RELAXED = "info: fastret_file delay=0 fsync=off spool=off"
INFO_NOREDACT = "info: fastret_file redact=off"
# Informational variants of fastret_file (not targets), each in its own process: Salt's loader
# gives every loaded copy of a returner module the __opts__ of the loader that loaded it last,
# so two loaders with different options cannot share one process (stock returners alike).
INFO_PROFILES = {
    "nodelay": (INFO_NODELAY, {"fastret_file.batch_max_delay_ms": 0}),
    "relaxed": (INFO_RELAXED, {"fastret_file.batch_max_delay_ms": 0, "fastret_file.fsync": False,
                               "fastret_file.spool": False}),
    # fastret redacts with its default rules unless told not to: the price of that.
    "noredact": (INFO_NOREDACT, {"fastret_file.redact": False}),
}


def returner_case(c, min_time, jidgen, minions):
    return bench_returner(c[0], c[1], c[2], c[3], min_time, 500, jidgen, minions)


def describe_returner(res):
    return f"{res['calls']} calls, {res['seconds']:.2f}s"


def event_case(c, min_time, jidgen, minions):
    return bench_event_return(c[0], c[1], c[2], min_time, 100, jidgen, minions, c[3])


def describe_events(res):
    return (f"{res['events']} events, {res['seconds']:.2f}s, of which flush "
            f"{res['flush_seconds']:.2f}s")


def info_child(args) -> list:
    """Child process: one informational fastret_file profile, one section, all rounds."""
    label, extra = INFO_PROFILES[args.child_info]
    base = args.child_dir
    os.makedirs(base, exist_ok=True)
    extra = dict(extra, **{"fastret_file.path": os.path.join(base, f"{args.child_info}.jsonl")})
    _opts, rets = load_returners(write_master_config(base, "master", extra))
    jidgen = JidGen()
    minions = [f"minion-{i:04d}.example.com" for i in range(50)]
    if args.child_section == "returner":
        case = (label, rets, "fastret_file.returner", None)
        return run_rounds([case], args.rounds, lambda c: returner_case(c, args.min_time, jidgen,
                                                                       minions),
                          describe_returner, out=sys.stderr)
    case = (label, rets, "fastret_file.event_return", True)
    return run_rounds([case], args.rounds, lambda c: event_case(c, args.min_time, jidgen, minions),
                      describe_events, out=sys.stderr)


def run_info(base, section, min_time, rounds) -> list:
    rows = []
    for name in INFO_PROFILES:
        child_dir = os.path.join(base, f"info-{name}-{section}")
        cmd = [sys.executable, os.path.abspath(__file__), "--child-info", name, "--child-section",
               section, "--child-dir", child_dir, "--min-time", str(min_time), "--rounds",
               str(rounds)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"info child {name}/{section} failed (exit {proc.returncode})")
        rows.extend(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def run_all(args, base, results, min_time, rounds, sc_runs, mem_events):
    jidgen = JidGen()
    minions = [f"minion-{i:04d}.example.com" for i in range(50)]
    rets = None
    if "returner" not in args.skip or "events" not in args.skip:
        root = os.path.join(base, "master")
        cache = os.path.join(root, "var", "cache", "salt", "master")
        cfg = write_master_config(base, "master", {
            "rawfile_json.filename": os.path.join(root, "out", "rawfile_json.jsonl"),
            "fastret_sqlite.path": os.path.join(cache, "fastret-bench", "sqlite-only.db"),
            "fastret_file.path": os.path.join(cache, "fastret-bench", "file-only.jsonl"),
        })
        os.makedirs(os.path.join(root, "out"), exist_ok=True)
        opts, rets = load_returners(cfg)
        missing = [f for f in ("fastret.returner", "fastret_sqlite.returner",
                               "fastret_file.returner", "rawfile_json.returner",
                               "local_cache.returner", "fastret.event_return")
                   if f not in rets]
        if missing:
            raise RuntimeError(f"not loaded by salt.loader.returners: {missing}")
        results["opts"] = {"cachedir": opts["cachedir"], "__role": opts.get("__role"),
                           "hash_type": opts.get("hash_type")}

    targets = []

    # 1 -------------------------------------------------------------------------------------
    if "returner" not in args.skip:
        print(f"\n[1] returner() calls/s (state.apply return, distinct jid x {len(minions)} "
              f"minions, >= {min_time}s timed per case and round, {rounds} round(s), median)",
              flush=True)
        cases = [
            ("fastret (sqlite+file)", rets, "fastret.returner", None),
            ("fastret_sqlite", rets, "fastret_sqlite.returner", None),
            ("fastret_file", rets, "fastret_file.returner", None),
            ("rawfile_json (stock)", rets, "rawfile_json.returner", None),
            ("local_cache (stock)", rets, "local_cache.returner", rets["local_cache.prep_jid"]),
        ]
        rows = run_rounds(cases, rounds, lambda c: returner_case(c, min_time, jidgen, minions),
                          describe_returner)
        print("  informational fastret_file variants (one process each):", flush=True)
        rows += run_info(base, "returner", min_time, rounds)
        raw = next(r["rate"] for r in rows if r["name"].startswith("rawfile_json"))
        lc = next(r["rate"] for r in rows if r["name"].startswith("local_cache"))
        for r in rows:
            r["vs_rawfile_json"] = r["rate"] / raw
            r["vs_local_cache"] = r["rate"] / lc
        results["returner"] = rows
        results["returner_sink_stats"] = fastret_stats()

    # 2 -------------------------------------------------------------------------------------
    if "events" not in args.skip:
        print(f"\n[2] event_return() events/s (batches of 100 events, >= {min_time}s timed per "
              f"case and round, {rounds} round(s), median; fastret timed until delivered)",
              flush=True)
        cases = [
            ("fastret (sqlite+file)", rets, "fastret.event_return", True),
            ("fastret_sqlite", rets, "fastret_sqlite.event_return", True),
            ("fastret_file", rets, "fastret_file.event_return", True),
            ("rawfile_json (stock)", rets, "rawfile_json.event_return", False),
        ]
        rows = run_rounds(cases, rounds, lambda c: event_case(c, min_time, jidgen, minions),
                          describe_events)
        print("  informational fastret_file variants (one process each):", flush=True)
        rows += run_info(base, "events", min_time, rounds)
        raw = next(r["rate"] for r in rows if r["name"].startswith("rawfile_json"))
        for r in rows:
            r["vs_rawfile_json"] = r["rate"] / raw
        results["event_return"] = rows
        results["event_sink_stats"] = st = fastret_stats()
        undelivered = {x["name"]: x["accepted"] - x["delivered"] for x in st
                       if x["accepted"] != x["delivered"] or x["dropped"]}
        print(f"  check: {len(st)} fastret sinks in this process, "
              f"{sum(x['delivered'] for x in st)} records delivered, "
              f"{'none lost or pending' if not undelivered else f'NOT delivered: {undelivered}'}",
              flush=True)
        with_redaction = next(r["rate"] for r in rows if r["name"] == "fastret_file")
        without = next(r["rate"] for r in rows if r["name"] == INFO_NOREDACT)
        cost = 1.0 - with_redaction / without
        results["redaction_cost"] = cost
        print(f"  redaction (default rules) costs {cost * 100:.1f}% of fastret_file's "
              f"event_return rate ({fmt_rate(with_redaction)} with, {fmt_rate(without)} without)",
              flush=True)
        enc = redaction_encode_cost(jidgen, minions)
        enc_share = (enc["with_us"] - enc["without_us"]) * 1e-6 * without
        results["redaction_encode"] = dict(enc, share_of_event_time=enc_share)
        print(f"  in-process: encoding takes {enc['without_us']:.3f} µs/event without redaction, "
              f"{enc['with_us']:.3f} µs with: {enc_share * 100:.1f}% of an event's time at the "
              f"rate without", flush=True)
        targets.append({"name": "event_return: default redaction costs < 20%",
                        "value": f"{cost * 100:.1f}%", "met": cost < 0.20})
        # The like-for-like pair: JSON lines into a file, fastret_file against rawfile_json.
        # (The routed default writes every event twice, into SQLite and a file.)
        fr = next(r for r in rows if r["name"] == "fastret_file")
        targets.append({"name": "event_return: fastret_file >= 10x rawfile_json",
                        "value": f"{fr['vs_rawfile_json']:.2f}x",
                        "met": fr["vs_rawfile_json"] >= 10.0})

    # 3 -------------------------------------------------------------------------------------
    if "salt-call" not in args.skip:
        print(f"\n[3] salt-call --local test.ping, {sc_runs} runs per variant (alternating)",
              flush=True)
        sc = bench_salt_call(base, sc_runs)
        results["salt_call"] = sc
        print(f"    no returner        median {sc['median']['none'] * 1000:7.0f} ms  "
              f"min {sc['min']['none'] * 1000:7.0f} ms")
        print(f"    --return fastret   median {sc['median']['fastret'] * 1000:7.0f} ms  "
              f"min {sc['min']['fastret'] * 1000:7.0f} ms")
        print(f"    overhead {sc['overhead'] * 100:+.1f}% (of medians), "
              f"{sc['overhead_paired'] * 100:+.1f}% "
              f"(median of paired differences)   (fastret store rows: "
              f"{sc['fastret_store_rows']}, expected {sc['expected_returns']})", flush=True)
        targets.append({"name": "salt-call --return fastret overhead < 10%",
                        "value": f"{sc['overhead'] * 100:+.1f}%", "met": sc["overhead"] < 0.10})

    # 4 -------------------------------------------------------------------------------------
    if "memory" not in args.skip:
        modes = ["notdir"]
        if can_lock_dir(base):
            modes.append("retry")
        else:
            print("    (cannot make a directory unwritable here: retry variant skipped)")
        print(f"\n[4] memory while the sink is down: {mem_events} events through "
              f"fastret.event_return (child process)", flush=True)
        mem = {}
        for mode in modes:
            res = bench_memory(base, mem_events, mode)
            mem[mode] = res
            st = res["stats"][0] if res["stats"] else {}
            what = ("path under a regular file (ENOTDIR)" if mode == "notdir"
                    else "unwritable directory (retryable)")
            print(f"    {what}: {res['events']} events in {res['seconds']:.2f}s")
            print(f"      RSS start {mib(res['rss_start_kib'], 'KiB')}, at 10% "
                  f"{mib(res['rss_at_10pct_kib'], 'KiB')}, end {mib(res['rss_end_kib'], 'KiB')}"
                  f" (growth 10%->100%: {mib(res['rss_growth_kib'], 'KiB')});  spool on disk "
                  f"{mib(res['spool_bytes'])}  -> {'bounded' if res['bounded'] else 'NOT bounded'}")
            print(f"      sink: accepted {st.get('accepted')}, spooled {st.get('spooled')}, "
                  f"delivered {st.get('delivered')}, retried {st.get('retried')}, dropped "
                  f"{st.get('dropped')}, fatal {st.get('fatal')}", flush=True)
        results["memory"] = mem
        targets.append({"name": "memory bounded while the sink is down",
                        "value": ", ".join(f"{m}: +{mib(r['rss_growth_kib'], 'KiB')} RSS vs "
                                           f"{mib(r['spool_bytes'])} spool"
                                           for m, r in mem.items()),
                        "met": all(r["bounded"] for r in mem.values())})

    results["targets"] = targets
    results["env"]["loadavg_end"] = os.getloadavg()
    print_summary(results)


def print_summary(results):
    print("\n" + "=" * 100)
    print("SUMMARY")
    print("=" * 100)
    print("fastret rows use its defaults (write-ahead spool; file sink fdatasync per batch; sqlite "
          "synchronous=full);\nrawfile_json and local_cache never fsync. 'info:' rows are not "
          "targets.")
    if "returner" in results:
        print(f"{'returner() calls/s (median)':48s} {'rate':>12s} {'vs rawfile_json':>16s} "
              f"{'vs local_cache':>15s}")
        for r in results["returner"]:
            print(f"  {r['name']:46s} {fmt_rate(r['rate']):>12s} "
                  f"{fmt_ratio(r['vs_rawfile_json']):>16s} {fmt_ratio(r['vs_local_cache']):>15s}")
    if "event_return" in results:
        print(f"{'event_return() events/s (median)':48s} {'rate':>12s} {'vs rawfile_json':>16s}")
        for r in results["event_return"]:
            print(f"  {r['name']:46s} {fmt_rate(r['rate']):>12s} "
                  f"{fmt_ratio(r['vs_rawfile_json']):>16s}")
    if "salt_call" in results:
        sc = results["salt_call"]
        print(f"{'salt-call --local test.ping (median)':48s} {'none':>12s} {'fastret':>16s} "
              f"{'overhead':>15s}")
        print(f"  {'':46s} {sc['median']['none'] * 1000:9.0f} ms "
              f"{sc['median']['fastret'] * 1000:13.0f} ms "
              f"{sc['overhead'] * 100:+14.1f}%")
    if "memory" in results:
        print(f"{'sink down: RSS vs spool':48s} {'RSS 10%->end':>12s} {'RSS growth':>16s} "
              f"{'spool on disk':>15s}")
        for m, r in results["memory"].items():
            print(f"  {m + ' (' + str(r['events']) + ' events)':46s} "
                  f"{r['rss_at_10pct_kib'] // 1024:5d}->{r['rss_end_kib'] // 1024:d} MiB "
                  f"{mib(r['rss_growth_kib'], 'KiB'):>16s} {mib(r['spool_bytes']):>15s}")
    print("-" * 100)
    for t in results["targets"]:
        print(f"  [{'MET' if t['met'] else 'NOT MET':7s}] {t['name']}: {t['value']}")


if __name__ == "__main__":
    sys.exit(main())
