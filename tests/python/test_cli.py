"""The fastret command (console script and `python -m fastret`)."""

import json
import subprocess
import sys
from collections import Counter

import pytest

import fastret
from conftest import FASTRET, REPO, clean_env, db_query, read_jsonl

COMMANDS = ["spool status", "spool drain", "stats", "jobs", "config check", "docs"]


def run(*args, module=False):
    head = [sys.executable, "-m", "fastret"] if module else [FASTRET]
    return subprocess.run(head + list(args), capture_output=True, text=True, timeout=120,
                          env=clean_env(), check=False)


@pytest.mark.parametrize("module", [False, True])
def test_help_explains_each_command(module):
    proc = run("--help", module=module)
    assert proc.returncode == 0
    text = proc.stdout
    for command in COMMANDS:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(command + " ")]
        # The command is followed by an explanation, not just listed.
        assert any(len(ln) > len(command) + 25 for ln in lines), (command, lines)
    for option in ("--config-dir", "--role", "--spool-dir"):
        assert option in text


@pytest.mark.parametrize("args", [["spool", "--help"], ["spool", "drain", "--help"],
                                  ["stats", "--help"], ["config", "check", "--help"],
                                  ["jobs", "--help"], ["docs", "--help"]])
def test_subcommand_help(args):
    proc = run(*args)
    assert proc.returncode == 0 and "usage: fastret" in proc.stdout


def test_version():
    proc = run("--version")
    assert proc.returncode == 0 and fastret.__version__ in proc.stdout


