"""Importing fastret (and loading the compiled core) starts no thread and opens no file: Salt
imports the returner modules in the parent before forking job processes."""

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import clean_env

PROBE = textwrap.dedent("""
    import json, os, sys, threading

    def fds():
        out = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                out.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                pass
        return out

    def snapshot():
        return {"threads": threading.active_count(),
                "tasks": len(os.listdir("/proc/self/task")),
                "fds": fds()}

    before = snapshot()
    import fastret, fastret.salt_glue, fastret.pipeline, fastret.config, fastret.cli
    after_import = snapshot()
    steps = {"before": before, "import": after_import}
    if sys.argv[1] == "native":
        fastret.native()
        fastret.native().sink_types()
        fastret.native().encode_json({"a": 1})
        steps["native"] = snapshot()
    print(json.dumps(steps))
""")


@pytest.mark.parametrize("stage", ["import", "native"])
def test_import_starts_no_thread_and_opens_no_file(stage):
    proc = subprocess.run([sys.executable, "-c", PROBE, stage], capture_output=True, text=True,
                          timeout=60, env=clean_env(), check=False)
    assert proc.returncode == 0, proc.stderr
    steps = json.loads(proc.stdout)
    before = steps["before"]
    for name, snap in steps.items():
        assert snap["threads"] == 1, (name, snap)
        assert snap["tasks"] == 1, (name, snap)
        new_fds = sorted(set(snap["fds"]) - set(before["fds"]))
        assert not [f for f in new_fds if "fastret" in f or f.endswith((".db", ".jsonl", ".seg"))], (
            name, new_fds)
        # Nothing at all stays open beyond what the interpreter had.
        assert len(snap["fds"]) == len(before["fds"]), (name, new_fds)


def test_returner_modules_import_without_side_effects():
    # The returner modules themselves (as Salt's loader imports them) also start nothing.
    probe = textwrap.dedent("""
        import importlib.util, json, os, threading
        import fastret.loader
        d = fastret.loader.get_dirs()["returners"][0]
        for name in sorted(os.listdir(d)):
            if name.endswith(".py"):
                spec = importlib.util.spec_from_file_location("r_" + name[:-3], os.path.join(d, name))
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
        print(json.dumps({"threads": threading.active_count(),
                          "tasks": len(os.listdir("/proc/self/task")),
                          "modules": sorted(os.listdir(d))}))
    """)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, env=clean_env(), check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {"fastret.py", "fastret_file.py", "fastret_sqlite.py"} <= set(out["modules"])
    assert out["threads"] == 1 and out["tasks"] == 1
