"""``fastret verify``: check the tamper-evident hash chain of a file sink's trail.

The chain (written by the file sink when ``chain_key`` is set; see docs/architecture.md):
every line ends in ``,"chain":{"seq":N,"prev":"<64 hex>","mac":"<64 hex>"}}`` with

    mac = HMAC-SHA256(key, B + "\\n" + str(N) + "\\n" + prev)

where B is the line's bytes before its last ``,"chain":`` and prev is the mac of record N-1
(64 zeros for N = 1). Checkpoint lines (``<path>.checkpoints``) end in
``,"ckpt_mac":"<64 hex>"}`` with ckpt_mac = HMAC-SHA256(key, "checkpoint\\n" + the bytes
before ``,"ckpt_mac":``).

verify() walks path.N (oldest) ... path.1, path, recomputes every MAC and reports the first
problem; it never stops at a problem it cannot name precisely.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import stat
from dataclasses import dataclass, field

ZERO_MAC = "0" * 64
CHAIN_MARKER = b',"chain":'
CKPT_MARKER = b',"ckpt_mac":'
_CHAIN_RE = re.compile(rb',"chain":\{"seq":([1-9][0-9]*),"prev":"([0-9a-f]{64})",'
                       rb'"mac":"([0-9a-f]{64})"\}\}')
_CKPT_RE = re.compile(rb',"ckpt_mac":"([0-9a-f]{64})"\}')


class UsageError(Exception):
    """Bad invocation: no key, unreadable or unsafe key file, no trail (exit code 2)."""


class Broken(Exception):
    """The trail is not intact; the message names file, line and seq (exit code 1)."""


@dataclass
class Record:
    file: str
    line: int
    seq: int
    prev: str
    mac: str
    mac_ok: bool
    first_in_file: bool


@dataclass
class Checkpoint:
    line: int
    seq: int
    mac: str
    event: str
    backups: int | None
    time: str


@dataclass
class Report:
    records: int = 0
    first_seq: int = 0
    last_seq: int = 0
    files: list = field(default_factory=list)
    checkpoints: int = 0
    notes: list = field(default_factory=list)

    def summary(self) -> str:
        text = (f"intact: {self.records} records, seq {self.first_seq}..{self.last_seq} in "
                f"{len(self.files)} file(s), {self.checkpoints} checkpoint(s) checked")
        return "; ".join([text] + self.notes)


def read_key(path: str) -> bytes:
    """The key as the sink reads chain_key_file: one trailing newline (and CR) cut; the file
    must be private to its owner."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"--key-file: cannot open '{path}': {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"--key-file: '{path}' is not a regular file")
        if st.st_mode & 0o077:
            raise UsageError(f"--key-file: '{path}' may be read by group or others (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}); a key file must be private to "
                             "its owner (chmod 600)")
        with os.fdopen(os.dup(fd), "rb") as fh:
            key = fh.read()
    finally:
        os.close(fd)
    if key.endswith(b"\n"):
        key = key[:-1]
    if key.endswith(b"\r"):
        key = key[:-1]
    if not key:
        raise UsageError(f"--key-file: '{path}' is empty")
    return key


def trail_files(path: str) -> list[str]:
    """path.N ... path.1, path (oldest first). A hole in the numbering is a missing file."""
    d, base = os.path.split(os.path.abspath(path))
    nums = []
    pat = re.compile(re.escape(base) + r"\.([1-9][0-9]*)$")
    for name in os.listdir(d or "."):
        m = pat.match(name)
        if m:
            nums.append(int(m.group(1)))
    nums.sort()
    for expected, n in enumerate(nums, start=1):
        if n != expected:
            raise Broken(f"rotated file missing: {path}.{expected} does not exist but "
                         f"{path}.{n} does")
    files = [f"{path}.{n}" for n in reversed(nums)]
    if os.path.exists(path):
        files.append(path)
    if not files:
        raise UsageError(f"no trail at '{path}' (neither it nor {path}.1 exists)")
    return files


