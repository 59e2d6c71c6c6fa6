"""A real salt-master and salt-minion on 127.0.0.1 (pytest-salt-factories) with
`master_job_cache: fastret_sqlite` and `event_return: fastret_sqlite`: the salt CLI, the jobs
runner and the event bus go through fastret's store; `--return fastret_file` on the salt CLI
writes on the minion side, with --return_config profiles and --return_kwargs."""

import json
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest

from conftest import (FASTRET, JID_RE, clean_env, db_query, read_jsonl, returns_of, run_runner,
                      run_salt, wait_for)


@pytest.fixture(scope="module")
def master(salt_factories):
    m = salt_factories.salt_master_daemon(
        f"frm-{uuid.uuid4().hex[:6]}",
        overrides={
            "interface": "127.0.0.1",
            "master_job_cache": "fastret_sqlite",
            "event_return": "fastret_sqlite",
            # An always-approving eauth backend, to publish with credentials.
            "external_auth": {"auto": {"fr-eauth-user": [".*"]}},
        },
    )
    with m.started(start_timeout=120):
        yield m


@pytest.fixture(scope="module")
def minion(master):
    root = Path(master.config["root_dir"]).parent
    mi = master.salt_minion_daemon(
        f"frmi-{uuid.uuid4().hex[:6]}",
        overrides={
            "master": "127.0.0.1",
            # --return_kwargs may redirect fastret_file (only): the administrator allows it.
            "fastret_file.allow_return_kwargs": ["path"],
            "alt.fastret_file.path": str(root / "alt-profile.jsonl"),
            "alt.fastret": {"sinks": {"out": {"type": "file",
                                              "path": str(root / "alt-routed.jsonl")}}},
        },
    )
    with mi.started(start_timeout=120):
        yield mi


@pytest.fixture(scope="module")
def store(master):
    return Path(master.config["cachedir"]) / "fastret" / "fastret.db"


@pytest.fixture(scope="module")
def ping_job(master, minion):
    """One `salt '*' test.ping`, shared by the jobs-runner tests."""
    jid, data, _ = run_salt(master, "test.ping")
    assert data == {minion.id: True}
    return jid


def test_ping_is_stored_by_the_job_cache(store, minion, ping_job):
    rows = returns_of(store, ping_job)
    assert [(r[0], r[1], r[2], r[3], r[4]["return"]) for r in rows] == [
        (minion.id, "test.ping", 1, 0, True)]
    (load,) = db_query(store, "SELECT load, minions, fun, tgt FROM jids WHERE jid = ?", (ping_job,))
    assert json.loads(load[0])["fun"] == "test.ping"
    assert json.loads(load[1]) == [minion.id]
    assert load[2:] == ("test.ping", "*")


def test_lookup_jid(master, minion, ping_job):
    assert run_runner(master, "jobs.lookup_jid", ping_job) == {minion.id: True}


def test_list_jobs(master, ping_job):
    jobs = run_runner(master, "jobs.list_jobs")
    job = jobs[ping_job]
    assert job["Function"] == "test.ping"
    assert job["Target"] == "*"
    assert job["Target-type"] == "glob"
    assert job["Arguments"] == []


def test_list_jobs_filter(master, ping_job):
    jobs = run_runner(master, "jobs.list_jobs_filter", "50")
    (job,) = [j for j in jobs if j["JID"] == ping_job]
    assert job["Function"] == "test.ping" and job["Target"] == "*"
    # find_job polls are filtered out by default.
    assert all(j["Function"] != "saltutil.find_job" for j in jobs)


def test_list_job(master, minion, ping_job):
    job = run_runner(master, "jobs.list_job", ping_job)
    assert job["jid"] == ping_job
    assert job["Function"] == "test.ping"
    assert job["Minions"] == [minion.id]
    assert job["Result"][minion.id]["return"] is True


def test_job_with_arguments_and_failure(master, minion, store):
    jid, data, _ = run_salt(master, "test.arg", "'); DROP TABLE jids;--", "k=v")
    assert data[minion.id]["args"] == ["'); DROP TABLE jids;--"]
    result = run_runner(master, "jobs.lookup_jid", jid)
    assert result[minion.id]["args"] == ["'); DROP TABLE jids;--"]
    assert run_runner(master, "jobs.list_jobs")[jid]["Arguments"][0] == "'); DROP TABLE jids;--"
    # A failing job keeps its retcode and success flag.
    res = master.salt_cli(timeout=120).run("-v", "test.retcode", "5", minion_tgt="*")
    fail_jid = JID_RE.search(res.stdout).group(1)
    rows = wait_for(lambda: returns_of(store, fail_jid), what="the failed job's return")
    assert [(r[2], r[3]) for r in rows] == [(0, 5)]


def test_event_send_from_runner_is_stored(master, store):
    tag = f"my/test/tag/{uuid.uuid4().hex[:8]}"
    assert run_runner(master, "event.send", tag, '{"x": 1}') is True

    def stored():
        return db_query(store, "SELECT tag, data, master_id FROM salt_events WHERE tag = ?", (tag,))

    (row,) = wait_for(stored, timeout=60, what=f"event {tag} in salt_events")
    data = json.loads(row[1])
    assert data["x"] == 1
    assert row[2] == master.id


