"""The tamper-evident trail of the file sink (chain_key) built through real Salt
(salt-call --local --return fastret_file), and `fastret verify` on the intact trail and on
tampered copies: each tampering is reported precisely, with exit code 1."""

import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import FASTRET, clean_env, read_jsonl

CALLS = 8


def verify(path, *extra, key=None):
    args = [FASTRET, "verify", str(path)]
    if key is not None:
        args += ["--key-file", str(key)]
    proc = subprocess.run(args + [str(a) for a in extra], capture_output=True, text=True,
                          timeout=120, env=clean_env(), check=False)
    return proc


@pytest.fixture(scope="module")
def trail(tmp_path_factory):
    """A trail written by several salt-call runs, rotated into path.N ... path."""
    from conftest import MinionEnv  # noqa: PLC0415

    base = tmp_path_factory.mktemp("audit")
    key = base / "chain.key"
    key.write_text("correct horse battery staple\n")
    key.chmod(0o600)
    out = base / "trail"
    path = out / "audit.jsonl"
    env = MinionEnv(base / "env", config={"fastret_file": {
        "path": str(path), "chain_key_file": str(key), "max_bytes": 1800, "backups": 50,
        "checkpoint_every": 1}})
    jids = []
    for i in range(CALLS):
        res = env.salt_call("test.echo", f"audit-{i}-" + "x" * 200, returner="fastret_file")
        jids.append(res.jid)
    return {"key": key, "dir": out, "path": path, "jids": jids, "env": env}


def files_of(path):
    """path.N ... path.1, path (oldest first)."""
    nums = sorted((int(m.group(1)) for f in os.listdir(path.parent)
                   if (m := re.fullmatch(re.escape(path.name) + r"\.(\d+)", f))), reverse=True)
    return [path.parent / f"{path.name}.{n}" for n in nums] + [path]


def lines(p):
    return p.read_bytes().split(b"\n")[:-1]


def write_lines(p, ls):
    p.write_bytes(b"".join(x + b"\n" for x in ls))


@pytest.fixture
def copy(trail, tmp_path):
    """A copy of the trail (files and checkpoints) to tamper with."""
    dst = tmp_path / "copy"
    shutil.copytree(trail["dir"], dst)
    return dst / trail["path"].name


def broken(proc, *patterns):
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    msg = proc.stdout.strip()
    assert msg.count("\n") == 0, msg  # one line
    assert msg.startswith("fastret verify: BROKEN: "), msg
    for pat in patterns:
        assert re.search(pat, msg), (pat, msg)
    return msg


def chain_of(line: bytes):
    return json.loads(line)["chain"]


