"""Bad configuration: salt-call keeps working and logs an error that names the offending key;
`fastret config check` exits 2 naming it."""

import pytest

from conftest import read_jsonl, returns_of

TYPO_BLOCK = {"fastret": {"sinks": {"a": {"type": "file", "pth": "x"}}}}


def test_unknown_sink_option_is_logged_and_nothing_crashes(make_minion_env):
    env = make_minion_env("typo", TYPO_BLOCK)
    res = env.salt_call("test.ping", returner="fastret")
    assert res.ret is True  # salt-call's normal output, exit 0
    assert "'pth'" in res.stderr and "sink 'a'" in res.stderr
    assert "allowed options" in res.stderr and "path" in res.stderr
    assert "Traceback" not in res.stderr
    log = env.log_text()
    assert "unknown option 'pth'" in log and "[ERROR" in log
    # Nothing was silently replaced by a default: no file named by the typo, no default store.
    assert not (env.base / "x").exists()
    assert not env.store_path.exists() and not env.audit_path.exists()


def test_unknown_sink_option_does_not_break_other_returners(make_minion_env):
    env = make_minion_env("typo-other", TYPO_BLOCK)
    res = env.salt_call("test.echo", "still-works", returner="fastret_sqlite")
    assert [r[4]["return"] for r in returns_of(env.store_path, res.jid)] == ["still-works"]


def test_unknown_flat_option_of_one_sink_returner(make_minion_env):
    env = make_minion_env("nosuchkey", {"fastret_file.nosuchkey": 1})
    res = env.salt_call("test.ping", returner="fastret_file")
    assert res.ret is True
    assert "fastret_file: unknown option 'nosuchkey'" in res.stderr
    assert "Traceback" not in res.stderr
    assert "unknown option 'nosuchkey'" in env.log_text()
    assert read_jsonl(env.returns_path) == []
    # The routed returner is not affected by another module's typo.
    ok = env.salt_call("test.ping", returner="fastret")
    assert len(returns_of(env.store_path, ok.jid)) == 1


def test_wrong_type_is_logged(make_minion_env):
    env = make_minion_env("wrongtype", {"fastret_sqlite": {"busy_timeout_ms": "soon"}})
    res = env.salt_call("test.ping", returner="fastret_sqlite")
    assert res.ret is True
    assert "busy_timeout_ms" in res.stderr
    assert not env.store_path.exists()


def test_config_check_names_the_key(make_minion_env):
    env = make_minion_env("check", TYPO_BLOCK)
    proc = env.fastret("config", "check")
    assert proc.returncode == 2, proc
    assert "'pth'" in proc.stderr and "sink 'a'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("config", "needle"), [
    ({"fastret_file.nosuchkey": 1}, "'nosuchkey'"),
    ({"fastret_file": {"nosuchkey": 1}}, "'nosuchkey'"),
    ({"fastret_file": {"path": 5}}, "'path'"),
    ({"fastret_sqlite.synchronous": "sometimes"}, "'synchronous'"),
    ({"fastret": {"sinks": {"a": {"type": "file", "path": "/tmp/x", "fsync": "maybe"}}}}, "'fsync'"),
    ({"fastret": {"sinks": {"a": {"type": "nosuch"}}}}, "'nosuch'"),
    ({"fastret": {"sinks": {"a": {"type": "sqlite"}}}}, "'path'"),
    ({"fastret": {"sinks": {"a": {"type": "file", "path": "/tmp/x", "backups": 100000}}}},
     "'backups'"),
    ({"fastret": {"sinks": {"a": {"type": "file", "path": "/tmp/x"}}, "deliver_timeout": -1}},
     "'deliver_timeout'"),
    ({"fastret": {"sinks": {"a": {"type": "file", "path": "/tmp/x"}}, "routes": [{"sinks": ["b"]}]}},
     "'b'"),
    ({"fastret": {"sinks": {"a": {"type": "file", "path": "/tmp/x"}},
                  "routes": [{"sinks": ["a"], "kinds": ["jobs"]}]}}, "'jobs'"),
    ({"fastret": {"sinkz": {}}}, "'sinkz'"),
    ({"fastret": {"sinks": {}}}, "'sinks'"),
    ({"fastret": {"sinks": {"a": {"type": "file", "path": "/tmp/x"}}, "routes": 5}}, "'routes'"),
    ({"fastret": {"sinks": {"a": {"type": "sqlite", "path": ""}}}}, "'path' must not be empty"),
    ({"pillar": {"fastret_file": {"pathh": "/tmp/x"}}}, "'pathh'"),
])
def test_config_check_rejects(make_minion_env, config, needle):
    env = make_minion_env("reject", config)
    proc = env.fastret("config", "check")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_check_accepts_a_good_config(make_minion_env, tmp_path):
    env = make_minion_env("good", {
        "fastret": {"sinks": {"audit": {"type": "file", "path": str(tmp_path / "a.jsonl")},
                              "db": {"type": "sqlite", "path": str(tmp_path / "a.db")}},
                    "routes": [{"sinks": ["audit"], "kinds": ["job_return"], "fun": ["state.*"]},
                               {"sinks": ["db"]}],
                    "deliver_timeout": 1.5},
        "fastret_file.path": str(tmp_path / "f.jsonl"),
    })
    proc = env.fastret("config", "check")
    assert proc.returncode == 0, proc.stderr
    assert "ok: sink fastret.audit (file)" in proc.stdout
    assert "ok: sink fastret.db (sqlite)" in proc.stdout
