"""A master with the routed default as job cache and event store (`master_job_cache: fastret`,
`event_return: fastret`: SQLite store plus JSON-lines audit file under the master's cachedir),
and job retention by keep_jobs_seconds."""

import json
import time
import uuid
from pathlib import Path

import pytest

from conftest import db_query, read_jsonl, returns_of, run_runner, run_salt, wait_for

KEEP_JOBS_SECONDS = 20


@pytest.fixture(scope="module")
def master(salt_factories):
    m = salt_factories.salt_master_daemon(
        f"frr-{uuid.uuid4().hex[:6]}",
        overrides={
            "interface": "127.0.0.1",
            "master_job_cache": "fastret",
            "event_return": "fastret",
            "keep_jobs_seconds": KEEP_JOBS_SECONDS,
            "loop_interval": 1,
        },
    )
    with m.started(start_timeout=120):
        yield m


@pytest.fixture(scope="module")
def minion(master):
    mi = master.salt_minion_daemon(f"frri-{uuid.uuid4().hex[:6]}", overrides={"master": "127.0.0.1"})
    with mi.started(start_timeout=120):
        yield mi


@pytest.fixture(scope="module")
def fastret_dir(master):
    return Path(master.config["cachedir"]) / "fastret"


def test_routed_default_job_cache(master, minion, fastret_dir):
    jid, data, _ = run_salt(master, "test.echo", "routed")
    assert data == {minion.id: "routed"}
    assert run_runner(master, "jobs.lookup_jid", jid) == {minion.id: "routed"}
    job = run_runner(master, "jobs.list_jobs")[jid]
    assert job["Function"] == "test.echo" and job["Target"] == "*"
    listed = run_runner(master, "jobs.list_job", jid)
    assert listed["Minions"] == [minion.id]
    assert listed["Result"][minion.id]["return"] == "routed"
    rows = returns_of(fastret_dir / "fastret.db", jid)
    assert [(r[0], r[4]["return"]) for r in rows] == [(minion.id, "routed")]
    # The audit file of the default pipeline has the publish load and the return.
    audit = [r for r in read_jsonl(fastret_dir / "audit.jsonl") if r.get("jid") == jid]
    kinds = sorted(r["kind"] for r in audit)
    assert "job_load" in kinds and kinds.count("job_return") == 1
    # Salt calls save_load with the publish load first (and again with each return): the
    # audit trail keeps every call, the store keeps the first load.
    load = [r for r in audit if r["kind"] == "job_load"][0]
    assert load["data"]["tgt"] == "*" and load["data"]["fun"] == "test.echo"


def test_routed_default_event_return(master, fastret_dir):
    tag = f"my/routed/tag/{uuid.uuid4().hex[:8]}"
    assert run_runner(master, "event.send", tag, '{"x": 1}') is True
    rows = wait_for(lambda: db_query(fastret_dir / "fastret.db",
                                     "SELECT data FROM salt_events WHERE tag = ?", (tag,)),
                    what="the event in salt_events")
    assert len(rows) == 1
    lines = wait_for(lambda: [r for r in read_jsonl(fastret_dir / "audit.jsonl")
                              if r["kind"] == "event" and r.get("tag") == tag],
                     what="the event in the audit file")
    assert len(lines) == 1
    assert json.loads(rows[0][0]) == lines[0]["data"]


def test_keep_jobs_seconds_removes_old_jobs_without_orphans(master, minion, fastret_dir):
    db = fastret_dir / "fastret.db"
    jid, data, _ = run_salt(master, "test.echo", "expires")
    assert data == {minion.id: "expires"}
    assert returns_of(db, jid) and db_query(db, "SELECT 1 FROM jids WHERE jid = ?", (jid,))
    started = time.monotonic()

    def gone():
        return (not db_query(db, "SELECT 1 FROM jids WHERE jid = ?", (jid,))
                and not returns_of(db, jid))

    wait_for(gone, timeout=KEEP_JOBS_SECONDS + 60, interval=1, what="the job's removal")
    assert time.monotonic() - started >= KEEP_JOBS_SECONDS - 5
    assert run_runner(master, "jobs.lookup_jid", jid) == {}
    # No return is left behind whose job is gone.
    orphans = db_query(db, "SELECT count(*) FROM salt_returns r WHERE NOT EXISTS "
                           "(SELECT 1 FROM jids j WHERE j.jid = r.jid)")
    assert orphans[0][0] == 0