def test_event_send_from_minion_is_stored(master, minion, store):
    tag = f"my/minion/tag/{uuid.uuid4().hex[:8]}"
    res = minion.salt_call_cli(timeout=120).run("event.send", tag, data={"y": 2})
    assert res.returncode == 0 and res.data is True

    def stored():
        return db_query(store, "SELECT data FROM salt_events WHERE tag = ?", (tag,))

    (row,) = wait_for(stored, timeout=60, what=f"event {tag} in salt_events")
    data = json.loads(row[0])
    assert data["data"]["y"] == 2
    assert data["id"] == minion.id


def test_job_events_are_stored(master, store, ping_job):
    def stored():
        return db_query(store, "SELECT tag, data FROM salt_events WHERE tag LIKE ?",
                        (f"salt/job/{ping_job}/%",))

    rows = wait_for(stored, timeout=60, what="the job's events")
    tags = {r[0] for r in rows}
    assert f"salt/job/{ping_job}/new" in tags
    assert any(t.startswith(f"salt/job/{ping_job}/ret/") for t in tags)


STATE = textwrap.dedent("""
    fastret-master-file:
      file.managed:
        - name: {{ pillar['target'] }}
        - makedirs: True
        - contents: "marker {{ pillar['marker'] }}"
""")


def job_returns(path, jid):
    return [r for r in read_jsonl(path) if r.get("jid") == jid and r["kind"] == "job_return"]


def minion_file(minion, name):
    return Path(minion.config["cachedir"]) / "fastret" / name


def test_state_apply_with_return_fastret_file(master, minion, store, tmp_path):
    state_root = Path(master.config["file_roots"]["base"][0])
    (state_root / "frmaster.sls").write_text(STATE)
    target = tmp_path / "master-managed.txt"
    marker = uuid.uuid4().hex
    jid, data, _ = run_salt(master, "state.apply", "frmaster",
                            f'pillar={{"target": "{target}", "marker": "{marker}"}}',
                            "--return", "fastret_file")
    assert target.read_text().strip() == f"marker {marker}"
    (state,) = data[minion.id].values()
    assert state["result"] is True and state["changes"]
    # Minion side: the returner wrote the job into the minion's default file. The minion
    # sends the return to the master before it runs the --return returners: poll.
    lines = wait_for(lambda: job_returns(minion_file(minion, "returns.jsonl"), jid),
                     what="the minion's returns.jsonl line")
    assert [(r["minion"], r["fun"], r["success"], r["retcode"]) for r in lines] == [
        (minion.id, "state.apply", True, 0)]
    assert lines[0]["data"]["return"] == data[minion.id]
    # Master side: the job cache has the same return.
    assert run_runner(master, "jobs.lookup_jid", jid)[minion.id] == data[minion.id]


def test_return_config_profile(master, minion):
    jid, data, _ = run_salt(master, "test.echo", "via-profile", "--return", "fastret_file",
                            "--return_config", "alt")
    path = Path(minion.config["alt.fastret_file.path"])
    lines = wait_for(lambda: job_returns(path, jid), what="the profile's file")
    assert [(r["minion"], r["data"]["return"]) for r in lines] == [(minion.id, "via-profile")]
    assert not job_returns(minion_file(minion, "returns.jsonl"), jid)


def test_return_kwargs(master, minion):
    path = Path(master.config["root_dir"]).parent / f"kwargs-{uuid.uuid4().hex[:6]}.jsonl"
    jid, data, _ = run_salt(master, "test.echo", "via-kwargs", "--return", "fastret_file",
                            "--return_kwargs", json.dumps({"path": str(path)}))
    lines = wait_for(lambda: job_returns(path, jid), what="the --return_kwargs file")
    assert [(r["minion"], r["data"]["return"]) for r in lines] == [(minion.id, "via-kwargs")]
    assert not job_returns(minion_file(minion, "returns.jsonl"), jid)


def test_routed_fastret_return_config_and_kwargs(master, minion):
    """The routed returner resolves its block the Salt way: `--return_config alt` takes the
    `alt.fastret` block (its sinks spooled under names of their own), `--return_kwargs` sets
    top-level keys, and an unknown one is refused by name."""
    alt_path = Path(minion.config["alt.fastret"]["sinks"]["out"]["path"])
    audit = minion_file(minion, "audit.jsonl")
    jid, data, _ = run_salt(master, "test.echo", "routed-profile", "--return", "fastret",
                            "--return_config", "alt")
    lines = wait_for(lambda: job_returns(alt_path, jid), what="the routed profile's file")
    assert [(r["minion"], r["data"]["return"]) for r in lines] == [(minion.id, "routed-profile")]
    assert not job_returns(audit, jid)
    spools = [p.name for p in (minion_file(minion, "spool")).iterdir()]
    assert any(n.startswith("fastret-") and n.endswith(".out") for n in spools), spools

    jid, data, _ = run_salt(master, "test.echo", "routed-kwargs", "--return", "fastret",
                            "--return_kwargs", json.dumps({"deliver_timeout": 5}))
    lines = wait_for(lambda: job_returns(audit, jid), what="the default audit file")
    assert [r["data"]["return"] for r in lines] == ["routed-kwargs"]

    jid, data, _ = run_salt(master, "test.echo", "routed-bad", "--return", "fastret",
                            "--return_kwargs", json.dumps({"deliver_timeuot": 5}))
    assert data == {minion.id: "routed-bad"}
    log = Path(minion.config["log_file"])
    wait_for(lambda: "unknown key 'deliver_timeuot'" in log.read_text(errors="replace"),
             what="the minion's error naming 'deliver_timeuot'")
    assert not job_returns(audit, jid)