def test_no_command_is_a_usage_error():
    proc = run()
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_spool_status_empty(minion_env):
    proc = minion_env.fastret("spool", "status", module=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "spool is empty"
    js = minion_env.fastret("spool", "status", "--json", module=True)
    assert json.loads(js.stdout) == []


def test_spool_status_after_delivery_has_nothing_pending(minion_env):
    minion_env.salt_call("test.ping", returner="fastret")
    rows = json.loads(minion_env.fastret("spool", "status", "--json").stdout)
    assert {r["sink"] for r in rows} >= {"fastret.store", "fastret.audit"}
    assert all(r["pending_records"] == 0 and r["pending_bytes"] == 0 for r in rows)


def test_spool_holds_records_while_the_sink_is_down_then_drain_delivers_once(make_minion_env,
                                                                                tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file\n")
    good = tmp_path / "audit.jsonl"
    block = {"sinks": {"audit": {"type": "file", "path": str(blocker / "audit.jsonl")}},
             "deliver_timeout": 0.5}
    env = make_minion_env("down", {"fastret": block})
    jids = [env.salt_call("test.echo", f"spooled-{i}", returner="fastret").jid for i in range(2)]

    status = env.fastret("spool", "status", module=True)
    assert status.returncode == 0
    assert "fastret.audit" in status.stdout
    (row,) = [r for r in json.loads(env.fastret("spool", "status", "--json").stdout)
              if r["sink"] == "fastret.audit"]
    # Each salt-call spooled the job's load and its return.
    assert row["pending_records"] == 4 and row["pending_bytes"] > 0 and row["segments"] >= 1

    # Drain with the sink still down delivers nothing and keeps everything.
    still_down = env.fastret("spool", "drain", "--timeout", "3")
    assert still_down.returncode != 0
    (row,) = [r for r in json.loads(env.fastret("spool", "status", "--json").stdout)
              if r["sink"] == "fastret.audit"]
    assert row["pending_records"] == 4

    # Fix the configuration (same sink name, reachable path) and drain.
    block["sinks"]["audit"]["path"] = str(good)
    env.write_config({"fastret": block})
    drained = env.fastret("spool", "drain", "--timeout", "30")
    assert drained.returncode == 0, drained.stderr
    assert "fastret.audit: delivered 4 record(s)" in drained.stdout
    lines = read_jsonl(good)
    assert Counter((r["jid"], r["kind"]) for r in lines) == Counter(
        {(jid, kind): 1 for jid in jids for kind in ("job_load", "job_return")})
    assert sorted(r["data"]["return"] for r in lines if r["kind"] == "job_return") == [
        "spooled-0", "spooled-1"]
    rows = json.loads(env.fastret("spool", "status", "--json").stdout)
    assert all(r["pending_records"] == 0 for r in rows)
    # A second drain and a new salt-call deliver nothing twice.
    again = env.fastret("spool", "drain", "--timeout", "10")
    assert again.returncode == 0
    env.salt_call("test.ping", returner="fastret")
    assert Counter((r["jid"], r["kind"]) for r in read_jsonl(good) if r["jid"] in jids) == Counter(
        {(jid, kind): 1 for jid in jids for kind in ("job_load", "job_return")})


def test_drain_of_a_one_sink_returner_with_nested_options(make_minion_env, tmp_path):
    # The CLI must resolve a `fastret_file: {path: ...}` mapping the way Salt does, or it
    # looks for another spool than the one salt-call wrote.
    blocker = tmp_path / "blocker"
    blocker.write_text("x\n")
    good = tmp_path / "nested.jsonl"
    env = make_minion_env("nested", {"fastret_file": {"path": str(blocker / "f.jsonl"),
                                                      "deliver_timeout": 0.5}})
    jid = env.salt_call("test.echo", "nested", returner="fastret_file").jid
    stats = json.loads(env.fastret("stats", "--json").stdout)["sinks"]
    (row,) = [r for r in stats if r["type"] == "file" and r["sink"].startswith("fastret_file")]
    assert row["destination"] == str(blocker / "f.jsonl")
    assert row["spool_pending_records"] == 2
    # The destination becomes reachable (the spool of a one-sink returner is named after
    # its destination, so the configuration stays as it is): drain delivers.
    blocker.unlink()
    blocker.mkdir()
    drained = env.fastret("spool", "drain", "--timeout", "30")
    assert drained.returncode == 0, drained.stderr
    lines = [r for r in read_jsonl(blocker / "f.jsonl") if r["jid"] == jid]
    assert sorted(r["kind"] for r in lines) == ["job_load", "job_return"]


def test_stats_json(make_minion_env):
    env = make_minion_env("stats")
    jids = [env.salt_call("test.echo", f"s{i}", returner="fastret").jid for i in range(2)]
    proc = env.fastret("stats", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["sink"]: r for r in json.loads(proc.stdout)["sinks"]}
    store = rows["fastret.store"]
    assert store["type"] == "sqlite"
    assert store["destination"] == str(env.store_path)
    assert store["jids"] == 2 and store["salt_returns"] == 2 and store["salt_events"] == 0
    assert store["spool_pending_records"] == 0
    audit = rows["fastret.audit"]
    assert audit["type"] == "file" and audit["destination"] == str(env.audit_path)
    # The one-sink returners are listed with their default destinations too.
    types = sorted(r["type"] for r in rows.values())
    assert types == ["file", "file", "sqlite", "sqlite"]
    assert any(r["destination"] == str(env.returns_path) for r in rows.values())
    text = env.fastret("stats")
    assert text.returncode == 0 and "salt_returns=2" in text.stdout
    assert len(jids) == 2


def test_jobs_lists_recent_jobs(make_minion_env):
    env = make_minion_env("jobs")
    res = env.salt_call("test.echo", "listed", returner="fastret")
    proc = env.fastret("jobs", "--limit", "5")
    assert proc.returncode == 0, proc.stderr
    assert res.jid in proc.stdout and "test.echo" in proc.stdout
    assert f"{env.minion_id}: success=True retcode=0" in proc.stdout
    assert '"listed"' in proc.stdout


def test_docs_lists_every_option():
    proc = run("docs")
    assert proc.returncode == 0
    doc = proc.stdout
    nat = fastret.native()
    for info in nat.sink_types():
        assert f"## Sink `{info['type']}`" in doc
        for option in info["options"]:
            assert f"| `{option['key']}` |" in doc, (info["type"], option["key"])
    for option in nat.common_options():
        assert f"| `{option['key']}` |" in doc
    from fastret.config import PYTHON_OPTIONS, ROUTE_KEYS  # noqa: PLC0415

    for key in list(PYTHON_OPTIONS) + ["sinks", "routes", "spool_dir"]:
        assert f"| `{key}` |" in doc
    for key in ROUTE_KEYS:
        assert f"`{key}`" in doc


def test_docs_configuration_md_is_up_to_date():
    path = REPO / "docs" / "configuration.md"
    generated = run("docs").stdout
    assert path.exists(), "docs/configuration.md is missing: `fastret docs > docs/configuration.md`"
    assert path.read_text(encoding="utf-8") == generated, (
        "docs/configuration.md is stale: run `fastret docs > docs/configuration.md`")


def test_an_unopenable_database_keeps_records_in_the_spool_and_the_other_sink_gets_them(
        make_minion_env, tmp_path):
    """A sqlite store that cannot be opened (here: the file is not a database) stops neither
    the call nor the other sink: the audit file has the return at once, the store's records
    wait in its spool, and a drain delivers them once the database is usable."""
    db = tmp_path / "store.db"
    db.write_text("this is not a database\n" * 100)
    audit = tmp_path / "audit.jsonl"
    block = {"sinks": {"store": {"type": "sqlite", "path": str(db)},
                       "audit": {"type": "file", "path": str(audit)}},
             "deliver_timeout": 0.5}
    env = make_minion_env("notadb", {"fastret": block})
    jid = env.salt_call("test.echo", "kept", returner="fastret").jid
    assert [r["data"]["return"] for r in read_jsonl(audit)
            if r["jid"] == jid and r["kind"] == "job_return"] == ["kept"]
    (row,) = [r for r in json.loads(env.fastret("spool", "status", "--json").stdout)
              if r["sink"] == "fastret.store"]
    assert row["pending_records"] == 2  # the job's load and its return
    assert "not a database" in env.salt_call("test.ping", returner="fastret").stderr + env.log_text()

    db.unlink()  # the operator moves the bad file away
    drained = env.fastret("spool", "drain", "--timeout", "30")
    assert drained.returncode == 0, drained.stdout + drained.stderr
    rows = db_query(db, "SELECT id, full_ret FROM salt_returns WHERE jid = ?", (jid,))
    assert [(m, json.loads(r)["return"]) for m, r in rows] == [(env.minion_id, "kept")]