def test_trail_through_salt_is_chained_rotated_and_intact(trail):
    files = files_of(trail["path"])
    assert len(files) >= 3, files  # it rotated
    recs = [json.loads(x) for f in files for x in lines(f)]
    assert [r["chain"]["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert [r["jid"] for r in recs if r.get("kind") == "job_return"] == trail["jids"]
    assert recs[0]["chain"]["prev"] == "0" * 64
    for a, b in zip(recs, recs[1:]):
        assert b["chain"]["prev"] == a["chain"]["mac"]
    # The chain member is the line's last one.
    assert all(x.endswith(b'"}}') for f in files for x in lines(f))
    cps = read_jsonl(str(trail["path"]) + ".checkpoints")
    assert {c["event"] for c in cps} == {"every", "rotate"}
    assert oct(os.stat(str(trail["path"]) + ".checkpoints").st_mode & 0o777) == "0o600"

    proc = verify(trail["path"], key=trail["key"])
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert f"OK: intact: {len(recs)} records, seq 1..{len(recs)} in {len(files)} file(s)" \
        in proc.stdout


def test_edited_record(trail, copy):
    f = files_of(copy)[1]
    ls = lines(f)
    seq = chain_of(ls[0])["seq"]
    ls[0] = ls[0].replace(b'"test.echo"', b'"test.evil"', 1)
    write_lines(f, ls)
    broken(verify(copy, key=trail["key"]),
           rf"record changed: {re.escape(str(f))} line 1 \(seq {seq}\): MAC mismatch")


def test_deleted_record(trail, copy):
    f = files_of(copy)[1]
    ls = lines(f)
    assert len(ls) >= 2
    gone, after = chain_of(ls[0])["seq"], chain_of(ls[1])["seq"]
    write_lines(f, ls[1:])
    broken(verify(copy, key=trail["key"]),
           rf"records removed: seq {gone} missing .*{re.escape(str(f))} line 1 \(seq {after}\)")


def test_first_record_deleted(trail, copy):
    f = files_of(copy)[0]
    ls = lines(f)
    write_lines(f, ls[1:])
    broken(verify(copy, "--allow-rotated-away", key=trail["key"]),
           rf"records removed: seq 1..1 missing before {re.escape(str(f))} line 1 \(seq 2\)")


def test_swapped_records(trail, copy):
    f = next(p for p in files_of(copy) if len(lines(p)) >= 2)
    ls = lines(f)
    a, b = chain_of(ls[0])["seq"], chain_of(ls[1])["seq"]
    ls[0], ls[1] = ls[1], ls[0]
    write_lines(f, ls)
    broken(verify(copy, key=trail["key"]),
           rf"records out of order: {re.escape(str(f))} line 1 \(seq {b}\) .* seq {a} comes "
           rf"later, at {re.escape(str(f))} line 2")


def test_inserted_record(trail, copy):
    f = files_of(copy)[1]
    ls = lines(f)
    fake = json.loads(ls[0])
    fake["data"] = {"forged": True}
    fake["chain"]["seq"] += 1
    fake["chain"]["prev"] = fake["chain"]["mac"]
    fake["chain"]["mac"] = "ab" * 32
    ls.insert(1, json.dumps(fake, separators=(",", ":")).encode())
    write_lines(f, ls)
    broken(verify(copy, key=trail["key"]),
           rf"record inserted: {re.escape(str(f))} line 2 \(claims seq "
           rf"{fake['chain']['seq']}\): its MAC is invalid and the chain continues without it")


def test_cut_tail(trail, copy):
    data = copy.read_bytes()
    n = len(lines(copy))
    copy.write_bytes(data[:-40])
    broken(verify(copy, key=trail["key"]),
           rf"truncated tail: {re.escape(str(copy))} line {n} is incomplete")


def test_whole_lines_cut_from_the_tail_are_seen_by_the_checkpoints(trail, copy):
    files = files_of(copy)
    ls = lines(files[-1])
    last_seq = chain_of(ls[-1])["seq"]
    write_lines(files[-1], ls[:-1])  # the newest record cut as a whole line
    end_file = files[-1] if len(ls) > 1 else files[-2]
    broken(verify(copy, key=trail["key"]),
           rf"truncated tail: checkpoints record seq {last_seq} .* but the trail ends at "
           rf"{re.escape(str(end_file))} line {len(lines(end_file))} \(seq {last_seq - 1}\)")


def test_missing_rotated_file(trail, copy):
    files = files_of(copy)
    assert len(files) >= 4
    files[-3].unlink()  # path.2
    broken(verify(copy, key=trail["key"]),
           rf"rotated file missing: {re.escape(str(files[-3]))} does not exist but "
           rf"{re.escape(str(files[-4]))} does")


def test_oldest_files_rotated_away(trail, copy):
    files = files_of(copy)
    files[0].unlink()  # the oldest rotated file: deleted as rotation would
    start = chain_of(lines(files[1])[0])["seq"]
    broken(verify(copy, key=trail["key"]),
           rf"the trail starts at seq {start} \({re.escape(str(files[1]))} line 1\).* "
           "--allow-rotated-away")
    # Allowed: the rotation checkpoint of seq start-1 still vouches for the first record's prev.
    proc = verify(copy, "--allow-rotated-away", key=trail["key"])
    assert proc.returncode == 0, proc.stdout
    assert f"records 1..{start - 1} rotated away (allowed)" in proc.stdout


def test_forged_checkpoint_is_refused(trail, copy):
    cp = copy.parent / (copy.name + ".checkpoints")
    ls = lines(cp)
    ls[0] = ls[0].replace(b'"seq":', b'"seq":9', 1)
    write_lines(cp, ls)
    broken(verify(copy, key=trail["key"]),
           rf"checkpoint invalid: {re.escape(str(cp))} line 1: its MAC does not verify")


def test_wrong_key_and_usage_errors(trail, tmp_path):
    other = tmp_path / "other.key"
    other.write_text("not the key\n")
    other.chmod(0o600)
    broken(verify(trail["path"], key=other), r"MAC (mismatch|does not verify)")

    proc = verify(trail["path"])
    assert proc.returncode == 2 and "--key-file is required" in proc.stderr

    loose = tmp_path / "loose.key"
    loose.write_text("correct horse battery staple\n")
    loose.chmod(0o644)
    proc = verify(trail["path"], key=loose)
    assert proc.returncode == 2
    assert "--key-file" in proc.stderr and "may be read by group or others" in proc.stderr

    proc = verify(tmp_path / "nothing.jsonl", key=trail["key"])
    assert proc.returncode == 2 and "no trail" in proc.stderr


def test_key_file_readable_by_others_is_refused(make_minion_env, tmp_path):
    key = tmp_path / "loose.key"
    key.write_text("secret\n")
    key.chmod(0o644)
    path = tmp_path / "refused.jsonl"
    env = make_minion_env("loose", {"fastret_file": {"path": str(path),
                                                     "chain_key_file": str(key)}})
    proc = env.fastret("config", "check")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "'chain_key_file'" in proc.stderr
    assert "may be read by group or others" in proc.stderr
    res = env.salt_call("test.ping", returner="fastret_file")
    assert "chain_key_file" in res.stderr
    assert not path.exists()  # nothing written without the chain it was configured with
