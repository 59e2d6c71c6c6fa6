"""Drives one network sink in its own process (the runtime is per process) for the network
tests: ``python net_sink.py SPEC.json`` prints a JSON report on stdout.

SPEC: {"type": "syslog", "name": "...", "options": {...}, "spool_root": "...",
       "phases": [{"records": [[kind, jid, minion, fun, tag, success, retcode, payload], ...],
                   "wait": seconds},
                  {"wait_for_file": path, "timeout": seconds}, ...],
       "close_timeout": seconds}
Report: {"delivered": [bool per record phase], "stats": [...], "messages": [[level, text]],
         "error": "..." (a configuration error)}
"""

import json
import logging
import os
import sys
import time

from fastret import ConfigError, native
from fastret.config import PipelineConfig, SinkConfig
from fastret.pipeline import Pipeline, close


def main():
    captured = []

    class Keep(logging.Handler):
        def emit(self, record):
            captured.append([record.levelno, record.getMessage()])

    logging.getLogger().addHandler(Keep())
    logging.getLogger().setLevel(logging.WARNING)
    spec = json.loads(open(sys.argv[1], encoding="utf-8").read())
    nat = native()
    report = {"delivered": [], "messages": []}
    try:
        nat.validate_sink(spec["name"], spec["type"], spec["options"])
    except nat.ConfigError as exc:
        report["error"] = str(exc)
        print(json.dumps(report))
        return
    sink = SinkConfig(name=spec["name"], type=spec["type"], options=spec["options"],
                      spool_root=spec.get("spool_root", ""))
    pipe = Pipeline(PipelineConfig(sinks=[sink], spool_root=spec.get("spool_root", ""),
                                   redact=None))
    try:
        for phase in spec["phases"]:
            if "records" in phase:
                recs = [tuple(r) for r in phase["records"]]
                report["delivered"].append(pipe.submit(recs, wait=phase.get("wait", 10.0)))
                if phase.get("flush"):
                    report["delivered"][-1] = nat.flush(float(phase["flush"]))
            elif "wait_for_file" in phase:
                deadline = time.monotonic() + phase.get("timeout", 60)
                while not os.path.exists(phase["wait_for_file"]) and time.monotonic() < deadline:
                    time.sleep(0.05)
            elif "flush" in phase:
                report["delivered"].append(nat.flush(float(phase["flush"])))
            report["messages"] += [list(m) for m in nat.take_messages()]
    except ConfigError as exc:
        report["error"] = str(exc)
    report["stats"] = nat.stats()
    close(spec.get("close_timeout", 2.0))
    report["messages"] += [list(m) for m in nat.take_messages()]
    report["messages"] = captured + report["messages"]
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
