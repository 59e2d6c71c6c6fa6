"""Bad input through real Salt: injection strings, invalid UTF-8, a 5 MB return, a 200-level
nested return. Everything is stored faithfully (equal to what salt-call returned) or with an
explicit truncation marker; salt-call exits 0 and prints its normal output."""

import json
import re

import pytest

from conftest import FRBAD_MODULE, MinionEnv, db_query, read_jsonl, returns_of

MARKER = "__fastret_truncated__"
RAW_BYTES = b"ok \xff\xfe bad \xc3\x28 mid \xed\xa0\x80 end \xe2\x82\xac"
SCHEMA_TABLES = {"jids", "salt_returns", "salt_events"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = MinionEnv(tmp_path_factory.mktemp("bad-input") / "env")
    e.add_module("frbad", FRBAD_MODULE)
    assert "modules.frbad" in e.salt_call("saltutil.sync_modules", metadata=False).data
    return e


def job_returns(path, jid):
    return [r for r in read_jsonl(path) if r.get("jid") == jid and r["kind"] == "job_return"]


def stored(env, jid):
    """The job's return as stored in SQLite and in the audit file (both must agree)."""
    rows = returns_of(env.store_path, jid)
    assert len(rows) == 1, rows
    lines = job_returns(env.audit_path, jid)
    assert len(lines) == 1
    assert lines[0]["data"] == rows[0][4]
    return rows[0][4]


def tables(env):
    rows = db_query(env.store_path, "SELECT name FROM sqlite_master WHERE type = 'table'")
    return {r[0] for r in rows}


def collapse(text):
    return re.sub("\ufffd+", "\ufffd", text)


def test_injection_strings_stored_verbatim(env):
    res = env.salt_call("frbad.injection", returner="fastret")
    ret = res.ret
    assert ret["sql"] == "'); DROP TABLE salt_returns;--"
    assert ret["nul"] == "before\x00after"
    full = stored(env, res.jid)
    assert full["return"] == ret
    assert SCHEMA_TABLES <= tables(env)
    # The audit file is still one JSON object per line: the newline/JSON strings did not
    # break out of their record.
    for line in env.audit_path.read_text(encoding="utf-8").splitlines():
        assert isinstance(json.loads(line), dict)


def test_injection_in_arguments_and_normal_output(env):
    evil = "'); DROP TABLE jids;-- \" \\ {\"a\":"
    res = env.salt_call("test.echo", evil, returner="fastret", metadata=False, out="nested")
    # salt-call's normal (nested) output, exit 0.
    assert "DROP TABLE jids" in res.stdout
    assert res.returncode == 0
    rows = db_query(env.store_path, "SELECT jid, full_ret FROM salt_returns WHERE fun = 'test.echo'")
    matching = [json.loads(r[1]) for r in rows if json.loads(r[1])["return"] == evil]
    assert len(matching) == 1
    assert matching[0]["fun_args"] == [evil]
    load = db_query(env.store_path, "SELECT load FROM jids WHERE jid = ?", (matching[0]["jid"],))
    assert json.loads(load[0][0])["arg"] == [evil]
    assert SCHEMA_TABLES <= tables(env)


def test_invalid_utf8_bytes_from_a_module(env):
    res = env.salt_call("frbad.raw_bytes", returner="fastret")
    full = stored(env, res.jid)
    value = full["return"]
    assert collapse(value) == collapse(RAW_BYTES.decode("utf-8", errors="replace"))
    assert value.startswith("ok ") and value.endswith(" end \u20ac")


def test_invalid_utf8_from_cmd_run(env):
    res = env.salt_call("cmd.run", r"printf 'a\377\376b\303\050c'", returner="fastret")
    # Salt itself decodes the command output (replacing what is not UTF-8); fastret stores
    # exactly the string salt-call printed.
    full = stored(env, res.jid)
    assert full["return"] == res.ret
    assert full["return"].startswith("a") and full["return"].endswith("(c")


def test_five_megabyte_return(env):
    res = env.salt_call("frbad.big", returner="fastret")
    assert len(res.ret) == 5 * 1024 * 1024
    full = stored(env, res.jid)
    assert full["return"] == res.ret


def test_five_megabyte_return_over_record_limit_is_marked(make_minion_env, tmp_path):
    path = tmp_path / "limited.jsonl"
    env = make_minion_env("limited", {"fastret_file.path": str(path),
                                      "fastret_file.max_record_bytes": 1024 * 1024})
    env.add_module("frbad", FRBAD_MODULE)
    env.salt_call("saltutil.sync_modules", metadata=False)
    res = env.salt_call("frbad.big", returner="fastret_file")
    assert len(res.ret) == 5 * 1024 * 1024  # salt-call's own output is untouched
    (line,) = job_returns(path, res.jid)
    data = line["data"]
    assert data[MARKER] == "size"
    assert data["original_bytes"] > 5 * 1024 * 1024
    assert data["head"].startswith('{"jid":')
    assert len(json.dumps(line)) < 64 * 1024


def depth_chain(value, key="d"):
    """Number of `key` levels before the first non-`key` node, and that node."""
    depth = 0
    while isinstance(value, dict) and list(value) == [key]:
        value = value[key]
        depth += 1
    return depth, value


def test_200_level_nested_return_is_cut_with_marker(env):
    res = env.salt_call("frbad.deep", returner="fastret")
    depth, leaf = depth_chain(res.ret)
    assert depth == 200 and leaf == {"leaf": True}
    full = stored(env, res.jid)
    # The record's payload is Salt's ret dict, the return one level down: default max_depth
    # 100 keeps 99 levels of the return, then the marker.
    depth, cut = depth_chain(full["return"])
    assert depth == 99
    assert cut[MARKER] == "depth"
    assert full["jid"] == res.jid and full["fun"] == "frbad.deep"


def test_200_level_nested_return_kept_with_higher_max_depth(make_minion_env, tmp_path):
    path = tmp_path / "deep.jsonl"
    env = make_minion_env("deep", {"fastret_file": {"path": str(path), "max_depth": 300}})
    env.add_module("frbad", FRBAD_MODULE)
    env.salt_call("saltutil.sync_modules", metadata=False)
    res = env.salt_call("frbad.deep", returner="fastret_file")
    (line,) = job_returns(path, res.jid)
    assert line["data"]["return"] == res.ret


def test_store_still_usable_after_bad_input(env):
    res = env.salt_call("test.ping", returner="fastret")
    assert stored(env, res.jid)["return"] is True
    jids = db_query(env.store_path, "SELECT count(*) FROM jids")[0][0]
    returns = db_query(env.store_path, "SELECT count(*) FROM salt_returns")[0][0]
    assert jids >= 6 and returns >= 6
    assert db_query(env.store_path, "PRAGMA integrity_check")[0][0] == "ok"


def test_hostile_minion_id(make_minion_env):
    evil_id = "o'brien\"); DROP TABLE salt_returns;--"
    env = make_minion_env("evil-id", minion_id=evil_id)
    res = env.salt_call("test.ping", returner="fastret")
    rows = returns_of(env.store_path, res.jid)
    assert [r[0] for r in rows] == [evil_id]
    (line,) = job_returns(env.audit_path, res.jid)
    assert line["minion"] == evil_id
    assert SCHEMA_TABLES <= tables(env)
