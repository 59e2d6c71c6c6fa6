"""The returners in forked and fresh (forkserver, spawn) processes, as Salt's job processes
run them, and a job process killed with SIGKILL right after returner() came back."""

import json
import signal
import subprocess
import sys
from collections import Counter

import pytest

from conftest import HERE, MinionEnv, clean_env, db_query, read_jsonl

SCRIPT = HERE / "helpers" / "returner_procs.py"


def run_script(env, *args, timeout=240):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(env.conf_dir)] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout, env=clean_env(),
                          cwd=str(env.base), check=False)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc


def store_counts(env):
    return Counter(r[0] for r in db_query(env.store_path, "SELECT jid FROM salt_returns"))


def audit_counts(env, path=None):
    return Counter(r["jid"] for r in read_jsonl(path or env.audit_path) if r["kind"] == "job_return")


def test_fork_forkserver_spawn_children_deliver_every_return_once(tmp_path):
    env = MinionEnv(tmp_path / "env", minion_id="procs-minion")
    summary, proc = run_script(env, "multi", 3)
    assert summary["exitcodes"] == {"fork": [0, 0, 0], "forkserver": [0, 0, 0], "spawn": [0, 0, 0]}
    jids = summary["jids"]
    assert len(jids) == 11 and len(set(jids)) == 11
    expected = Counter({jid: 1 for jid in jids})
    assert store_counts(env) == expected
    assert audit_counts(env) == expected
    # Each stored return is the one its process made.
    for jid, full in db_query(env.store_path, "SELECT jid, full_ret FROM salt_returns"):
        assert json.loads(full)["return"]["jid"] == jid
    jobs = Counter(r[0] for r in db_query(env.store_path, "SELECT jid FROM jids"))
    assert jobs == expected
    assert "Traceback" not in proc.stderr
    # Nothing is left waiting in the spool once every process has exited.
    status = env.fastret("spool", "status", "--json")
    assert status.returncode == 0
    assert all(row["pending_records"] == 0 for row in json.loads(status.stdout))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_sigkill_right_after_returner_loses_nothing_delivered(tmp_path, method):
    env = MinionEnv(tmp_path / "env", minion_id="procs-minion")
    report = tmp_path / "report.json"
    jid = f"killed-{method}"
    summary, _ = run_script(env, "kill", jid, report, method)
    assert summary["exitcode"] == -signal.SIGKILL
    warnings = json.loads(report.read_text())["warnings"]
    assert not any("not delivered" in w for w in warnings), warnings
    # returner() reported delivery (no "kept in the spool" warning): the return is in the
    # store and in the audit file although the process died without any cleanup.
    child_jids = [f"{jid}-{i}" for i in range(4)] + [jid]
    counts = store_counts(env)
    assert all(counts[j] == 1 for j in child_jids), counts
    audit = audit_counts(env)
    assert all(audit[j] >= 1 for j in child_jids), audit
    # The parent's own return (made before the child started) is there too.
    assert counts[f"{jid}-parent"] == 1 and audit[f"{jid}-parent"] == 1
    # A later process (drain) replays nothing into the store twice; the audit file may see an
    # at-least-once repeat, recognisable by the same record id.
    drained = env.fastret("spool", "drain", "--timeout", "30")
    assert drained.returncode == 0, drained.stderr
    assert store_counts(env) == Counter({j: 1 for j in child_jids + [f"{jid}-parent"]})
    for j in child_jids:
        lines = [r for r in read_jsonl(env.audit_path)
                 if r["jid"] == j and r["kind"] == "job_return"]
        assert len({r["id"] for r in lines}) == 1
        assert len(lines) == 1, f"{j} replayed after SIGKILL: {len(lines)} copies"


def test_sigkill_with_sink_down_keeps_the_record_in_the_spool(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file: nothing can be created under it\n")
    good = tmp_path / "audit.jsonl"
    block = {"sinks": {"audit": {"type": "file", "path": str(blocker / "audit.jsonl")}},
             "deliver_timeout": 0.5}
    env = MinionEnv(tmp_path / "env", minion_id="procs-minion", config={"fastret": block})
    report = tmp_path / "report.json"
    summary, _ = run_script(env, "kill", "killed-while-down", report, "fork")
    assert summary["exitcode"] == -signal.SIGKILL
    warnings = json.loads(report.read_text())["warnings"]
    assert any("spool" in w for w in warnings), warnings
    status = json.loads(env.fastret("spool", "status", "--json").stdout)
    # Parent and child each spooled a job_load and a job_return per call: 6 calls.
    assert sum(r["pending_records"] for r in status if r["sink"] == "fastret.audit") == 12
    # The sink comes back (same sink name, reachable path): the spooled record is delivered.
    block["sinks"]["audit"]["path"] = str(good)
    env.write_config({"fastret": block})
    drained = env.fastret("spool", "drain", "--timeout", "30")
    assert drained.returncode == 0, drained.stderr
    jid = "killed-while-down"
    expected = [f"{jid}-parent"] + [f"{jid}-{i}" for i in range(4)] + [jid]
    assert audit_counts(env, good) == Counter({j: 1 for j in expected})
    status = json.loads(env.fastret("spool", "status", "--json").stdout)
    assert all(r["pending_records"] == 0 for r in status)