def _mac(key: bytes, msg: bytes) -> str:
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def read_records(key: bytes, files: list[str]) -> list[Record]:
    records = []
    for fi, f in enumerate(files):
        with open(f, "rb") as fh:
            data = fh.read()
        lines = data.split(b"\n")
        complete = data.endswith(b"\n") or not data
        if complete:
            lines.pop()  # the empty piece after the final newline
        for i, raw in enumerate(lines, start=1):
            if not complete and i == len(lines):
                where = "the trail's last line" if fi == len(files) - 1 else "the file's last line"
                raise Broken(f"truncated tail: {f} line {i} is incomplete ({where} has no "
                             f"newline; {len(raw)} bytes)")
            at = raw.rfind(CHAIN_MARKER)
            m = _CHAIN_RE.fullmatch(raw, at) if at >= 0 else None
            if m is None:
                last = records[-1].seq if records else 0
                raise Broken(f"malformed record: {f} line {i} (after seq {last}) has no valid "
                             "chain member (cut, inserted or edited)")
            seq, prev, mac = int(m.group(1)), m.group(2).decode(), m.group(3).decode()
            body = raw[:at]
            ok = hmac.compare_digest(_mac(key, b"%s\n%d\n%s" % (body, seq, prev.encode())), mac)
            records.append(Record(f, i, seq, prev, mac, ok, i == 1))
    return records


