"""Degraded mode: while the job store cannot be written, the job-cache writes go to the spool
without holding Salt up, and get_load/get_jid answer from the spool; when the store comes
back, the spool drains into it exactly once. Shown with the embedded store (a database file
that cannot be opened); tests/python/test_db_faults.py does the same with real servers."""

import time
import uuid

import salt.config
import salt.loader

import fastret
from conftest import MinionEnv, wait_for


def test_job_cache_answers_from_the_spool_while_the_store_is_down(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the database's directory should be")
    db_path = blocker / "fastret.db"
    env = MinionEnv(tmp_path / "env", config={"fastret_sqlite.path": str(db_path),
                                              "fastret_sqlite.retry_max_ms": 300})
    opts = salt.config.minion_config(str(env.conf_dir / "minion"))
    rets = salt.loader.returners(opts, {})
    jid = "20261127" + uuid.uuid4().hex[:12].translate(str.maketrans("abcdef", "123456"))
    load = {"fun": "test.ping", "arg": [], "tgt": "*", "tgt_type": "glob", "user": "root",
            "jid": jid}

    start = time.monotonic()
    rets["fastret_sqlite.save_load"](jid, load, ["m1", "m2"])
    rets["fastret_sqlite.returner"]({"jid": jid, "id": "m1", "fun": "test.ping",
                                     "return": True, "retcode": 0, "success": True})
    # Not the 10 s a save_load may wait for a healthy store: the first failed write ends it.
    assert time.monotonic() - start < 3.0

    assert rets["fastret_sqlite.get_load"](jid) == {**load, "Minions": ["m1", "m2"]}
    assert rets["fastret_sqlite.get_jid"](jid) == {
        "m1": {"return": True, "retcode": 0, "success": True}}

    blocker.unlink()
    blocker.mkdir()
    store = wait_for(lambda: db_path.exists() and fastret.native().SqliteStore(str(db_path)),
                     what="the store to be created")
    wait_for(lambda: store.get_returns(jid) and store.get_minions_of(jid),
             what="the spooled job in the store")
    assert [m for m, _ in store.get_returns(jid)] == ["m1"]
    assert store.count("jids") == 1 and store.count("salt_returns") == 1
    assert rets["fastret_sqlite.get_load"](jid) == {**load, "Minions": ["m1", "m2"]}
