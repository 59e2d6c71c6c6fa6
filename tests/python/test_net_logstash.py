"""The logstash sink against Python receivers: ECS JSON lines over TLS (field by field), HTTPS
batches (2xx ok, 503 + Retry-After retried, 400 dropped, 401 fatal), GELF (NUL-framed) and
CEF; salt-call --return fastret_logstash."""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from netpeers import HttpReceiver, Receiver  # noqa: E402
from test_net_syslog import pki, rec, run_sink  # noqa: E402,F401


def new_jid():
    return f"2026{uuid.uuid4().int % 10**16:016d}"


def check_ecs(doc, r):
    kind, jid, minion, fun, tag, success, retcode, payload = r
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", doc["@timestamp"])
    assert doc["ecs"] == {"version": "8.11.0"}
    ev = doc["event"]
    assert ev["kind"] == "event"
    if fun.startswith("state."):
        assert ev["category"] == ["configuration"] and ev["type"] == ["change"]
    assert ev.get("action") == (fun or None)
    assert ev["outcome"] == {True: "success", False: "failure", None: "unknown"}[success]
    assert re.fullmatch(r"[0-9a-f]{32}", ev["id"])
    assert ev["dataset"] == f"salt.{kind}" and ev["module"] == "salt"
    assert doc["host"] == {"name": minion}
    salt = doc["salt"]
    assert salt["kind"] == kind and salt["jid"] == jid and salt.get("fun") == (fun or None)
    assert salt.get("tag") == (tag or None)
    assert salt.get("success") == success and salt.get("retcode") == retcode
    assert salt["data"] == payload


def test_ecs_json_lines_over_tls(pki, tmp_path):
    srv = Receiver(certfile=pki["server"], keyfile=pki["server_key"], cafile=pki["ca"],
                   require_client_cert=True)
    jid = new_jid()
    records = [
        rec(jid, fun="state.apply", payload={"jid": jid, "return": {
            "file_|-a_|-a_|-managed": {"result": True, "duration": 1.5},
            "cmd_|-b_|-b_|-run": {"result": True, "duration": 2.25}}}),
        rec(jid, fun="cmd.run", success=False, retcode=1,
            payload={"user": "alice", "bad": 'CR\r LF\n NUL\x00 ] " \\ \udcff'}),
        rec(jid, kind="event", minion="master", fun="", tag="salt/auth", success=None,
            retcode=None, payload={"duration": 12}),
    ]
    report = run_sink(tmp_path, {"protocol": "tls", "host": "localhost", "port": srv.port,
                                 "tls_ca_file": pki["ca"], "tls_cert_file": pki["client"],
                                 "tls_key_file": pki["client_key"]},
                      [{"records": records, "wait": 10}], sink_type="logstash")
    assert report["delivered"] == [True], report
    docs = srv.wait_docs(3)
    srv.close()
    assert len(docs) == 3
    # a lone surrogate is not UTF-8: the record encoder writes U+FFFD for it
    bad = docs[1]["salt"]["data"]["bad"]
    assert bad.startswith('CR\r LF\n NUL\x00 ] " \\ \ufffd') and set(bad[19:]) == {"\ufffd"}
    expected_payloads = [records[0][7], {"user": "alice", "bad": bad}, records[2][7]]
    for doc, r, p in zip(docs, records, expected_payloads):
        check_ecs(doc, r[:7] + [p])
    assert docs[0]["event"]["duration"] == 3750000
    assert docs[1]["user"] == {"name": "alice"}
    assert "user" not in docs[0]
    assert docs[2]["event"]["duration"] == 12000000
    assert docs[2]["event"]["category"] == ["host"]


