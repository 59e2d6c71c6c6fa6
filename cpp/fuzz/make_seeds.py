#!/usr/bin/env python3
"""Writes the seed corpora under cpp/fuzz/corpus/<target>/: small inputs that look like what
fastret really handles (Salt job returns, events, spool segments holding serialized records,
secrets inside command lines), so that fuzzing starts from realistic shapes.

Most targets read their input through libFuzzer's FuzzedDataProvider (strings from the front,
numbers from the back), so the seeds are written with `Provider`, which encodes values in the
order the harness consumes them. The encoders mirror the harnesses' call order; if a harness
changes, its seeds stay valid inputs and only lose some of their meaning (rerun this script).

usage: cpp/fuzz/make_seeds.py   (rewrites the corpus directories)
"""
import json
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


class Provider:
    """Builds an input that FuzzedDataProvider (LLVM 14) decodes to the given values."""

    def __init__(self):
        self.front = bytearray()
        self.back = []  # bytes in the order ConsumeIntegral* takes them (from the end)

    def in_range(self, lo, hi, value, bits=32):
        assert lo <= value <= hi, (lo, value, hi)
        span, raw, n, off = hi - lo, value - lo, 0, 0
        while off < bits and (span >> off) > 0:
            n, off = n + 1, off + 8
        self.back.extend(raw.to_bytes(n, "big") if n else b"")
        return self

    def size(self, lo, hi, value):  # ConsumeIntegralInRange<std::size_t / uint64_t>
        return self.in_range(lo, hi, value, 64)

    def boolean(self, value):
        self.back.append(1 if value else 0)
        return self

    def integral(self, value, bits, signed):  # ConsumeIntegral<T>
        lo = -(1 << (bits - 1)) if signed else 0
        return self.in_range(lo, lo + (1 << bits) - 1, value, bits)

    def string(self, data, max_len):  # ConsumeRandomLengthString(max_len)
        data = data.encode() if isinstance(data, str) else data
        assert len(data) <= max_len, (data, max_len)
        self.front += data.replace(b"\\", b"\\\\")
        if len(data) < max_len:
            self.front += b"\\#"  # a backslash and anything else ends the string
        return self

    def rest(self, data):  # ConsumeRemainingBytesAsString(): must come last
        self.front += data.encode() if isinstance(data, str) else data
        return self

    def bytes(self):
        return bytes(self.front) + bytes(reversed(self.back))


# ---- fuzz_common.hpp: json_generator and friends ----

def valid_utf8(p, text, max_cps):
    p.size(0, max_cps, len(text))
    for ch in text:
        cp = ord(ch)
        if cp < 0x80:
            p.in_range(0, 4, 3).in_range(0, 0x7F, cp)
        elif cp < 0x800:
            p.in_range(0, 4, 0).in_range(0x80, 0x7FF, cp)
        elif cp < 0x10000:
            p.in_range(0, 4, 1).in_range(0x800, 0xFFFF, cp)
        else:
            p.in_range(0, 4, 2).in_range(0x10000, 0x10FFFF, cp)


