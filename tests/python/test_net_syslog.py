"""The syslog sink against a real rsyslog (tests/fixtures/rsyslog_server.py): UDP, TCP, TLS,
mutual TLS and a unix datagram socket; every field as rsyslog parsed it; TLS refusals (wrong
CA, expired certificate, wrong host, pin mismatch, missing client certificate) with nothing
sent in clear text; outages (peer down at start, killed and restarted, stalled); bad input;
and salt-call --return fastret_syslog."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "fixtures"))
sys.path.insert(0, str(HERE))
import certs  # noqa: E402
import rsyslog_server  # noqa: E402
from netpeers import Receiver  # noqa: E402

HELPER = str(HERE / "helpers" / "net_sink.py")


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory):
    d = tmp_path_factory.mktemp("rsyslog")
    info = rsyslog_server.start(d)
    yield info
    rsyslog_server.stop(d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return certs.make_pki(tmp_path_factory.mktemp("pki"))


def run_sink(tmp_path, options, phases, sink_type="syslog", name=None, spool=False,
             background=False, close_timeout=2.0):
    name = name or f"t-{uuid.uuid4().hex[:8]}"
    opts = dict(options)
    if not spool:
        opts.setdefault("spool", False)
    opts.setdefault("retry_initial_ms", 50)
    opts.setdefault("retry_max_ms", 300)
    spec = {"type": sink_type, "name": name, "options": opts, "phases": phases,
            "spool_root": str(tmp_path / "spool"), "close_timeout": close_timeout}
    path = tmp_path / f"spec-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(spec))
    cmd = [sys.executable, HELPER, str(path)]
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def rec(jid, minion="web1", fun="state.apply", success=True, retcode=0, payload=None,
        kind="job_return", tag=""):
    return [kind, jid, minion, fun, tag, success, retcode,
            payload if payload is not None else {"jid": jid, "return": {"x": 1}}]


def sd_params(sd: str) -> dict:
    """Parses one SD-ELEMENT [id k="v" ...] into {"@id": id, k: unescaped v}."""
    assert sd.startswith("[") and sd.endswith("]"), sd
    m = re.match(r"\[(\S+)", sd)
    out = {"@id": m.group(1)}
    for k, v in re.findall(r' ([^=\s]+)="((?:[^"\\\]]|\\.)*)"', sd):
        out[k] = re.sub(r"\\(.)", r"\1", v)
    return out


def mine(rows, jid):
    return [r for r in rows if jid in r.get("structured_data", "") or jid in r.get("msg", "")]


def endpoint(info, kind, pki=None):
    if kind == "unix":
        return {"transport": "unix", "path": info["unix_socket"]}
    opts = {"transport": "tcp" if kind in ("tcp",) else kind if kind == "udp" else "tls",
            "host": "127.0.0.1" if kind == "udp" else "localhost",
            "port": info[f"{kind}_port"]}
    if kind in ("tls", "mtls"):
        opts["tls_ca_file"] = info["ca"]
    if kind == "mtls":
        opts["tls_cert_file"] = info["client_cert"]
        opts["tls_key_file"] = info["client_key"]
    return opts


@pytest.mark.parametrize("kind", ["udp", "tcp", "tls", "mtls"])
def test_rfc5424_fields_every_transport(rsyslog, tmp_path, kind):
    jid = f"2026{uuid.uuid4().int % 10**16:016d}"
    tricky = 'a"b\\c]d\r\ne\x00f'
    payloads = [{"jid": jid, "return": {"x": 1}, "n": i} for i in range(3)]
    records = [rec(jid, payload=payloads[0]),
               rec(jid, minion="db 2\u00e9", fun="cmd.run", success=False, retcode=2,
                   payload=payloads[1]),
               rec(jid, kind="event", minion="master", fun="", tag=f"salt/job/{jid}/{tricky}",
                   success=None, retcode=None, payload=payloads[2])]
    report = run_sink(tmp_path, {**endpoint(rsyslog, kind), "facility": "local3",
                                 "tag": "salt-test", "hostname": ""},
                      [{"records": records, "wait": 10}])
    assert report["delivered"] == [True], report
    rows = rsyslog_server.wait_received(rsyslog["dir"], kind, 0)
    deadline = time.monotonic() + 15
    while len(mine(rows, jid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
        rows = rsyslog_server.received(rsyslog["dir"], kind)
    got = mine(rows, jid)
    assert len(got) == 3, rows[-5:]
    pid = None
    for row, r, payload in zip(got, records, payloads):
        sev = 3 if r[5] is False else 6
        assert row["facility"] == "19" and row["severity"] == str(sev)
        assert row["pri"] == str(19 * 8 + sev)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|\+00:00)", row["timestamp"])
        # HOSTNAME is the minion id restricted to PRINTUSASCII (space and é -> '_')
        expected_host = re.sub(r"[^\x21-\x7e]", "_", r[2].encode().decode("latin-1"))
        assert row["hostname"] == expected_host
        assert row["app_name"] == "salt-test"
        assert row["procid"].isdigit()
        pid = pid or row["procid"]
        assert row["procid"] == pid
        assert row["msgid"] == r[0]
        assert json.loads(row["msg"]) == payload
        sd = sd_params(row["structured_data"])
        assert sd["@id"] == "salt@32473"
        assert re.fullmatch(r"[0-9a-f]{32}", sd["id"])
        assert sd["kind"] == r[0]
        assert sd["jid"] == jid
        assert sd.get("minion") == r[2]
        assert sd.get("fun", "") == r[3]
        if r[5] is None:
            assert "success" not in sd and "retcode" not in sd
        else:
            assert sd["success"] == ("true" if r[5] else "false")
            assert sd["retcode"] == str(r[6])
    # CR, LF and NUL in an SD value become U+FFFD; '"', '\' and ']' are escaped
    assert sd_params(got[2]["structured_data"])["tag"] == \
        f"salt/job/{jid}/" + 'a"b\\c]d\ufffd\ufffde\ufffdf'


def test_unix_socket_rfc3164(rsyslog, tmp_path):
    jid = f"2026{uuid.uuid4().int % 10**16:016d}"
    report = run_sink(tmp_path, {**endpoint(rsyslog, "unix"), "tag": "salt-minion",
                                 "level": "LOG_NOTICE", "facility": "LOG_DAEMON"},
                      [{"records": [rec(jid)], "wait": 10}])
    assert report["delivered"] == [True], report
    rows = []
    deadline = time.monotonic() + 10
    while not mine(rows, jid) and time.monotonic() < deadline:
        time.sleep(0.1)
        rows = rsyslog_server.received(rsyslog["dir"], "unix")
    (row,) = mine(rows, jid)
    assert row["facility"] == "3" and row["severity"] == "5"
    assert row["hostname"] == "web1"
    assert row["app_name"] == "salt-minion"
    line = json.loads(row["msg"].strip())
    assert line["jid"] == jid and line["minion"] == "web1" and line["fun"] == "state.apply"
    assert line["success"] is True and line["data"] == {"jid": jid, "return": {"x": 1}}


@pytest.mark.parametrize("framing,fmt", [("newline", "rfc5424"), ("octet_counting", "rfc3164")])
def test_framing_and_format_options(rsyslog, tmp_path, framing, fmt):
    jid = f"2026{uuid.uuid4().int % 10**16:016d}"
    records = [rec(jid, payload={"i": i, "s": "x\ny"}) for i in range(20)]
    report = run_sink(tmp_path, {**endpoint(rsyslog, "tcp"), "framing": framing, "format": fmt},
                      [{"records": records, "wait": 10}])
    assert report["delivered"] == [True], report
    deadline = time.monotonic() + 10
    while len(mine(rsyslog_server.received(rsyslog["dir"], "tcp"), jid)) < 20 and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    got = mine(rsyslog_server.received(rsyslog["dir"], "tcp"), jid)
    assert len(got) == 20
    for i, row in enumerate(got):
        if fmt == "rfc5424":
            assert json.loads(row["msg"]) == {"i": i, "s": "x\ny"}
        else:
            assert json.loads(row["msg"].strip())["data"] == {"i": i, "s": "x\ny"}


@pytest.mark.parametrize("oversize", ["split", "truncate"])
def test_one_megabyte_return(rsyslog, tmp_path, oversize):
    jid = f"2026{uuid.uuid4().int % 10**16:016d}"
    big = "\u00e9" + ("0123456789abcdef" * 65536)  # ~1 MiB
    payload = {"jid": jid, "return": big}
    report = run_sink(tmp_path, {**endpoint(rsyslog, "tls"), "oversize": oversize},
                      [{"records": [rec(jid, payload=payload)], "wait": 20}])
    assert report["delivered"] == [True], report
    want_parts = None
    deadline = time.monotonic() + 60  # rsyslog writes 132 parts; slow on a busy machine
    while time.monotonic() < deadline:
        got = mine(rsyslog_server.received(rsyslog["dir"], "tls"), jid)
        if got:
            sd = sd_params(got[0]["structured_data"])
            want_parts = int(sd["part"].split("/")[1]) if "part" in sd else 1
            if len(got) >= want_parts:
                break
        time.sleep(0.2)
    for row in got:
        assert len(row["raw"].encode()) <= 8192
    if oversize == "split":
        assert want_parts > 100
        parts = sorted(got, key=lambda r: int(sd_params(r["structured_data"])["part"].split("/")[0]))
        assert [sd_params(r["structured_data"])["part"] for r in parts] == \
            [f"{i}/{want_parts}" for i in range(1, want_parts + 1)]
        assert json.loads("".join(r["msg"] for r in parts)) == payload
    else:
        (row,) = got
        sd = sd_params(row["structured_data"])
        assert int(sd["truncated"]) == len(json.dumps(payload, separators=(",", ":"),
                                                      ensure_ascii=False).encode())
        assert row["msg"].startswith('{"jid":')


def test_verify_failures_refused_and_nothing_in_clear(rsyslog, pki, tmp_path):
    cases = {
        "wrong_ca": ({"tls_ca_file": pki["other_ca"]}, (pki["server"], pki["server_key"])),
        "expired": ({"tls_ca_file": pki["ca"]}, (pki["expired"], pki["expired_key"])),
        "wrong_host": ({"tls_ca_file": pki["ca"]}, (pki["wrong_host"], pki["wrong_host_key"])),
        "pin": ({"tls_ca_file": pki["ca"], "tls_pin_sha256": ["sha256//" + "A" * 43 + "="]},
                (pki["server"], pki["server_key"])),
    }
    for what, (tls_opts, (cert, key)) in cases.items():
        # A raw listener that records every byte: only a ClientHello may reach it.
        raw = Receiver()
        jid = f"2026{uuid.uuid4().int % 10**16:016d}"
        secret = f"SECRET-{uuid.uuid4().hex}"
        report = run_sink(tmp_path, {"transport": "tls", "host": "localhost", "port": raw.port,
                                     "connect_timeout_ms": 500, **tls_opts},
                          [{"records": [rec(jid, payload={"s": secret})], "wait": 1}])
        assert report["delivered"] == [False]
        assert secret.encode() not in bytes(raw.data) and jid.encode() not in bytes(raw.data)
        raw.close()
        # A TLS server with the certificate of the case: refused with a clear error.
        srv = Receiver(certfile=cert, keyfile=key)
        report = run_sink(tmp_path, {"transport": "tls", "host": "localhost", "port": srv.port,
                                     **tls_opts},
                          [{"records": [rec(jid, payload={"s": secret})], "wait": 2}])
        srv.close()
        assert report["delivered"] == [False], (what, report)
        assert secret.encode() not in bytes(srv.data)
        (st,) = report["stats"]
        assert st["retried"] >= 1 and st["delivered"] == 0
        text = st["last_error"]
        expect = {"wrong_ca": "unable to get local issuer certificate",
                  "expired": "certificate has expired",
                  "wrong_host": "hostname mismatch",
                  "pin": "does not match tls_pin_sha256"}[what]
        assert expect in text, (what, text)
        assert "nothing was sent" in text
        assert any(expect in m[1] for m in report["messages"]), report["messages"]


def test_pin_match_and_mutual_tls_required(rsyslog, pki, tmp_path):
    out = subprocess.run(
        f"openssl x509 -in {rsyslog['server_cert']} -pubkey -noout | openssl pkey -pubin "
        "-outform der | openssl dgst -sha256 -binary | base64", shell=True, capture_output=True,
        text=True, check=True)
    pin = "sha256//" + out.stdout.strip()
    jid = f"2026{uuid.uuid4().int % 10**16:016d}"
    report = run_sink(tmp_path, {**endpoint(rsyslog, "tls"), "tls_pin_sha256": [pin]},
                      [{"records": [rec(jid)], "wait": 10}])
    assert report["delivered"] == [True], report
    # mtls input without a client certificate: rsyslog refuses the session
    opts = endpoint(rsyslog, "mtls")
    del opts["tls_cert_file"], opts["tls_key_file"]
    jid2 = f"2026{uuid.uuid4().int % 10**16:016d}"
    run_sink(tmp_path, opts, [{"records": [rec(jid2)], "wait": 2}])
    time.sleep(1)
    assert not mine(rsyslog_server.received(rsyslog["dir"], "mtls"), jid2)


def test_verify_off_warns_at_start(rsyslog, tmp_path):
    jid = f"2026{uuid.uuid4().int % 10**16:016d}"
    opts = {**endpoint(rsyslog, "tls"), "tls_verify": False}
    del opts["tls_ca_file"]
    report = run_sink(tmp_path, opts, [{"records": [rec(jid)], "wait": 10}])
    assert report["delivered"] == [True]
    warn = [m for m in report["messages"] if m[0] == 30 and "verification is OFF" in m[1]]
    assert len(warn) == 1


def test_bad_config_refused(tmp_path):
    phases = [{"records": [rec("1")], "wait": 0.5}]
    for opts, text in (({"tls_pin_sha256": ["nope"]}, "is not a SHA-256 pin"),
                       ({"tls_cert_file": "/x.pem"}, "go together"),
                       ({"tls_ca_file": "/nonexistent.pem"}, "cannot load CA certificates"),
                       ({"facility": "LOG_NOPE"}, "facility 'LOG_NOPE' is unknown")):
        report = run_sink(tmp_path, {"transport": "tls", **opts}, phases)
        assert report["delivered"] == [False]
        assert any(text in m[1] for m in report["messages"]), report


def test_outage_down_at_start_killed_restarted(tmp_path):
    d = tmp_path / "rs"
    info = rsyslog_server.start(d)
    rsyslog_server.stop(d)
    opts = {**endpoint(info, "tcp"), "connect_timeout_ms": 500}
    name = "outage"
    jid = f"2026{uuid.uuid4().int % 10**16:016d}"
    first = [rec(jid, payload={"seq": i}) for i in range(5)]
    # 1. peer down: not delivered, kept in the spool by this process
    report = run_sink(tmp_path, opts, [{"records": first, "wait": 1}], name=name, spool=True,
                      close_timeout=0.5)
    assert report["delivered"] == [False]
    assert report["stats"][0]["spooled"] == 5
    # 2. peer back: the next process replays them first, in order; then the peer is killed
    #    mid-stream and restarted while records keep coming.
    rsyslog_server.start(d)
    a, b = tmp_path / "killed", tmp_path / "restarted"
    second = [rec(jid, payload={"seq": 5 + i}) for i in range(5)]
    third = [rec(jid, payload={"seq": 10 + i}) for i in range(5)]
    proc = run_sink(tmp_path, opts, [{"records": second, "wait": 15},
                                     {"wait_for_file": str(a)},
                                     {"records": third, "wait": 1},
                                     {"wait_for_file": str(b)},
                                     {"flush": 30}],
                    name=name, spool=True, background=True)
    deadline = time.monotonic() + 20
    while len(mine(rsyslog_server.received(d, "tcp"), jid)) < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    rsyslog_server.kill(d)
    a.touch()
    time.sleep(2)
    rsyslog_server.start(d)
    b.touch()
    out, _ = proc.communicate(timeout=120)
    report = json.loads(out)
    rsyslog_server.stop(d)
    assert report["delivered"][-1] is True, report
    seqs = [json.loads(r["msg"])["seq"] for r in mine(rsyslog_server.received(d, "tcp"), jid)]
    assert sorted(set(seqs)) == list(range(15))
    # replayed in order: the first occurrence of each record keeps the submission order
    first_seen = list(dict.fromkeys(seqs))
    assert first_seen == list(range(15)), seqs


def test_stalled_peer_does_not_block(tmp_path):
    stalled = Receiver(read=False)
    jid = f"2026{uuid.uuid4().int % 10**16:016d}"
    big = "x" * 50000
    records = [rec(jid, payload={"i": i, "pad": big}) for i in range(400)]  # ~20 MB
    t0 = time.monotonic()
    report = run_sink(tmp_path, {"transport": "tcp", "host": "127.0.0.1", "port": stalled.port,
                                 "write_timeout_ms": 500, "max_message_bytes": 65536},
                      [{"records": records, "wait": 2}], spool=True, close_timeout=0.5)
    elapsed = time.monotonic() - t0
    stalled.close()
    assert report["delivered"] == [False]
    assert elapsed < 30
    st = report["stats"][0]
    assert st["spooled"] == 400 and st["retried"] >= 1
    assert "timed out" in st["last_error"]


def test_salt_call_state_apply_return_fastret_syslog(rsyslog, minion_env):
    minion_env.write_config({"fastret_syslog": {**endpoint(rsyslog, "tls"), "tag": "salt-call"},
                             "syslog.facility": "LOG_LOCAL5"})
    minion_env.add_state("probe", "probe:\n  test.succeed_with_changes:\n    - name: probe\n")
    res = minion_env.salt_call("state.apply", "probe", returner="fastret_syslog")
    jid = res.jid
    deadline = time.monotonic() + 20
    got = []
    while len(got) < 2 and time.monotonic() < deadline:
        got = mine(rsyslog_server.received(rsyslog["dir"], "tls"), jid)
        time.sleep(0.2)
    got = [r for r in got if r["msgid"] == "job_return"]  # the job's load comes too
    (row,) = got
    assert row["facility"] == "21"  # syslog.facility (stock key) used as fallback
    assert row["app_name"] == "salt-call"
    assert row["hostname"] == minion_env.minion_id
    sd = sd_params(row["structured_data"])
    assert sd["fun"] == "state.apply" and sd["success"] == "true" and sd["jid"] == jid
    msg = json.loads(row["msg"])
    assert msg["fun"] == "state.apply" and msg["id"] == minion_env.minion_id
    (state,) = msg["return"].values()
    assert state["result"] is True
