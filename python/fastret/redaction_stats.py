"""Per-rule redaction counts across processes.

The counters live in the native redactors, per process. Salt's processes come and go (each
`salt-call`, each job process of a minion) while an operator asks `fastret stats` later, from
another process, so every process that redacted something publishes its counts under the spool
root it delivers to:

    <spool root>/redaction-counts/<pid>-<token>.json   counts of a running (or crashed) process
    <spool root>/redaction-counts/total.json           counts of processes that finished
    <spool root>/redaction-counts/.lock                flock: merges and reads take turns

A process rewrites its own file (temporary file + rename, so a reader sees the old or the new
version, never half of one) at most every WRITE_INTERVAL seconds while it redacts, and when it
closes it adds its counts to total.json and removes its file, under an exclusive lock. The same
merge adopts the files of processes that no longer exist (killed before closing), so the
directory holds one file per live process plus the total. total.json names the files it has
absorbed whose removal is not yet confirmed: a crash between writing the total and removing a
file can neither lose nor double-count it.

Only rule names and numbers are written, never a matched value.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import time

from fastret import native

log = logging.getLogger("fastret")

DIR_NAME = "redaction-counts"
TOTAL = "total.json"
LOCK = ".lock"
WRITE_INTERVAL = 5.0

# This process's view: which redactors deliver to which spool root, and what of their counts
# is already published in a total (or was inherited through fork from the parent process).
_state = {"pid": None}


def _own():
    pid = os.getpid()
    if _state["pid"] != pid:
        # A forked child starts afresh: the redactors' counters it inherited are the parent's
        # to publish, so they become the baseline.
        _state.update(pid=pid, token=secrets.token_hex(4), roots={}, baseline={},
                      last_write=0.0, written={})
    return _state


def _counts_of(redactor) -> dict:
    out = {}
    for name, n in redactor.counts():
        out[name] = out.get(name, 0) + n
    return out


def register(root: str, redactor):
    """Counts of `redactor` are to be published under spool root `root` from now on."""
    if not root or redactor is None:
        return
    st = _own()
    key = id(redactor)
    reds = st["roots"].setdefault(root, {})
    if key not in reds:
        reds[key] = redactor
        st["baseline"].setdefault(key, _counts_of(redactor))


def _unpublished(st, root) -> dict:
    """Counts of this process for `root` that no total holds yet (non-zero only)."""
    out = {}
    for key, red in st["roots"].get(root, {}).items():
        base = st["baseline"].get(key, {})
        for name, n in _counts_of(red).items():
            d = n - base.get(name, 0)
            if d:
                out[name] = out.get(name, 0) + d
    return out


def _dir(root: str) -> str:
    return os.path.join(root, DIR_NAME)


def _write_json(path: str, obj, sync: bool):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, sort_keys=True)
        if sync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("fastret: redaction counts in %s cannot be read (%s); left out", path, exc)
        return None


def _valid_counts(obj) -> dict:
    counts = obj.get("counts") if isinstance(obj, dict) else None
    if not isinstance(counts, dict):
        return {}
    return {k: v for k, v in counts.items() if isinstance(k, str) and isinstance(v, int) and v > 0}


def _own_name(st) -> str:
    return f"{st['pid']}-{st['token']}.json"


def publish(force: bool = False):
    """Rewrite this process's counts files if WRITE_INTERVAL passed (or `force`) and they changed.
    Never raises: statistics must not break delivery."""
    st = _state
    if st["pid"] != os.getpid() or not st["roots"]:
        return
    now = time.monotonic()
    if not force and now - st["last_write"] < WRITE_INTERVAL:
        return
    st["last_write"] = now
    for root in st["roots"]:
        counts = _unpublished(st, root)
        if counts == st["written"].get(root, {}):
            continue
        try:
            d = _dir(root)
            os.makedirs(d, exist_ok=True)
            _write_json(os.path.join(d, _own_name(st)), {"pid": st["pid"], "counts": counts},
                        sync=False)
            st["written"][root] = counts
        except OSError as exc:
            log.warning("fastret: cannot write redaction counts under %s: %s", root, exc)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


def _process_files(d: str):
    """(file name, pid) of the per-process files in `d`."""
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        stem, ext = os.path.splitext(name)
        pid, _, token = stem.partition("-")
        if ext == ".json" and pid.isdigit() and token:
            out.append((name, int(pid)))
    return out


def _merge(d: str, own_name: str | None, own_counts: dict):
    """Under the exclusive lock: add `own_counts` and the files of dead processes to the total,
    then remove those files."""
    total_path = os.path.join(d, TOTAL)
    total = _read_json(total_path)
    counts = _valid_counts(total)
    absorbed = set(total.get("absorbed", [])) if isinstance(total, dict) else set()
    # Files absorbed by an earlier merge that crashed before removing them: remove now.
    for name in list(absorbed):
        try:
            os.unlink(os.path.join(d, name))
        except FileNotFoundError:
            pass
        absorbed.discard(name)
    taken = []
    for name, pid in _process_files(d):
        if name == own_name or _pid_alive(pid):
            continue
        for rule, n in _valid_counts(_read_json(os.path.join(d, name))).items():
            counts[rule] = counts.get(rule, 0) + n
        taken.append(name)
    if own_name:
        taken.append(own_name)
    for rule, n in own_counts.items():
        counts[rule] = counts.get(rule, 0) + n
    if not taken and not own_counts:
        return
    _write_json(total_path, {"counts": counts, "absorbed": sorted(taken)}, sync=True)
    for name in taken:
        try:
            os.unlink(os.path.join(d, name))
        except FileNotFoundError:
            pass
    _write_json(total_path, {"counts": counts, "absorbed": []}, sync=False)


class _Lock:
    def __init__(self, d: str, exclusive: bool):
        self.path = os.path.join(d, LOCK)
        self.mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        self.fd = None

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            self.fd = os.open(self.path, os.O_RDONLY)  # a reader without write permission
        fcntl.flock(self.fd, self.mode)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def finish():
    """At close: this process's counts go into each root's total and its files are removed.
    Counting goes on afterwards from zero (a process may deliver again after close)."""
    st = _state
    if st["pid"] != os.getpid():
        return
    for root, reds in st["roots"].items():
        counts = _unpublished(st, root)
        d = _dir(root)
        own = _own_name(st) if st["written"].get(root) else None
        if not counts and not own:
            continue
        try:
            os.makedirs(d, exist_ok=True)
            with _Lock(d, exclusive=True):
                _merge(d, own, counts)
        except OSError as exc:
            log.warning("fastret: cannot merge redaction counts under %s: %s", root, exc)
            continue
        for key, red in reds.items():
            st["baseline"][key] = _counts_of(red)
        st["written"][root] = {}


def totals(root: str) -> dict:
    """Redactions per rule under spool root `root`: the total of finished processes plus the
    files of running (or crashed, not yet merged) ones."""
    d = _dir(root)
    if not os.path.isdir(d):
        return {}
    try:
        with _Lock(d, exclusive=False):
            total = _read_json(os.path.join(d, TOTAL))
            counts = _valid_counts(total)
            absorbed = set(total.get("absorbed", [])) if isinstance(total, dict) else set()
            for name, _pid in _process_files(d):
                if name in absorbed:
                    continue
                for rule, n in _valid_counts(_read_json(os.path.join(d, name))).items():
                    counts[rule] = counts.get(rule, 0) + n
    except OSError as exc:
        log.warning("fastret: cannot read redaction counts under %s: %s", root, exc)
        return {}
    return dict(sorted(counts.items()))


def process_counts() -> dict:
    """Redactions per rule in this process (every redactor, since the process started)."""
    return {k: v for k, v in sorted(native().redaction_counts().items()) if v}