def test_return_kwargs_may_not_redirect_without_the_allow_list(master, minion, tmp_path):
    """fastret_sqlite has no allow_return_kwargs on this minion: a publisher cannot point it at
    another database (or fastret at other sinks); the attempt is logged, the job unaffected."""
    path = tmp_path / "elsewhere.db"
    log = Path(minion.config["log_file"])
    for returner, kwargs, key in (("fastret_sqlite", {"path": str(path)}, "path"),
                                  ("fastret", {"sinks": {"x": {"type": "file",
                                                               "path": str(path)}}}, "sinks")):
        jid, data, _ = run_salt(master, "test.echo", "redirect", "--return", returner,
                                "--return_kwargs", json.dumps(kwargs))
        assert data == {minion.id: "redirect"}
        wait_for(lambda k=key, r=returner: f"{r}: --return_kwargs may not set '{k}'"
                 in log.read_text(errors="replace"), what=f"the refusal of '{key}' in the log")
    assert not path.exists()


def test_eauth_credentials_never_reach_the_job_cache(master, minion, store):
    secret = f"pw-{uuid.uuid4().hex}"
    res = master.salt_cli(timeout=120).run(
        "-v", "-a", "auto", "--username", "fr-eauth-user", "--password", secret, "test.ping",
        minion_tgt="*")
    assert res.returncode == 0, res
    jid = JID_RE.search(res.stdout).group(1)
    assert run_runner(master, "jobs.lookup_jid", jid) == {minion.id: True}
    (load,) = db_query(store, "SELECT load FROM jids WHERE jid = ?", (jid,))
    assert json.loads(load[0])["fun"] == "test.ping"
    dump = "\n".join(str(r) for table in ("jids", "salt_returns", "salt_events")
                      for r in db_query(store, f"SELECT * FROM {table}"))  # noqa: S608
    assert secret not in dump


def test_return_kwargs_unknown_key_is_logged(master, minion):
    jid, data, _ = run_salt(master, "test.echo", "bad-kwargs", "--return", "fastret_file",
                            "--return_kwargs", json.dumps({"pth": "/tmp/nowhere"}))
    # The job itself is unaffected: the master has the minion's return.
    assert data == {minion.id: "bad-kwargs"}
    log = Path(minion.config["log_file"])
    wait_for(lambda: "unknown option 'pth'" in log.read_text(errors="replace"),
             what="the minion's error naming 'pth'")
    assert not Path("/tmp/nowhere").exists()


def test_get_minions_and_get_fun_through_the_store(master, minion, ping_job):
    import fastret  # noqa: PLC0415

    st = fastret.native().SqliteStore(str(Path(master.config["cachedir"]) / "fastret" / "fastret.db"))
    assert minion.id in st.get_minion_ids()
    assert dict(st.get_fun("test.ping")).get(minion.id) == "test.ping"
    assert json.loads(st.get_load(ping_job))["tgt"] == "*"


def test_cli_stats_on_the_master_config(master, ping_job):
    proc = subprocess.run([FASTRET, "-c", master.config_dir, "--role", "master", "stats", "--json"],
                          capture_output=True, text=True, timeout=120, env=clean_env(), check=False)
    assert proc.returncode == 0, proc.stderr
    (row,) = [r for r in json.loads(proc.stdout)["sinks"] if r["sink"].startswith("fastret_sqlite")]
    assert row["destination"] == str(Path(master.config["cachedir"]) / "fastret" / "fastret.db")
    assert row["jids"] >= 1 and row["salt_returns"] >= 1 and row["salt_events"] >= 1


def test_master_and_minion_logs_have_no_fastret_errors(master, minion):
    # Runs last in this module: every job-cache call and event batch of the tests above went
    # through fastret without an error being logged (e.g. a job-cache read before the first
    # write, or a failed event batch).
    for daemon in (master, minion):
        log = Path(daemon.config["log_file"]).read_text(errors="replace")
        bad = [line for line in log.splitlines()
               if ("[ERROR" in line or "[CRITICAL" in line or "Traceback" in line)
               and "fastret" in line
               and "'pth'" not in line and "'deliver_timeuot'" not in line
               and "--return_kwargs may not set" not in line]  # provoked above
        assert bad == [], "\n".join(bad[:20])