def read_checkpoints(key: bytes, path: str) -> list[Checkpoint]:
    out = []
    with open(path, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        lines.pop()
    for i, raw in enumerate(lines, start=1):
        at = raw.rfind(CKPT_MARKER)
        m = _CKPT_RE.fullmatch(raw, at) if at >= 0 else None
        if m is None or not hmac.compare_digest(_mac(key, b"checkpoint\n" + raw[:at]),
                                                m.group(1).decode()):
            raise Broken(f"checkpoint invalid: {path} line {i}: its MAC does not verify "
                         "(edited, inserted or cut)")
        try:
            obj = json.loads(raw[:at] + b"}")
            out.append(Checkpoint(i, int(obj["seq"]), str(obj["mac"]), str(obj.get("event", "")),
                                  obj.get("backups"), str(obj.get("time", ""))))
        except (ValueError, KeyError, TypeError) as exc:
            raise Broken(f"checkpoint invalid: {path} line {i}: {exc}") from exc
    return out


def _where(r: Record) -> str:
    return f"{r.file} line {r.line} (seq {r.seq})"


def check_chain(records: list[Record], checkpoints: list[Checkpoint],
                allow_rotated_away: bool, report: Report) -> None:
    if not records:
        if checkpoints:
            cp = max(checkpoints, key=lambda c: c.seq)
            raise Broken(f"truncated tail: the trail holds no records but checkpoints record "
                         f"seq {cp.seq} ({cp.time})")
        return
    index = {}
    for r in records:
        index.setdefault(r.seq, r)
    rotations = sorted({c.seq for c in checkpoints if c.event == "rotate"})
    first = records[0]

    # Where the trail starts.
    if not first.mac_ok:
        raise Broken(f"record changed: {_where(first)}: MAC mismatch")
    earlier = next((r for r in records if r.seq < first.seq), None)
    if earlier is not None:
        raise Broken(f"records out of order: {_where(first)} starts the trail; seq "
                     f"{earlier.seq} comes later, at {earlier.file} line {earlier.line}")
    if first.seq != 1 or first.prev != ZERO_MAC:
        what = (f"the trail starts at seq {first.seq} ({first.file} line {first.line}): records "
                f"1..{first.seq - 1} are gone")
        if checkpoints and first.seq - 1 not in rotations:
            raise Broken(f"records removed: seq 1..{first.seq - 1} missing before "
                         f"{_where(first)}: no rotation ended at seq {first.seq - 1}, so the "
                         "trail cannot start there")
        if not allow_rotated_away:
            raise Broken(f"{what} (rotated away, or removed); pass --allow-rotated-away if "
                         "rotation deleted them")
        backups = next((c.backups for c in sorted(checkpoints, key=lambda c: -c.seq)
                        if c.event == "rotate" and isinstance(c.backups, int)), None)
        if backups is not None and len(rotations) > backups:
            must = rotations[len(rotations) - backups - 1] + 1
            if first.seq > must:
                raise Broken(f"rotated file missing: {what}, but the checkpoints show "
                             f"{len(rotations)} rotations with backups {backups}: records "
                             f"from seq {must} on must still exist")
        before = [c for c in checkpoints if c.seq == first.seq - 1]
        if before and before[0].mac != first.prev:
            raise Broken(f"chain broken: {_where(first)}: prev does not match the checkpoint "
                         f"of seq {first.seq - 1}")
        report.notes.append(f"records 1..{first.seq - 1} rotated away (allowed)")

    last = first
    for pos in range(1, len(records)):
        r = records[pos]
        expected = last.seq + 1
        if not r.mac_ok:
            nxt = records[pos + 1] if pos + 1 < len(records) else None
            if nxt is not None and nxt.mac_ok and nxt.seq == expected and nxt.prev == last.mac:
                raise Broken(f"record inserted: {r.file} line {r.line} (claims seq {r.seq}): "
                             f"its MAC is invalid and the chain continues without it (seq "
                             f"{last.seq} -> {nxt.seq})")
            raise Broken(f"record changed: {_where(r)}: MAC mismatch")
        if r.seq == expected and r.prev == last.mac:
            last = r
            continue
        if r.seq <= last.seq:
            earlier = index.get(r.seq)
            if earlier is not None and earlier is not r and earlier.mac == r.mac:
                raise Broken(f"record repeated: {_where(r)} is a copy of {earlier.file} line "
                             f"{earlier.line} (after seq {last.seq})")
            raise Broken(f"records out of order: {_where(r)} follows seq {last.seq} "
                         f"({last.file} line {last.line})")
        if r.seq > expected:
            later = index.get(expected)
            if later is not None:
                raise Broken(f"records out of order: {_where(r)} follows seq {last.seq}; seq "
                             f"{expected} comes later, at {later.file} line {later.line}")
            gap = f"seq {expected}..{r.seq - 1}" if r.seq - 1 > expected else f"seq {expected}"
            if r.first_in_file and r.file != last.file:
                if last.seq in rotations and r.seq - 1 in rotations:
                    raise Broken(f"rotated file missing: between {last.file} (ends at seq "
                                 f"{last.seq}) and {r.file} (starts at seq {r.seq}): {gap} "
                                 "missing")
                raise Broken(f"records removed: {gap} missing at the file boundary before "
                             f"{_where(r)} (after {last.file} line {last.line}; or a rotated "
                             "file missing)")
            raise Broken(f"records removed: {gap} missing before {_where(r)} (after seq "
                         f"{last.seq} at {last.file} line {last.line})")
        raise Broken(f"chain broken: {_where(r)}: prev is not the MAC of seq {last.seq} "
                     f"({last.file} line {last.line})")

    # Checkpoints: each one inside the trail must name its record; none may lie beyond it.
    for c in sorted(checkpoints, key=lambda c: c.seq):
        if c.seq > last.seq:
            raise Broken(f"truncated tail: checkpoints record seq {c.seq} ({c.time}) but the "
                         f"trail ends at {_where(last)}")
        r = index.get(c.seq)
        if r is not None and r.mac != c.mac:
            raise Broken(f"checkpoint mismatch: checkpoint line {c.line} records another MAC "
                         f"for seq {c.seq} than {_where(r)} (the chain was rewritten)")
    report.records = len(records)
    report.first_seq = first.seq
    report.last_seq = last.seq


def verify(path: str, key: bytes, checkpoints_path: str | None = None,
           allow_rotated_away: bool = False) -> Report:
    """Raises Broken (first problem) or UsageError; returns a Report for an intact trail."""
    report = Report()
    files = trail_files(path)
    report.files = files
    explicit = checkpoints_path is not None
    cp_path = checkpoints_path or path + ".checkpoints"
    checkpoints = []
    if os.path.exists(cp_path):
        checkpoints = read_checkpoints(key, cp_path)
    elif explicit:
        raise UsageError(f"--checkpoints: '{cp_path}' does not exist")
    else:
        report.notes.append(f"no checkpoints ({cp_path}): whole lines cut from the tail "
                            "cannot be detected")
    report.checkpoints = len(checkpoints)
    records = read_records(key, files)
    check_chain(records, checkpoints, allow_rotated_away, report)
    return report
