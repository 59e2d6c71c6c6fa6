"""Drives Salt's returner loader in several processes (test_processes.py runs this script).

    returner_procs.py CONF_DIR multi N     parent returns, then N children per start method
                                           (fork, forkserver, spawn), then the parent again
    returner_procs.py CONF_DIR kill JID REPORT METHOD
                                           the parent returns JID-parent, then a child
                                           (started by METHOD) returns JID-0..3 and JID and
                                           SIGKILLs itself

Every child loads the returners the way Salt does, salt.loader.returners(opts, {}), with opts
from salt.config.minion_config. Prints a JSON summary on stdout.
"""

import json
import logging
import multiprocessing
import os
import signal
import sys

RETURNER = "fastret.returner"


def make_opts(conf_dir):
    import salt.config  # noqa: PLC0415

    return salt.config.minion_config(os.path.join(conf_dir, "minion"))


def load_returners(conf_dir):
    import salt.loader  # noqa: PLC0415

    return salt.loader.returners(make_opts(conf_dir), {})


def make_ret(jid, opts_id):
    return {"jid": jid, "id": opts_id, "fun": "test.arg", "fun_args": [jid],
            "return": {"jid": jid, "pid": os.getpid()}, "retcode": 0, "success": True}


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(f"{record.name}: {record.getMessage()}")


# Returners loaded by the parent: a forked child inherits them (as Salt's forked job
# processes inherit the minion's loaders); forkserver and spawn children load their own.
_inherited = {}


def child(conf_dir, jid, use_inherited):
    rets = _inherited.get("rets") if use_inherited else None
    if rets is None:
        rets = load_returners(conf_dir)
    rets[RETURNER](make_ret(jid, "procs-minion"))


def child_then_kill(conf_dir, jid, report_path):
    handler = Collect()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)
    rets = _inherited.get("rets") or load_returners(conf_dir)
    for i in range(4):
        rets[RETURNER](make_ret(f"{jid}-{i}", "procs-minion"))
    rets[RETURNER](make_ret(jid, "procs-minion"))
    with open(report_path, "w", encoding="utf-8") as fh:
        json.dump({"pid": os.getpid(), "warnings": handler.messages}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    # Right after returner() came back: no atexit, no multiprocessing finalizer, no flush.
    os.kill(os.getpid(), signal.SIGKILL)


def multi(conf_dir, n):
    import threading  # noqa: PLC0415

    rets = load_returners(conf_dir)
    _inherited["rets"] = rets
    jids = ["parent-before"]
    rets[RETURNER](make_ret("parent-before", "procs-minion"))
    threads_after_use = threading.active_count()
    exitcodes = {}
    for method in ("fork", "forkserver", "spawn"):
        ctx = multiprocessing.get_context(method)
        procs = []
        for i in range(n):
            jid = f"{method}-{i}"
            jids.append(jid)
            procs.append(ctx.Process(target=child, args=(conf_dir, jid, method == "fork")))
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        exitcodes[method] = [p.exitcode for p in procs]
    rets[RETURNER](make_ret("parent-after", "procs-minion"))
    jids.append("parent-after")
    print(json.dumps({"jids": jids, "exitcodes": exitcodes,
                      "threads_after_use": threads_after_use}))


def kill(conf_dir, jid, report_path, method):
    # The parent has used the returner (its runtime has a live I/O thread) before the child
    # is started: a forked child must build its own runtime and still deliver.
    _inherited["rets"] = load_returners(conf_dir)
    _inherited["rets"][RETURNER](make_ret(f"{jid}-parent", "procs-minion"))
    ctx = multiprocessing.get_context(method)
    p = ctx.Process(target=child_then_kill, args=(conf_dir, jid, report_path))
    p.start()
    p.join(120)
    print(json.dumps({"exitcode": p.exitcode}))


if __name__ == "__main__":
    conf, mode = sys.argv[1], sys.argv[2]
    if mode == "multi":
        multi(conf, int(sys.argv[3]))
    elif mode == "kill":
        kill(conf, sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        raise SystemExit(f"unknown mode {mode}")