def any_string(p, value, max_len):
    """fuzz::any_string: a short enough str takes the valid-UTF-8 branch, the rest the raw one."""
    if isinstance(value, str) and len(value) <= max_len // 2:
        p.boolean(True)
        valid_utf8(p, value, max_len // 2)
    else:
        p.boolean(False).string(value.encode() if isinstance(value, str) else value, max_len)


def json_value(p, v):
    """Mirrors json_generator::value for None, bool, int, str (valid UTF-8), bytes (raw
    string), dict, list; returns the compact JSON the writer produces (for sizes)."""
    if v is None:
        p.in_range(0, 10, 0)
        return "null"
    if isinstance(v, bool):
        p.in_range(0, 10, 1).boolean(v)
        return "true" if v else "false"
    if isinstance(v, int):
        p.in_range(0, 10, 2).integral(v, 64, True)
        return str(v)
    if isinstance(v, str) and len(v) <= 24:
        p.in_range(0, 10, 7)
        valid_utf8(p, v, 24)
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        p.in_range(0, 10, 8).string(v, 48)
        return json.dumps(v.decode("utf-8", "replace"), ensure_ascii=False)
    if isinstance(v, dict):
        p.in_range(0, 10, 9).in_range(0, 5, len(v))
        parts = []
        for k, item in v.items():
            any_string(p, k, 24)
            text = k.decode("utf-8", "replace") if isinstance(k, bytes) else k
            parts.append(json.dumps(text, ensure_ascii=False) + ":" + json_value(p, item))
        return "{" + ",".join(parts) + "}"
    if isinstance(v, list):
        p.in_range(0, 10, 10).in_range(0, 5, len(v))
        return "[" + ",".join(json_value(p, item) for item in v) + "]"
    raise TypeError(v)


# ---- fastret::serialize (record.cpp) ----

KINDS = {"job_return": 1, "job_load": 2, "job_minions": 3, "event": 4, "job_endtime": 5}


def serialize(kind, ts_us, jid="", minion="", fun="", tag="", success=-1, retcode=None, rid="", payload=""):
    out = bytearray([1, KINDS[kind]])
    out += struct.pack("<q", ts_us)
    out += struct.pack("<b", success)
    out += bytes([1 if retcode is not None else 0])
    out += struct.pack("<q", retcode or 0)
    for s in (jid, minion, fun, tag, rid, payload):
        b = s.encode()
        out += struct.pack("<I", len(b)) + b
    return bytes(out)


TS = 1705486500123456  # 2024-01-17T10:15:00.123456Z
JID = "20240117101500123456"
RECORDS = [
    serialize("job_return", TS, JID, "web01.example.org", "test.ping", success=1, retcode=0,
              rid="9f2c6a1e0b7d4c3a8e5f60718293a4b5",
              payload='{"fun":"test.ping","id":"web01.example.org","return":true,"retcode":0}'),
    serialize("job_return", TS + 1, JID, "db02", "state.apply", success=0, retcode=2,
              rid="0a1b2c3d4e5f60718293a4b5c6d7e8f9",
              payload='{"file_|-motd_|-/etc/motd_|-managed":{"result":false,"comment":"Source file salt://motd not found","changes":{}}}'),
    serialize("event", TS + 2, tag="salt/job/20240117101500123456/ret/web01.example.org",
              payload='{"_stamp":"2024-01-17T10:15:00.123456","cmd":"_return","success":true}'),
    serialize("job_load", TS + 3, JID, payload='{"fun":"cmd.run","arg":["uptime"],"tgt":"*","tgt_type":"glob","user":"root"}'),
    serialize("job_minions", TS + 4, JID, payload='["web01.example.org","db02"]'),
    serialize("job_endtime", TS + 5, JID, payload='"2024, Jan 17 10:15:02.000000"'),
]


# ---- targets ----

def seeds_record():
    # Raw bytes first (serialized records); the structured half reads them again, harmlessly.
    return {f"{i}-{name}": rec for i, (name, rec) in enumerate(
        zip(["ping", "state-failed", "event", "load", "minions", "endtime"], RECORDS))}


def seeds_json_writer():
    docs = {
        "test-ping": {"fun": "test.ping", "id": "web01.example.org", "jid": JID, "retcode": 0, "return": True},
        "state-apply": {"return": {"file_|-motd_|-managed": {
            "changes": {"diff": "--- \n+++ \n@@ -1 +1 @@\n-old\n+café ✓\n"}, "result": True}}},
        "event": {"_stamp": "2024-01-17T10:15:00.123456", "tag": b"salt/auth", "data": [None, False, -1]},
        "binary-output": {"stdout": b"caf\xe9 \xff\xfe\x00 done", "pid": 4711},
        "unicode-keys": {"naïve": "東京 🍣", b"bad\xc3(key": [1, 2, 3]},
    }
    rests = [b"", "Überprüfung 🔑".encode(), b"\xe2\x82 torn", b"ctl\x01\x1f\"\\", b"\xed\xa0\x80 surrogate"]
    out = {}
    for (name, doc), rest in zip(docs.items(), rests):
        p = Provider()
        n = len(json_value(p, doc).encode())
        p.size(0, n + 8, n // 2).boolean(False).size(0, n + 8, n // 3)  # check_limit: cut with a small head
        p.rest(rest)
        out[name] = p.bytes()
    return out


def seeds_json_lines():
    out = {}
    batches = {
        "returns": [
            dict(kind=1, ts=TS, success=1, retcode=0, rid="9f2c6a1e0b7d4c3a8e5f60718293a4b5", jid=JID,
                 minion="web01.example.org", fun="test.ping", tag="", data={"return": True}),
            dict(kind=1, ts=TS + 1, success=0, retcode=2, rid="", jid=JID, minion="db02", fun="state.apply",
                 tag="", data={"comment": "Source file salt://motd not found", "result": False}),
        ],
        "event": [dict(kind=4, ts=TS + 2, success=-1, retcode=None, rid="0a1b2c3d4e5f60718293a4b5c6d7e8f9",
                       jid="", minion="master", fun="", tag="salt/job/20240117101500123456/new",
                       data={"minions": ["web01", "db02"], "user": "root"})],
        "odd-fields": [dict(kind=2, ts=-1, success=5, retcode=-9223372036854775808, rid="", jid=JID,
                            minion=b"m\xffinion\n", fun="cmd.run", tag="", data=None),
                       dict(kind=5, ts=253402300799999999, success=-1, retcode=None, rid="", jid="", minion="",
                            fun="", tag="", data=[1, "Zürich"])],
    }
    for name, recs in batches.items():
        p = Provider().boolean(name == "event").in_range(0, 6, len(recs))
        for r in recs:
            record_fields(p, r)
        out[name] = p.bytes()
    return out


def record_fields(p, r):
    """fuzz_records.hpp: make_record."""
    p.boolean(True).in_range(1, 5, r["kind"])
    p.in_range(0, 3, 1).in_range(-62135596800 * 1000000 - 5, 253402300800 * 1000000 + 5, r["ts"], 64)
    p.integral(r["success"], 8, True)
    p.boolean(r["retcode"] is not None)
    if r["retcode"] is not None:
        p.integral(r["retcode"], 64, True)
    p.boolean(bool(r["rid"]))
    if r["rid"]:
        p.string(r["rid"], 40)
    for field, max_len in (("jid", 32), ("minion", 32), ("fun", 32), ("tag", 64)):
        any_string(p, r[field], max_len)
    if r["data"] is None:
        p.in_range(0, 3, 0)
    else:
        p.in_range(0, 3, 1)
        json_value(p, r["data"])
        p.boolean(False).boolean(False)  # neither cut nor spread


STATE_RETURN = dict(kind=1, ts=TS, success=0, retcode=2, rid="9f2c6a1e0b7d4c3a8e5f60718293a4b5", jid=JID,
                    minion="web01.example.org", fun="state.apply", tag="",
                    data={"return": {"file_|-motd_|-managed": {"result": False, "duration": 12},
                                     "cmd_|-x_|-x_|-run": {"result": True, "duration": 3}}})
LOAD = dict(kind=2, ts=TS + 3, success=-1, retcode=None, rid="", jid=JID, minion="", fun="cmd.run",
            tag="", data={"user": "root", "arg": ["echo a=b|c \\ ]"], "tgt": "*"})
EVENT = dict(kind=4, ts=-1, success=-1, retcode=None, rid="0a1b2c3d4e5f60718293a4b5c6d7e8f9", jid="",
             minion=b"db\xff02 ]\"", fun="", tag="salt/auth", data={"duration": 2, "act": "accept"})


def seeds_syslog():
    formats = {
        # name: (rfc3164, facility, severity, failure severity, hostname, local hostname,
        #        app_name, procid, max_bytes, split, record)
        "5424-fits": (False, 1, 6, 3, "", "-", "salt", "-", 1200, True, STATE_RETURN),
        "5424-split": (False, 16, 6, 3, "", "-", "salt-master", "4711", 260, True, STATE_RETURN),
        "5424-truncate": (False, 4, 5, 2, "syslog host", "-", "s" * 30, "-", 300, False, LOAD),
        "5424-odd-sd": (False, 23, 7, 0, "", "master", "", "", 1200, True, EVENT),
        "3164-split": (True, 1, 6, 3, "", "-", "salt:minion[x]", "42", 200, True, STATE_RETURN),
        "3164-truncate": (True, 21, 6, 3, "h", "-", "salt", "p]d", 120, False, LOAD),
    }
    out = {}
    for name, (rfc3164, fac, sev, fsev, host, local, app, procid, max_bytes, split, r) in formats.items():
        p = Provider().boolean(rfc3164).in_range(0, 23, fac).in_range(0, 7, sev).in_range(0, 7, fsev)
        any_string(p, host, 32)
        any_string(p, local, 16)
        any_string(p, app, 64)
        any_string(p, procid, 160)
        p.size(0, 1200, max_bytes).boolean(split)
        record_fields(p, r)
        out[name] = p.bytes()
    return out


def seeds_siem():
    out = {}
    for name, r in (("state-return", STATE_RETURN), ("load", LOAD), ("event", EVENT)):
        p = Provider()
        record_fields(p, r)
        out[name] = p.bytes()
    return out


def seeds_redact():
    out = {}
    # mode 0 (default rules): path, key, then the value text
    values = {
        "pem": (["return", "cmd_|-deploy-key_|-cat id_rsa_|-run"], "stdout",
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7V4x\n-----END RSA PRIVATE KEY-----\n"),
        "bearer": (["arg"], "0", "curl -sf -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.x' https://api.example.org/v1"),
        "url-password": ([], "source", "git clone https://deploy:hunter2@git.example.org/ops/salt.git /srv/salt"),
        "aws": (["return"], "AWS_ACCESS_KEY_ID", "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE; aws s3 ls"),
        "basic": ([], "headers", "Authorization: Basic dXNlcjpwYXNzd29yZA== Host: example.org"),
        "clean": (["return", "service_|-nginx_|-nginx_|-running"], "comment", "The service nginx is already running"),
    }
    for name, (path, key, value) in values.items():
        p = Provider().in_range(0, 3, len(path))
        for seg in path:
            p.string(seg.encode()[:12], 12)
        p.string(key, 40).rest(value)
        out["defaults-" + name] = b"\x00" + p.bytes()
    # mode 1 (rules from the input): user rules as an operator would write them
    rules = {
        "mysql-password": ([(2, 0, [r"(?i)--password[= ](?P<secret>\S+)"])], "",
                           "mysqldump --user=backup --password=s3cr3t --all-databases"),
        "dsn-hash": ([(2, 2, [r"postgresql://[^:/@]+:(?P<secret>[^@]+)@"])], "pseudonym-key",
                     "db_url: postgresql://app:pa55@db.internal:5432/salt"),
        "diff-path": ([(1, 1, ["return.*.changes.diff", "**.private"]), (0, 0, ["*serial*"])], "", "no secret here"),
    }
    for name, (rule_list, hmac_key, text) in rules.items():
        p = Provider().in_range(1, 3, len(rule_list))
        for kind, mode, patterns in rule_list:
            p.in_range(0, 2, kind).in_range(0, 2, mode).in_range(0, 3, len(patterns))
            for pat in patterns:
                p.in_range(0, 2, 0).string(pat, 48)
        p.boolean(bool(hmac_key))
        if hmac_key:
            p.string(hmac_key, 16)
        p.in_range(0, 3, 1).in_range(0, 4, 3)
        for seg in ["return", "file_|-x", "changes"]:
            p.string(seg.encode()[:8], 8)
        p.string("diff", 16)
        p.boolean(True)
        any_string(p, text, 256)
        out["rules-" + name] = b"\x01" + p.bytes()
    return out


MAGIC = b"FRSPOOL1"


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def seeds_spool():
    """Mirrors fuzz_spool_reader: segments (built from serialized records, then damaged),
    ack files, extras, options, then the calls."""
    def segment(p, payloads, damage=(), ack=None):
        p.in_range(0, 3, 1).in_range(0, 6, len(payloads))
        size, ends = len(MAGIC), [8]
        for pl in payloads:
            p.string(pl, 256)
            size += 8 + len(pl)
            ends.append(size)
        p.in_range(0, 2, len(damage))
        for op, at, arg in damage:
            p.size(0, size - 1, at).in_range(0, 4, op)
            if op == 0:
                p.in_range(0, 7, arg)  # flip this bit
            elif op == 1:
                size = at  # truncate
            elif op == 2:
                p.size(1, 24, arg)  # zero-filled tail
                size += arg
        if ack is None:
            p.in_range(0, 3, 0)
        else:
            p.in_range(0, 3, 2).boolean(True).size(0, len(ends) - 1, ack)

    def options_and_calls(p, calls):
        p.boolean(False).boolean(False).boolean(False)  # no .tmp, stray .ack, README
        p.string(b"", 32).string(b"", 32)               # crc32c check strings
        p.size(16, 2048, 1024).boolean(True)            # segment_bytes, no cap
        p.boolean(False).in_range(0, 2, 0)              # reject_new, fsync never
        for call in calls:
            op = call[0]
            p.in_range(0, 5, op)
            if op == 0:
                p.in_range(0, 4, len(call[1]))
                for pl in call[1]:
                    p.string(pl, 256)
                p.boolean(True)
            elif op == 1:
                p.size(0, 8, call[1]).size(0, 1024, call[2]).boolean(True)  # read() into entries
            elif op == 2:
                p.size(0, call[2] - 1, call[1])  # ack the i-th frame seen, of call[2] seen so far
        return p.bytes()

    assert all(len(r) <= 256 and len(r) * 4 <= 1024 for r in RECORDS)
    out = {}
    p = Provider().in_range(0, 3, 1)
    segment(p, RECORDS[:3], ack=1)  # one frame acknowledged by an earlier process
    out["backlog-acked-once"] = options_and_calls(p, [(1, 8, 1024), (2, 1, 2), (5,)])

    p = Provider().in_range(0, 3, 2)
    segment(p, RECORDS[:2], damage=[(1, 8 + 8 + len(RECORDS[0]) + 30, 0)])  # killed mid-frame
    segment(p, RECORDS[2:4])
    out["torn-tail-then-more"] = options_and_calls(
        p, [(0, [RECORDS[4], RECORDS[5]]), (1, 2, 1024), (2, 0, 2), (3,), (1, 4, 1024), (2, 3, 5)])

    p = Provider().in_range(0, 3, 1)
    segment(p, RECORDS[3:6], damage=[(2, 0, 16)])  # power loss: zero-filled tail
    out["zero-filled-tail"] = options_and_calls(p, [(4,), (1, 1, 0), (1, 8, 64), (2, 1, 2), (5,)])

    p = Provider().in_range(0, 3, 1)
    segment(p, RECORDS[:3], damage=[(0, 8 + 8 + len(RECORDS[0]) + 8 + 20, 3)])  # bit rot in frame 2
    out["bit-rot-mid-segment"] = options_and_calls(p, [(1, 8, 1024), (2, 0, 1), (0, [RECORDS[1]]), (1, 8, 1024)])
    return out


TARGETS = {
    "fuzz_record": seeds_record,
    "fuzz_json_writer": seeds_json_writer,
    "fuzz_json_lines": seeds_json_lines,
    "fuzz_redact": seeds_redact,
    "fuzz_spool_reader": seeds_spool,
    "fuzz_syslog": seeds_syslog,
    "fuzz_siem": seeds_siem,
}

if __name__ == "__main__":
    for target, make in TARGETS.items():
        d = CORPUS / target
        d.mkdir(parents=True, exist_ok=True)
        for old in d.iterdir():
            old.unlink()
        seeds = make()
        for name, data in seeds.items():
            (d / name).write_bytes(data)
        print(f"{target}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes")
