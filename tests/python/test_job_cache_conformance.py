"""One job-cache conformance suite for every database backend: a real salt-master and
salt-minion on 127.0.0.1 with `master_job_cache` and `event_return` set to fastret_sqlite,
fastret_postgres or fastret_mysql (each against its own throwaway server with verified TLS),
driven by the salt CLI and the jobs runner. The same tests, the same expected answers.

The master runs with `unique_jid: True`, so every jid carries a `_<pid>` suffix."""

import json
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from conftest import run_runner, run_salt, wait_for

import fastret

# Every database backend of this build (all three in a normal build: the build requires them).
BACKENDS = [t for t in ("sqlite", "postgres", "mysql")
            if t in {i["type"] for i in fastret.native().sink_types()}]


@pytest.fixture(scope="module", params=BACKENDS)
def db(request, db_servers):
    return db_servers.backend(request.param, f"conf_{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def master(salt_factories, db):
    m = salt_factories.salt_master_daemon(
        f"frc-{db.name[:2]}-{uuid.uuid4().hex[:4]}",
        overrides={
            "interface": "127.0.0.1",
            "master_job_cache": db.module,
            "event_return": db.module,
            "unique_jid": True,
            "max_event_size": 16 * 1024 * 1024,  # Salt trims bigger returns (5 MB test)
            db.module: db.options,
        },
    )
    with m.started(start_timeout=120):
        yield m


@pytest.fixture(scope="module")
def minion(master):
    mi = master.salt_minion_daemon(f"frcm-{uuid.uuid4().hex[:6]}",
                                   overrides={"master": "127.0.0.1", "unique_jid": True,
                                              "max_event_size": 16 * 1024 * 1024})
    with mi.started(start_timeout=120):
        yield mi


@pytest.fixture(scope="module")
def store(db):
    return db.store()


@pytest.fixture(scope="module")
def ping_job(master, minion):
    jid, data, _ = run_salt(master, "test.ping")
    assert data == {minion.id: True}
    assert "_" in jid  # unique_jid suffix
    return jid


def test_ping_is_in_the_job_store(store, minion, ping_job):
    rows = wait_for(lambda: store.get_returns(ping_job), what="the ping's return")
    assert [(m, json.loads(r)["return"]) for m, r in rows] == [(minion.id, True)]
    load = json.loads(store.get_load(ping_job))
    assert load["fun"] == "test.ping" and load["tgt"] == "*"
    assert json.loads(store.get_minions_of(ping_job)) == [minion.id]


def test_lookup_jid(master, minion, ping_job):
    assert run_runner(master, "jobs.lookup_jid", ping_job) == {minion.id: True}


def test_list_jobs_has_target_and_function(master, ping_job):
    job = run_runner(master, "jobs.list_jobs")[ping_job]
    assert (job["Function"], job["Target"], job["Target-type"]) == ("test.ping", "*", "glob")


def test_list_jobs_filter(master, ping_job):
    jobs = run_runner(master, "jobs.list_jobs_filter", "50")
    (job,) = [j for j in jobs if j["JID"] == ping_job]
    assert job["Function"] == "test.ping" and job["Target"] == "*"
    assert all(j["Function"] != "saltutil.find_job" for j in jobs)


def test_list_job(master, minion, ping_job):
    job = run_runner(master, "jobs.list_job", ping_job)
    assert job["jid"] == ping_job and job["Function"] == "test.ping"
    assert job["Minions"] == [minion.id]
    assert job["Result"][minion.id]["return"] is True


STATE = textwrap.dedent("""
    fastret-conformance:
      file.managed:
        - name: {{ pillar['target'] }}
        - contents: "marker {{ pillar['marker'] }}"
""")


def test_state_apply(master, minion, tmp_path):
    state_root = Path(master.config["file_roots"]["base"][0])
    (state_root / "frconf.sls").write_text(STATE)
    target, marker = tmp_path / "managed.txt", uuid.uuid4().hex
    jid, data, _ = run_salt(master, "state.apply", "frconf",
                            f'pillar={{"target": "{target}", "marker": "{marker}"}}')
    assert target.read_text().strip() == f"marker {marker}"
    (state,) = data[minion.id].values()
    assert state["result"] is True and state["changes"]
    assert run_runner(master, "jobs.lookup_jid", jid) == data
    assert run_runner(master, "jobs.list_job", jid)["Function"] == "state.apply"


def test_events_are_stored(master, store):
    tag = f"fastret/conformance/{uuid.uuid4().hex[:8]}"
    assert run_runner(master, "event.send", tag, '{"x": 1}') is True
    rows = wait_for(lambda: store.get_events(tag, 10), what=f"event {tag}")
    assert [(t, json.loads(d)["x"]) for t, d in rows] == [(tag, 1)]


INJECTION = ["'); DROP TABLE jids;--", "x' OR '1'='1", 'a"b\\c', "h\u00e9llo \u2603 \U0001f600",
             "%s %d {} $1 \\x00"]


def test_injection_strings_in_arguments_and_returns(master, minion, store):
    jid, data, _ = run_salt(master, "test.arg", *INJECTION)
    assert data[minion.id]["args"] == INJECTION
    assert run_runner(master, "jobs.lookup_jid", jid)[minion.id]["args"] == INJECTION
    assert run_runner(master, "jobs.list_jobs")[jid]["Arguments"] == INJECTION
    assert store.count("jids") >= 2  # nothing was dropped by the strings above


def test_five_megabyte_return(master, minion, store):
    # Salt replaces values larger than max_event_size (1 MB by default) by VALUE_TRIMMED; the
    # master and minion here allow 16 MB, so the job cache gets the whole return.
    size = 5 * 1024 * 1024
    jid, _data, _ = run_salt(master, "cmd.run", f"python3 -c 'print(\"x\" * {size})'")
    rows = wait_for(lambda: store.get_returns(jid), what="the 5 MB return")
    ((who, full_ret),) = rows
    assert who == minion.id and json.loads(full_ret)["return"] == "x" * size


def test_failed_job_keeps_retcode(master, minion, store):
    res = master.salt_cli(timeout=120).run("-v", "test.retcode", "5", minion_tgt="*")
    from conftest import JID_RE  # noqa: PLC0415

    jid = JID_RE.search(res.stdout).group(1)
    rows = wait_for(lambda: store.get_returns(jid), what="the failed job's return")
    assert [json.loads(r).get("retcode") for _, r in rows] == [5]


def test_get_minions_and_get_fun(store, minion, ping_job):
    assert minion.id in store.get_minion_ids()
    assert dict(store.get_fun("test.ping")).get(minion.id) == "test.ping"


def test_clean_old_jobs_deletes_loads_and_returns_together(master, minion, store, ping_job):
    # Runs last in this module. The job cache's clean_old_jobs (which the master's maintenance
    # process calls) with keep_jobs_seconds of 1: every job above is older than that.
    import salt.config  # noqa: PLC0415
    import salt.loader  # noqa: PLC0415

    time.sleep(1.5)
    opts = salt.config.master_config(str(Path(master.config_dir) / "master"))
    opts["keep_jobs_seconds"] = 1
    returners = salt.loader.returners(opts, {})
    returners[f"{master.config['master_job_cache']}.clean_old_jobs"]()
    assert store.get_load(ping_job) is None
    assert store.get_returns(ping_job) == []
    assert ping_job not in run_runner(master, "jobs.list_jobs")
    # A new job after the cleanup is stored as usual.
    jid, data, _ = run_salt(master, "test.ping")
    assert run_runner(master, "jobs.lookup_jid", jid) == {minion.id: True}
