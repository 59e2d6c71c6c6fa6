"""Faults with real database servers, through a real salt-master and salt-minion: the
database stopped before a job, stopped and restarted in the middle of an event stream, and the
master killed with SIGKILL while events wait in the spool. Salt keeps working meanwhile, and
afterwards every job and event is in the database exactly once.

Each backend gets a server of its own (the tests stop and kill it)."""

import os
import signal
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

import fastret
from conftest import run_runner, run_salt, wait_for

BACKENDS = [t for t in ("postgres", "mysql")
            if t in {i["type"] for i in fastret.native().sink_types()}]

# A runner that fires many events on the master's bus at once (salt-run event.send sends one).
BURST_RUNNER = textwrap.dedent('''
    import salt.utils.event

    def burst(count, prefix):
        with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"],
                                               listen=False) as bus:
            for i in range(int(count)):
                bus.fire_event({"i": i, "pad": "x" * 400}, f"{prefix}/{i}")
        return int(count)
''')


@pytest.fixture(scope="module", params=BACKENDS)
def db(request, db_servers):
    backend = db_servers.backend(request.param, f"faults_{uuid.uuid4().hex[:8]}",
                                 instance="faults")
    backend.stop, backend.start, backend.kill = db_servers.control(request.param, "faults")
    yield backend
    backend.start()  # whatever a test left behind


@pytest.fixture(scope="module")
def master(salt_factories, db, tmp_path_factory):
    runners = tmp_path_factory.mktemp("runners")
    (runners / "frburst.py").write_text(BURST_RUNNER)
    options = dict(db.options, retry_max_ms=500, connect_timeout_ms=2000)
    m = salt_factories.salt_master_daemon(
        f"frf-{db.name[:2]}-{uuid.uuid4().hex[:4]}",
        overrides={"interface": "127.0.0.1", "master_job_cache": db.module,
                   "event_return": db.module, "runner_dirs": [str(runners)],
                   db.module: options},
    )
    with m.started(start_timeout=120):
        yield m


@pytest.fixture(scope="module")
def minion(master):
    mi = master.salt_minion_daemon(f"frfm-{uuid.uuid4().hex[:6]}",
                                   overrides={"master": "127.0.0.1"})
    with mi.started(start_timeout=120):
        yield mi


@pytest.fixture(scope="module")
def store(db):
    return db.store()


def events_like(store, prefix):
    return store.get_events(f"{prefix}/*", 0)


def test_database_down_before_a_job(db, master, minion, store):
    run_salt(master, "test.ping")  # the job cache works before the fault
    db.stop()
    try:
        start = time.monotonic()
        jid, data, _ = run_salt(master, "test.ping")
        elapsed = time.monotonic() - start
        assert data == {minion.id: True}
        assert elapsed < 15, f"salt test.ping took {elapsed:.1f}s with the database down"
        # The jobs runner answers from the spool while the database is down.
        assert run_runner(master, "jobs.lookup_jid", jid) == {minion.id: True}
        assert run_runner(master, "jobs.list_job", jid)["Minions"] == [minion.id]
    finally:
        db.start()
    wait_for(lambda: store.get_returns(jid) and store.get_load(jid), timeout=90,
             what="the job in the database after it came back")
    assert [m for m, _ in store.get_returns(jid)] == [minion.id]
    assert run_runner(master, "jobs.lookup_jid", jid) == {minion.id: True}


def test_database_stopped_and_restarted_mid_event_stream(db, master, store):
    prefix = f"fastret/faults/stream-{uuid.uuid4().hex[:8]}"
    assert run_runner(master, "frburst.burst", "1500", f"{prefix}/a") == 1500
    db.stop()
    try:
        assert run_runner(master, "frburst.burst", "1500", f"{prefix}/b") == 1500
        time.sleep(1)
    finally:
        db.start()
    assert run_runner(master, "frburst.burst", "1000", f"{prefix}/c") == 1000
    rows = wait_for(lambda: (r := events_like(store, prefix)) and len(r) >= 4000 and r,
                    timeout=120, what="4000 events in the database")
    tags = [t for t, _ in rows]
    assert len(tags) == len(set(tags)) == 4000  # every event, none twice


def _kill_tree(pid):
    procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def test_master_killed_while_events_are_spooled(db, master, store):
    prefix = f"fastret/faults/kill-{uuid.uuid4().hex[:8]}"
    spool_root = Path(master.config["cachedir"]) / "fastret" / "spool"
    db.stop()
    try:
        assert run_runner(master, "frburst.burst", "800", prefix) == 800
        time.sleep(2)  # the event-return process has spooled them by now
        spooled = sum(f.stat().st_size for f in spool_root.rglob("*.seg"))
        assert spooled > 800 * 400
        _kill_tree(master.pid)
    finally:
        db.start()
    master.terminate()  # the factory's bookkeeping of the killed daemon
    with master.started(start_timeout=120):
        rows = wait_for(lambda: (r := events_like(store, prefix)) and len(r) >= 800 and r,
                        timeout=120, what="the killed master's 800 events")
        tags = [t for t, _ in rows]
        assert len(tags) == len(set(tags)) == 800