def test_https_batches_status_handling(pki, tmp_path):
    srv = HttpReceiver(replies=[(503, {"Retry-After": "1"})], certfile=pki["server"],
                       keyfile=pki["server_key"])
    jid = new_jid()
    records = [rec(jid, payload={"i": i}) for i in range(50)]
    t0 = time.monotonic()
    report = run_sink(tmp_path, {"protocol": "https", "host": "localhost", "port": srv.port,
                                 "path": "/salt", "tls_ca_file": pki["ca"],
                                 "http_user": "salt", "http_password": "s3cret"},
                      [{"records": records, "wait": 0.1}, {"flush": 15}], sink_type="logstash")
    assert report["delivered"][-1] is True, report
    assert time.monotonic() - t0 >= 1.0  # Retry-After honoured
    docs = srv.all_docs()
    assert [d["salt"]["data"]["i"] for d in docs] == list(range(50))
    line, headers = srv.requests[-1]
    assert line == "POST /salt HTTP/1.1"
    assert headers["authorization"] == "Basic c2FsdDpzM2NyZXQ="
    assert headers["content-type"] == "application/json"
    assert srv.connections <= 2  # kept alive
    assert "s3cret" not in json.dumps(report)
    srv.close()

    for status, outcome in ((400, "dropped"), (401, "fatal")):
        srv = HttpReceiver(replies=[(status, {})] * 10)
        report = run_sink(tmp_path, {"protocol": "http", "host": "127.0.0.1", "port": srv.port},
                          [{"records": [rec(new_jid())], "wait": 2}], sink_type="logstash")
        srv.close()
        st = report["stats"][0]
        assert st["delivered"] == 0 and st["failed"] == 1
        assert f"HTTP {status}" in st["last_error"]
        if outcome == "dropped":
            assert st["dropped"] == 1
        else:
            assert st["fatal"] is True


def test_gelf_and_cef(tmp_path):
    jid = new_jid()
    r = rec(jid, fun="cmd.run", success=False, retcode=2, payload={"out": "a=b|c\\d\ne"})
    srv = Receiver()
    report = run_sink(tmp_path, {"protocol": "tcp", "host": "127.0.0.1", "port": srv.port,
                                 "format": "gelf"}, [{"records": [r], "wait": 10}],
                      sink_type="logstash")
    assert report["delivered"] == [True]
    (doc,) = srv.wait_docs(1, sep=b"\0")
    srv.close()
    assert doc["version"] == "1.1" and doc["host"] == "web1" and doc["level"] == 3
    assert doc["_jid"] == jid and doc["_fun"] == "cmd.run" and doc["_success"] == "false"
    assert doc["_retcode"] == 2 and re.fullmatch(r"[0-9a-f]{32}", doc["_record_id"])
    assert json.loads(doc["full_message"]) == r[7]
    assert isinstance(doc["timestamp"], float)

    srv = Receiver()
    run_sink(tmp_path, {"protocol": "tcp", "host": "127.0.0.1", "port": srv.port,
                        "format": "cef"}, [{"records": [r], "wait": 10}], sink_type="logstash")
    deadline = time.monotonic() + 10
    while not srv.lines() and time.monotonic() < deadline:
        time.sleep(0.05)
    (line,) = srv.lines()
    srv.close()
    text = line.decode()
    assert text.startswith("CEF:0|SaltStack|fastret|1.0|job_return|cmd.run|7|rt=")
    assert f" dhost=web1 act=cmd.run outcome=failure externalId=" in text
    assert f" cs1Label=jid cs1={jid} cn1Label=retcode cn1=2 msg=" in text
    assert text.endswith('msg={"out":"a\\=b|c\\\\\\\\d\\\\ne"}')


def test_salt_call_return_fastret_logstash(pki, minion_env):
    srv = Receiver(certfile=pki["server"], keyfile=pki["server_key"])
    minion_env.write_config({"fastret_logstash": {
        "protocol": "tls", "host": "localhost", "port": srv.port, "tls_ca_file": pki["ca"]}})
    minion_env.add_state("probe", "probe:\n  test.succeed_with_changes:\n    - name: probe\n")
    res = minion_env.salt_call("state.apply", "probe", returner="fastret_logstash")
    docs = [d for d in srv.wait_docs(2) if d["salt"]["kind"] == "job_return"]
    srv.close()
    (doc,) = docs
    assert doc["salt"]["jid"] == res.jid
    assert doc["event"]["action"] == "state.apply" and doc["event"]["outcome"] == "success"
    assert doc["host"]["name"] == minion_env.minion_id
    assert doc["event"]["category"] == ["configuration"]
    assert doc["event"]["duration"] >= 0


