"""fastret.redaction_stats without Salt: how per-process counts files become totals, and what
a crash leaves behind."""

import json
import os
import subprocess
import sys

import pytest

from fastret import native, redaction_stats

SPEC = {"defaults": True, "rules": [{"name": "serials", "kind": "key", "patterns": ["serial"],
                                     "mode": "mask"}]}


@pytest.fixture()
def fresh_state(monkeypatch):
    # A state of its own, as a new process would have.
    monkeypatch.setattr(redaction_stats, "_state", {"pid": None})
    yield redaction_stats._state


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def redact_some(red, n):
    for _ in range(n):
        native().encode_json({"serial": "SN-1", "password": "pw"}, 100, False, red)


def test_a_process_publishes_then_merges_its_counts(tmp_path, fresh_state):
    red = native().redactor(dict(SPEC, rules=[dict(SPEC["rules"][0], name="serials_a")]))
    redaction_stats.register(str(tmp_path), red)
    d = tmp_path / "redaction-counts"
    redact_some(red, 3)
    redaction_stats.publish(force=True)
    (own,) = [p for p in d.iterdir() if p.name.endswith(".json")]
    assert own.name.startswith(f"{os.getpid()}-")
    assert json.loads(own.read_text())["counts"] == {"serials_a": 3, "secret_keys": 3}
    assert redaction_stats.totals(str(tmp_path)) == {"secret_keys": 3, "serials_a": 3}
    redact_some(red, 1)
    redaction_stats.publish()  # within the interval: not rewritten
    assert json.loads(own.read_text())["counts"]["serials_a"] == 3
    redaction_stats.finish()
    assert not own.exists()
    assert redaction_stats.totals(str(tmp_path)) == {"secret_keys": 4, "serials_a": 4}
    # Counting goes on after close, from what the total already holds.
    redact_some(red, 2)
    redaction_stats.finish()
    assert redaction_stats.totals(str(tmp_path)) == {"secret_keys": 6, "serials_a": 6}
    assert sorted(p.name for p in d.iterdir()) == [".lock", "total.json"]


def test_files_of_killed_processes_are_counted_then_absorbed(tmp_path, fresh_state):
    d = tmp_path / "redaction-counts"
    d.mkdir()
    gone = dead_pid()
    (d / f"{gone}-abcd.json").write_text(json.dumps({"pid": gone, "counts": {"bearer_token": 5}}))
    (d / "junk.json").write_text("{")  # not a process file: ignored
    (d / f"{gone}-ef01.json").write_text("{not json")  # torn: left out, absorbed
    assert redaction_stats.totals(str(tmp_path)) == {"bearer_token": 5}
    red = native().redactor(dict(SPEC, rules=[dict(SPEC["rules"][0], name="serials_b")]))
    redaction_stats.register(str(tmp_path), red)
    redact_some(red, 1)
    redaction_stats.finish()
    assert redaction_stats.totals(str(tmp_path)) == {"bearer_token": 5, "secret_keys": 1,
                                                     "serials_b": 1}
    assert sorted(p.name for p in d.iterdir()) == [".lock", "junk.json", "total.json"]


def test_a_crash_between_total_and_removal_neither_loses_nor_doubles(tmp_path, fresh_state):
    d = tmp_path / "redaction-counts"
    d.mkdir()
    gone = dead_pid()
    # The state a merge leaves when it dies after writing the total: the file it absorbed
    # is still there, and named in the total.
    (d / f"{gone}-abcd.json").write_text(json.dumps({"pid": gone, "counts": {"aws": 2}}))
    (d / "total.json").write_text(json.dumps({"counts": {"aws": 2, "pem": 1},
                                              "absorbed": [f"{gone}-abcd.json"]}))
    assert redaction_stats.totals(str(tmp_path)) == {"aws": 2, "pem": 1}
    red = native().redactor(dict(SPEC, rules=[dict(SPEC["rules"][0], name="serials_c")]))
    redaction_stats.register(str(tmp_path), red)
    redact_some(red, 1)
    redaction_stats.finish()
    assert redaction_stats.totals(str(tmp_path)) == {"aws": 2, "pem": 1, "secret_keys": 1,
                                                     "serials_c": 1}
    assert not (d / f"{gone}-abcd.json").exists()


def test_a_forked_child_publishes_only_its_own_counts(tmp_path, fresh_state):
    red = native().redactor(dict(SPEC, rules=[dict(SPEC["rules"][0], name="serials_d")]))
    redaction_stats.register(str(tmp_path), red)
    redact_some(red, 2)
    pid = os.fork()
    if pid == 0:  # the child: inherits the counters (2), redacts 5 more, closes
        try:
            redaction_stats.register(str(tmp_path), red)
            redact_some(red, 5)
            redaction_stats.finish()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert redaction_stats.totals(str(tmp_path))["serials_d"] == 5
    redaction_stats.finish()
    assert redaction_stats.totals(str(tmp_path))["serials_d"] == 7
