"""Per-process delivery: registers sinks with the native runtime and hands records over.

The native runtime is per process and rebuilt after a fork; this module keeps its own
per-process state the same way (keyed by pid), so a forked or forkserver-started Salt job
process registers its sinks afresh on first use.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util
import os
import threading
import time

from fastret import ConfigError, native, redaction_stats
from fastret.config import PipelineConfig

log = logging.getLogger("fastret")

CLOSE_TIMEOUT = 5.0

_lock = threading.Lock()
_state = {"pid": None, "sink_ids": {}, "exit_hooked": False}


def _reset_if_forked():
    pid = os.getpid()
    if _state["pid"] != pid:
        _state["pid"] = pid
        _state["sink_ids"] = {}
        _state["exit_hooked"] = False


def close(timeout: float = CLOSE_TIMEOUT):
    """Deliver what is pending (up to `timeout` seconds), then stop the runtime. What is not
    delivered stays in the spool for the next process."""
    if _state["pid"] != os.getpid() or not _state["sink_ids"]:
        return
    nat = native()
    if not nat.is_closed():
        nat.close(timeout)
    drain_messages()
    counts = redaction_stats.process_counts()
    if counts:
        log.info("fastret: redacted in this process: %s",
                 ", ".join(f"{k}={v}" for k, v in counts.items()))
    redaction_stats.finish()  # into <spool root>/redaction-counts, for `fastret stats`
    _state["sink_ids"] = {}


def stats() -> dict:
    """This process's delivery statistics: per sink (accepted, delivered, spooled, ...) and
    redactions per rule."""
    return {"sinks": native().stats(), "redactions": redaction_stats.process_counts()}


def _hook_exit():
    if _state["exit_hooked"]:
        return
    _state["exit_hooked"] = True
    atexit.register(close)
    # multiprocessing children (Salt's job processes) leave through os._exit and skip atexit,
    # but they run multiprocessing's finalizers.
    multiprocessing.util.Finalize(None, close, exitpriority=10)


def drain_messages(logger: logging.Logger | None = None):
    """Move the runtime's messages (delivery failures, drops, spool full) into the log."""
    logger = logger or log
    for level, text in native().take_messages():
        logger.log(level, "%s", text)


def sink_id(sink) -> int:
    """The runtime id of a sink (SinkConfig), registering it on first use in this process."""
    with _lock:
        _reset_if_forked()
        sid = _state["sink_ids"].get(sink.name)
        if sid is not None:
            return sid
        nat = native()
        existing = nat.find_sink(sink.name)
        if existing is not None:
            sid = existing
        else:
            try:
                sid = nat.add_sink(sink.name, sink.type, dict(sink.options), sink.spool_root)
            except nat.ConfigError as exc:
                raise ConfigError(str(exc)) from None
        _state["sink_ids"][sink.name] = sid
        _hook_exit()
        return sid


def _registered(sinks, logger=None) -> list:
    """Runtime ids of `sinks`; a sink that cannot be registered is logged and left out, so
    the others still get the records."""
    ids = []
    for s in sinks:
        try:
            ids.append(sink_id(s))
        except Exception as exc:  # noqa: BLE001 - one broken sink must not stop the others
            (logger or log).error("fastret sink '%s' cannot be started: %s", s.name, exc)
    return ids


class Pipeline:
    """Routes records to the sinks of one PipelineConfig."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self._redact = None

    def _redactor(self):
        """The compiled redaction rules (compiled once per process and spec), or None."""
        if self.cfg.redact is None:
            return None
        if self._redact is None or self._redact[0] != os.getpid():
            self._redact = (os.getpid(), native().redactor(self.cfg.redact))
            redaction_stats.register(self.cfg.spool_root, self._redact[1])
        return self._redact[1]

    def _targets(self, kind, fun, tag, success):
        if not self.cfg.routes:
            return list(self.cfg.sinks)
        names = set()
        for route in self.cfg.routes:
            if route.matches(kind, fun, tag, success):
                names.update(route.sinks)
        return [s for s in self.cfg.sinks if s.name in names]

    def submit_events(self, events, master_id: str, logger=None, record_of=None):
        """Hand Salt events to their sinks without waiting. With no routes the events go
        straight to the native layer as they are (the fast path for event_return); with
        routes each is turned into a record tuple by `record_of(event)` and routed."""
        if self.cfg.routes:
            self.submit([record_of(e) for e in events if isinstance(e, dict)], logger=logger)
            return
        ids = _registered(self.cfg.sinks, logger)
        if ids:
            native().submit_events(ids, events, master_id, self.cfg.max_depth,
                                   self.cfg.bytes_encoding == "base64", self._redactor())
            redaction_stats.publish()
        drain_messages(logger)

    def submit(self, records, wait: float | None = None, logger=None) -> bool:
        """Hand records (tuples, see fastret.records) to their sinks. With `wait`, block up to
        that many seconds for delivery; returns True if everything was delivered (or nothing
        had to wait)."""
        nat = native()
        by_target = {}
        for rec in records:
            targets = self._targets(rec[0], rec[3], rec[4], rec[5])
            key = tuple(s.name for s in targets)
            if key:
                by_target.setdefault(key, ([], targets))[0].append(rec)
        waits = []
        for recs, targets in by_target.values():
            ids = _registered(targets, logger)
            if not ids:
                continue
            failures_before = [nat.failures(sid) for sid in ids] if wait else [0] * len(ids)
            tickets = nat.submit(ids, recs, self.cfg.max_depth,
                                 self.cfg.bytes_encoding == "base64", self._redactor())
            waits.extend(zip(ids, tickets, failures_before))
        if waits:
            redaction_stats.publish()
        delivered = len(waits) > 0 or not by_target
        if wait:
            # One deadline for the call, not one per sink. A sink whose write fails while we
            # wait is not waited for any longer: the records are durable in its spool already
            # (and job-cache reads consult the spool), and a database that is down must not
            # hold up Salt for the whole deadline on every call.
            deadline = time.monotonic() + wait
            for sid, ticket, failures_before in waits:
                left = max(0.0, deadline - time.monotonic())
                if nat.wait_delivered(sid, ticket, left, failures_before) != "delivered":
                    delivered = False
        drain_messages(logger)
        return delivered
