"""Redaction through real Salt: a state whose output carries a password, a PEM private key, a
bearer token and an Authorization header is stored masked by `--return fastret` (SQLite store
and audit file) and `--return fastret_file`; a keyed-hash rule gives two minions the same
pseudonym for the same value; redaction can be configured and turned off."""

import json
import os
import textwrap
import uuid

from conftest import read_jsonl, returns_of

PEM = ("-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\\n"
       "-----END PRIVATE KEY-----")
SECRET_WORDS = ["hunter2-pw", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "tok3n-abc.def",
                "c2VjcmV0OnBhc3N3b3Jk"]

# A custom execution module whose return holds secrets the way real states and modules do.
LEAKY_MODULE = textwrap.dedent(f'''
    def run():
        return {{
            "db": {{"host": "db1", "password": "hunter2-pw"}},
            "key_file": "{PEM}",
            "log": "curl -H 'Authorization: Bearer tok3n-abc.def' https://api",
            "headers": {{"Authorization": "Basic c2VjcmV0OnBhc3N3b3Jk", "Accept": "*/*"}},
            "serial": "SN-4242",
            "plain": "nothing to hide",
        }}
''')


def leaky_env(make_minion_env, name, config=None, minion_id="fastret-test-minion"):
    env = make_minion_env(name, config=config, minion_id=minion_id)
    env.add_module("leaky", LEAKY_MODULE)
    env.salt_call("saltutil.sync_modules", metadata=False)
    return env


def assert_masked(text):
    for word in SECRET_WORDS:
        assert word not in text, word
    assert "********" in text
    assert "nothing to hide" in text and "db1" in text


def test_defaults_mask_secrets_in_every_sink(make_minion_env):
    env = leaky_env(make_minion_env, "defaults")
    res = env.salt_call("leaky.run", returner="fastret")
    assert res.ret["plain"] == "nothing to hide"  # Salt's own output is untouched
    rows = returns_of(env.store_path, res.jid)
    assert len(rows) == 1
    stored = rows[0][4]["return"]
    assert stored["db"] == {"host": "db1", "password": "********"}
    assert stored["key_file"] == "********"
    assert stored["log"] == "curl -H 'Authorization: Bearer ********' https://api"
    assert stored["headers"]["Authorization"] == "********"
    assert_masked(env.store_path.read_bytes().decode("utf-8", "replace"))
    assert_masked(env.audit_path.read_text())
    # And nothing of them waits in the spool either.
    spooled = b"".join(p.read_bytes() for p in env.spool_root.rglob("*.seg"))
    for word in SECRET_WORDS:
        assert word.encode() not in spooled

    res = env.salt_call("leaky.run", returner="fastret_file")
    lines = [r for r in read_jsonl(env.returns_path) if r["jid"] == res.jid and r["kind"] == "job_return"]
    assert lines and lines[0]["data"]["return"]["db"]["password"] == "********"
    assert_masked(env.returns_path.read_text())


def test_keyed_hash_gives_the_same_pseudonym_on_two_minions(make_minion_env, tmp_path):
    key = tmp_path / "hmac.key"
    key.write_text("a shared pseudonym key\n")
    os.chmod(key, 0o600)
    redact = {"hmac_key_file": str(key),
              "rules": [{"name": "serials", "keys": ["serial"], "mode": "hash"},
                        {"name": "hosts", "pattern": "db[0-9]+", "mode": "hash"}]}
    seen = []
    for n in (1, 2):
        env = leaky_env(make_minion_env, f"m{n}", minion_id=f"minion-{n}",
                        config={"fastret_file.redact": redact})
        res = env.salt_call("leaky.run", returner="fastret_file")
        (line,) = [r for r in read_jsonl(env.returns_path) if r["jid"] == res.jid and r["kind"] == "job_return"]
        seen.append(line["data"]["return"])
    a, b = seen
    assert a["serial"] == b["serial"] and a["serial"].startswith("hmac:")
    assert a["db"]["host"] == b["db"]["host"] and a["db"]["host"].startswith("hmac:")
    assert "SN-4242" not in json.dumps(a) and a["db"]["password"] == "********"  # defaults too


def test_redaction_off_and_bad_rules(make_minion_env):
    env = leaky_env(make_minion_env, "off", config={"fastret_file.redact": False})
    res = env.salt_call("leaky.run", returner="fastret_file")
    (line,) = [r for r in read_jsonl(env.returns_path) if r["jid"] == res.jid and r["kind"] == "job_return"]
    assert line["data"]["return"]["db"]["password"] == "hunter2-pw"

    env = leaky_env(make_minion_env, "bad", config={
        "fastret_file.redact": {"rules": [{"name": "oops", "pattern": "(unclosed"}]}})
    res = env.salt_call("leaky.run", returner="fastret_file", check=False)
    assert "redaction rule 'oops'" in env.log_text() and "bad pattern" in env.log_text()
    assert not env.returns_path.exists() or res.jid not in env.returns_path.read_text()


def counts_dir(env):
    return env.spool_root / "redaction-counts"


def stats_redactions(env):
    proc = env.fastret("stats", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["redactions"]


def test_stats_show_redactions_per_rule_across_processes(make_minion_env):
    env = leaky_env(make_minion_env, "counts")
    assert stats_redactions(env) == {}
    env.salt_call("leaky.run", returner="fastret")
    # One record through the routed returner: the password and Authorization keys, the PEM
    # block and the bearer token, each once (encoded once for both sinks).
    once = {"secret_keys": 2, "pem_private_key": 1, "bearer_token": 1}
    assert stats_redactions(env) == once
    env.salt_call("leaky.run", returner="fastret")
    env.salt_call("leaky.run", returner="fastret_file")
    assert stats_redactions(env) == {k: 3 * v for k, v in once.items()}
    text = env.fastret("stats").stdout
    assert "redactions: bearer_token=3  pem_private_key=3  secret_keys=6" in text
    # Each salt-call merged its counts into the total when it closed: no file per process is
    # left, and only names and numbers were written.
    assert sorted(p.name for p in counts_dir(env).iterdir()) == [".lock", "total.json"]
    written = (counts_dir(env) / "total.json").read_text()
    for word in SECRET_WORDS + ["hunter2", "Bearer"]:
        assert word not in written
    # The counts directory is no sink's spool.
    status = json.loads(env.fastret("spool", "status", "--json").stdout)
    assert "redaction-counts" not in {r["sink"] for r in status}
