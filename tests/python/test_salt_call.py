"""salt-call --local with --return fastret / fastret_sqlite / fastret_file: what lands in the
SQLite store and the JSON-lines files, with default destinations and with options from the
minion config."""

import json

import pytest

from conftest import CHANGEFILE_SLS, FRBAD_MODULE, MinionEnv, read_jsonl, returns_of, db_query


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One salt-call environment shared by the tests of this module (each test works on its
    own jids)."""
    e = MinionEnv(tmp_path_factory.mktemp("salt-call") / "env")
    e.add_state("changefile", CHANGEFILE_SLS)
    e.add_module("frbad", FRBAD_MODULE)
    synced = e.salt_call("saltutil.sync_modules", metadata=False)
    assert "modules.frbad" in synced.data
    return e


def lines_of(path, jid, kind="job_return"):
    return [r for r in read_jsonl(path) if r.get("jid") == jid and r.get("kind") == kind]


def check_return_row(env, jid, fun, ret, success=True, retcode=0):
    rows = returns_of(env.store_path, jid)
    assert len(rows) == 1, rows
    minion, row_fun, row_success, row_retcode, full_ret = rows[0]
    assert minion == env.minion_id
    assert row_fun == fun
    assert row_success == (1 if success else 0)
    assert row_retcode == retcode
    assert full_ret["jid"] == jid
    assert full_ret["id"] == env.minion_id
    assert full_ret["fun"] == fun
    assert full_ret["return"] == ret
    return full_ret


def check_return_line(path, env, jid, fun, ret, success=True, retcode=0):
    lines = lines_of(path, jid)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line["minion"] == env.minion_id
    assert line["fun"] == fun
    assert line["success"] is success
    assert line["retcode"] == retcode
    assert line["data"]["return"] == ret
    assert line["data"]["jid"] == jid
    assert isinstance(line["id"], str) and line["id"]
    assert line["time"].endswith("Z")
    return line


def test_ping_return_fastret_default(env):
    res = env.salt_call("test.ping", returner="fastret")
    assert res.ret is True
    check_return_row(env, res.jid, "test.ping", True)
    # The embedded default also keeps the audit trail: the job's load and its return.
    check_return_line(env.audit_path, env, res.jid, "test.ping", True)
    loads = lines_of(env.audit_path, res.jid, kind="job_load")
    assert len(loads) == 1 and loads[0]["data"]["fun"] == "test.ping"
    # A minion-side --return records the job itself, so the job list shows it.
    load = db_query(env.store_path, "SELECT fun, tgt, load FROM jids WHERE jid = ?", (res.jid,))
    assert len(load) == 1
    assert load[0][0] == "test.ping"
    assert load[0][1] == env.minion_id
    assert json.loads(load[0][2])["jid"] == res.jid


def test_ping_return_fastret_sqlite(env):
    res = env.salt_call("test.ping", returner="fastret_sqlite")
    check_return_row(env, res.jid, "test.ping", True)
    assert lines_of(env.audit_path, res.jid) == []
    assert lines_of(env.returns_path, res.jid) == []


def test_ping_return_fastret_file(env):
    res = env.salt_call("test.ping", returner="fastret_file")
    check_return_line(env.returns_path, env, res.jid, "test.ping", True)
    assert returns_of(env.store_path, res.jid) == []
    assert lines_of(env.audit_path, res.jid) == []


def test_store_read_back_through_native_store(env):
    import fastret  # noqa: PLC0415

    res = env.salt_call("test.arg", "positional", "kw=value", returner="fastret_sqlite")
    store = fastret.native().SqliteStore(str(env.store_path))
    returns = store.get_returns(res.jid)
    assert [m for m, _ in returns] == [env.minion_id]
    full = json.loads(returns[0][1])
    assert full["return"]["args"] == ["positional"]
    assert full["return"]["kwargs"]["kw"] == "value"
    assert json.loads(store.get_load(res.jid))["fun"] == "test.arg"


def test_several_returners_at_once(env):
    res = env.salt_call("test.echo", "both", returner="fastret_sqlite,fastret_file")
    check_return_row(env, res.jid, "test.echo", "both")
    check_return_line(env.returns_path, env, res.jid, "test.echo", "both")


@pytest.mark.parametrize("returner", ["fastret", "fastret_sqlite", "fastret_file"])
def test_state_apply_that_changes_a_file(env, tmp_path, returner):
    target = tmp_path / "managed.txt"
    marker = f"{returner}-{tmp_path.name}"
    res = env.salt_call("state.apply", "changefile",
                        f'pillar={{"target": "{target}", "marker": "{marker}"}}',
                        returner=returner)
    assert target.read_text().strip() == f"marker {marker}"
    # The state's own result, as salt-call printed it.
    (state_id, state), = res.ret.items()
    assert state["result"] is True and state["changes"]
    if returner == "fastret_file":
        stored = check_return_line(env.returns_path, env, res.jid, "state.apply", res.ret)["data"]
    else:
        stored = check_return_row(env, res.jid, "state.apply", res.ret)
    assert stored["return"][state_id]["changes"] == state["changes"]
    assert stored["fun_args"][0] == "changefile"
    if returner == "fastret":
        check_return_line(env.audit_path, env, res.jid, "state.apply", res.ret)


def test_state_apply_without_changes_still_recorded(env, tmp_path):
    target = tmp_path / "same.txt"
    args = ("state.apply", "changefile", f'pillar={{"target": "{target}", "marker": "same"}}')
    env.salt_call(*args)
    res = env.salt_call(*args, returner="fastret_sqlite")
    (state,) = res.ret.values()
    assert state["result"] is True and state["changes"] == {}
    full = check_return_row(env, res.jid, "state.apply", res.ret)
    assert list(full["return"].values())[0]["changes"] == {}


def test_failed_job_recorded_with_retcode(env):
    res = env.salt_call("frbad.fail", returner="fastret", check=False)
    assert res.returncode != 0
    assert res.ret == "'); DROP TABLE jids;--"
    check_return_row(env, res.jid, "frbad.fail", res.ret, success=False, retcode=3)
    check_return_line(env.audit_path, env, res.jid, "frbad.fail", res.ret, success=False,
                      retcode=3)
    # The injection string in the return did nothing to the schema.
    assert db_query(env.store_path, "SELECT count(*) FROM jids")[0][0] >= 1


def test_each_call_is_one_row(env):
    jids = [env.salt_call("test.echo", f"n{i}", returner="fastret").jid for i in range(3)]
    assert len(set(jids)) == 3
    for i, jid in enumerate(jids):
        check_return_row(env, jid, "test.echo", f"n{i}")
        check_return_line(env.audit_path, env, jid, "test.echo", f"n{i}")


# ---- options from the minion config ---------------------------------------------------------


def test_file_path_flat_option(make_minion_env, tmp_path):
    path = tmp_path / "out" / "flat.jsonl"
    env = make_minion_env("flat", {"fastret_file.path": str(path)})
    res = env.salt_call("test.ping", returner="fastret_file")
    check_return_line(path, env, res.jid, "test.ping", True)
    assert not env.returns_path.exists()


def test_file_path_nested_option(make_minion_env, tmp_path):
    path = tmp_path / "nested.jsonl"
    env = make_minion_env("nested", {"fastret_file": {"path": str(path), "fsync": False}})
    res = env.salt_call("test.echo", "nested", returner="fastret_file")
    check_return_line(path, env, res.jid, "test.echo", "nested")
    assert not env.returns_path.exists()


def test_sqlite_path_option(make_minion_env, tmp_path):
    path = tmp_path / "db" / "custom.db"
    env = make_minion_env("sqlite", {"fastret_sqlite.path": str(path),
                                     "fastret_sqlite.synchronous": "normal"})
    res = env.salt_call("test.echo", "custom", returner="fastret_sqlite")
    rows = returns_of(path, res.jid)
    assert [(r[0], r[1], r[4]["return"]) for r in rows] == [(env.minion_id, "test.echo", "custom")]
    assert not env.store_path.exists()


def test_file_bytes_encoding_base64_option(make_minion_env, tmp_path):
    import base64  # noqa: PLC0415

    path = tmp_path / "b64.jsonl"
    env = make_minion_env("b64", {"fastret_file.path": str(path),
                                  "fastret_file.bytes_encoding": "base64"})
    env.add_module("frbad", FRBAD_MODULE)
    env.salt_call("saltutil.sync_modules", metadata=False)
    res = env.salt_call("frbad.raw_bytes", returner="fastret_file")
    (line,) = lines_of(path, res.jid)
    raw = b"ok \xff\xfe bad \xc3\x28 mid \xed\xa0\x80 end \xe2\x82\xac"
    assert base64.b64decode(line["data"]["return"]) == raw


def test_routed_block_with_routes(make_minion_env, tmp_path):
    everything = tmp_path / "all.jsonl"
    failures = tmp_path / "failures.jsonl"
    db = tmp_path / "routed.db"
    env = make_minion_env("routed", {"fastret": {
        "sinks": {
            "all": {"type": "file", "path": str(everything)},
            "failures": {"type": "file", "path": str(failures)},
            "store": {"type": "sqlite", "path": str(db)},
        },
        "routes": [
            {"sinks": ["all", "store"]},
            {"sinks": ["failures"], "kinds": ["job_return"], "success": False},
        ],
    }})
    env.add_module("frbad", FRBAD_MODULE)
    env.salt_call("saltutil.sync_modules", metadata=False)
    ok = env.salt_call("test.ping", returner="fastret")
    bad = env.salt_call("frbad.fail", returner="fastret", check=False)
    check_return_line(everything, env, ok.jid, "test.ping", True)
    check_return_line(everything, env, bad.jid, "frbad.fail", bad.ret, success=False, retcode=3)
    check_return_line(failures, env, bad.jid, "frbad.fail", bad.ret, success=False, retcode=3)
    assert lines_of(failures, ok.jid) == []
    assert [r[4]["return"] for r in returns_of(db, ok.jid)] == [True]
    assert not env.store_path.exists() and not env.audit_path.exists()