# Retry-After as an HTTP date (RFC 9110 10.2.3, the three forms of 5.6.7). The server's own
# Date is a fixed moment in 1994: the wait is Retry-After minus Date (2 s), whatever the local
# clock says.
@pytest.mark.parametrize("status,retry_after", [
    (429, "Sun, 06 Nov 1994 08:49:39 GMT"),       # IMF-fixdate
    (503, "Sunday, 06-Nov-94 08:49:39 GMT"),      # obsolete RFC 850 form
    (503, "Sun Nov  6 08:49:39 1994"),            # obsolete asctime form
])
def test_http_retry_after_date_relative_to_server_date(tmp_path, status, retry_after):
    srv = HttpReceiver(replies=[(status, {"Date": "Sun, 06 Nov 1994 08:49:37 GMT",
                                          "Retry-After": retry_after})])
    jid = new_jid()
    report = run_sink(tmp_path, {"protocol": "http", "host": "127.0.0.1", "port": srv.port},
                      [{"records": [rec(jid)], "wait": 0.1}, {"flush": 15}], sink_type="logstash")
    srv.close()
    assert report["delivered"][-1] is True, report
    assert len(srv.times) == 2
    gap = srv.times[1] - srv.times[0]
    assert 2.0 <= gap < 3.5, gap  # the backoff alone is at most 0.3 s here
    assert [d["salt"]["jid"] for d in srv.all_docs()] == [jid]


def test_http_retry_after_date_without_server_date(tmp_path):
    from email.utils import formatdate
    # In the past: no extra wait, the runtime's backoff (50..300 ms here) alone.
    srv = HttpReceiver(replies=[(503, {"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"})])
    report = run_sink(tmp_path, {"protocol": "http", "host": "127.0.0.1", "port": srv.port},
                      [{"records": [rec(new_jid())], "wait": 0.1}, {"flush": 15}],
                      sink_type="logstash")
    srv.close()
    assert report["delivered"][-1] is True, report
    assert srv.times[1] - srv.times[0] < 1.0
    # Two seconds ahead of the local clock (whole seconds: 1..3 s from now).
    srv = HttpReceiver(replies=[(503, {"Retry-After": formatdate(time.time() + 2, usegmt=True)})])
    report = run_sink(tmp_path, {"protocol": "http", "host": "127.0.0.1", "port": srv.port},
                      [{"records": [rec(new_jid())], "wait": 0.1}, {"flush": 15}],
                      sink_type="logstash")
    srv.close()
    assert report["delivered"][-1] is True, report
    assert 0.9 <= srv.times[1] - srv.times[0] < 3.5


# Name resolution runs off the I/O thread under connect_timeout_ms (net/connection.cpp).
def test_names_resolve_and_unresolvable_names_keep_records_spooled(tmp_path):
    srv = HttpReceiver()
    jid = new_jid()
    report = run_sink(tmp_path, {"protocol": "http", "host": "localhost", "port": srv.port},
                      [{"records": [rec(jid)], "wait": 10}], sink_type="logstash")
    srv.close()
    assert report["delivered"] == [True], report
    assert [d["salt"]["jid"] for d in srv.all_docs()] == [jid]

    t0 = time.monotonic()
    report = run_sink(tmp_path, {"protocol": "http", "host": "no-such-host.invalid", "port": 9,
                                 "connect_timeout_ms": 2000},
                      [{"records": [rec(new_jid()) for _ in range(3)], "wait": 1}],
                      sink_type="logstash", spool=True, close_timeout=0.5)
    assert time.monotonic() - t0 < 20
    assert report["delivered"] == [False], report
    st = report["stats"][0]
    assert st["spooled"] == 3 and st["delivered"] == 0 and st["retried"] >= 1
    assert "cannot resolve no-such-host.invalid" in st["last_error"], st
