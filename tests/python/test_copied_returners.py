"""Copying returners/*.py into a `_returners` directory works as well as the entry point:
the copies load on their own (nothing else on the loader's path) and deliver."""

import shutil
import uuid

import salt.config
import salt.loader.lazy

from conftest import REPO, MinionEnv, read_jsonl, returns_of


def test_copied_returner_modules_load_and_deliver(tmp_path):
    env = MinionEnv(tmp_path / "env")
    copies = tmp_path / "_returners"
    copies.mkdir()
    for module in (REPO / "returners").glob("*.py"):
        shutil.copy(module, copies / module.name)
    opts = salt.config.minion_config(str(env.conf_dir / "minion"))
    loader = salt.loader.lazy.LazyLoader([str(copies)], opts, tag="returner",
                                         pack={"__salt__": {}, "__context__": {}})
    for name in ("fastret", "fastret_sqlite", "fastret_file"):
        assert callable(loader[f"{name}.returner"])
        assert loader.file_mapping[name][0] == str(copies / f"{name}.py")
    jid = "20261127" + uuid.uuid4().hex[:12].translate(str.maketrans("abcdef", "123456"))
    ret = {"jid": jid, "id": env.minion_id, "fun": "test.echo", "fun_args": ["copied"],
           "return": "copied", "retcode": 0, "success": True}
    loader["fastret_sqlite.returner"](dict(ret))
    loader["fastret_file.returner"](dict(ret))
    rows = returns_of(env.store_path, jid)
    assert [(r[0], r[4]["return"]) for r in rows] == [(env.minion_id, "copied")]
    lines = [r for r in read_jsonl(env.returns_path) if r["jid"] == jid and r["kind"] == "job_return"]
    assert [r["data"]["return"] for r in lines] == ["copied"]
