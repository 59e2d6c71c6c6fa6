#!/usr/bin/env python3
"""fastret network benchmark: event_return through fastret_syslog / fastret_logstash over TCP
and TLS to a local receiver, against Salt's stock syslog returner and a raw socket write of
the same bytes (the physical reference). A benchmark, not a test::

    .venv/bin/python bench/bench_network.py [--quick] [--json results.json]

Events: benchlib's job_ret_event (~500 B), batches of 100, as EventReturn hands them
over. fastret's rate includes delivery (a flush at the end of the timed run). The receiver is
a separate process that reads and discards (TLS terminated by Python's ssl). The stock syslog
returner has no event_return: its returner() is called once per event, as a user would have to;
it writes to /dev/log and, when no daemon listens there, libc drops the messages, so its rate
is then an upper bound.

Targets: >= 100,000 events/s over TLS, >= 5x the stock syslog returner, >= half the raw
socket rate.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import ssl
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib as bl  # noqa: E402

sys.path.insert(0, os.path.join(bl.REPO, "tests", "fixtures"))
import certs  # noqa: E402


def receiver(port_q, pki, use_tls):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port_q.put(srv.getsockname()[1])
    ctx = None
    if use_tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki["server"], pki["server_key"])
    import threading

    def serve(c):
        if ctx:
            try:
                c = ctx.wrap_socket(c, server_side=True)
            except OSError:
                return
        while True:
            try:
                if not c.recv(1 << 20):
                    return
            except OSError:
                return

    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def start_receiver(pki, use_tls):
    q = mp.Queue()
    p = mp.Process(target=receiver, args=(q, pki, use_tls), daemon=True)
    p.start()
    return p, q.get(timeout=10)


def make_batches(n_batches, jidgen, minions=50):
    return [[bl.job_ret_event(jidgen(), f"minion-{i % minions}") for i in range(100)]
            for _ in range(n_batches)]


def bench_fastret(module, cfg, base, batches):
    path = bl.write_master_config(base, f"{module}-{cfg.get('transport', cfg.get('protocol'))}",
                                  {module: cfg, "event_return": module})
    opts, rets = bl.load_returners(path)
    fn = rets[f"{module}.event_return"]
    import fastret

    fn(batches[0])  # warm-up: connect, handshake
    fastret.native().flush(30)
    t0 = time.perf_counter()
    for b in batches[1:]:
        fn(list(b))
    ok = fastret.native().flush(120)
    dt = time.perf_counter() - t0
    return (len(batches) - 1) * 100 / dt, ok


def bench_stock_syslog(base, batches):
    path = bl.write_master_config(base, "stock-syslog", {})
    opts, rets = bl.load_returners(path)
    fn = rets["syslog.returner"]
    t0 = time.perf_counter()
    n = 0
    for b in batches:
        for ev in b:
            fn(ev["data"])
            n += 1
    return n / (time.perf_counter() - t0)


def bench_raw(port, pki, use_tls, batches):
    """The same kind of bytes (RFC 5424 frames of the events' JSON) written with sendall."""
    s = socket.create_connection(("127.0.0.1", port))
    if use_tls:
        ctx = ssl.create_default_context(cafile=pki["ca"])
        s = ctx.wrap_socket(s, server_hostname="localhost")
    payloads = []
    for b in batches:
        buf = bytearray()
        for ev in b:
            msg = (f"<14>1 {bl.stamp()}Z {ev['data']['id']} salt 1 event [salt@32473 "
                   f"jid=\"{ev['data']['jid']}\"] ").encode() + json.dumps(ev["data"]).encode()
            buf += str(len(msg)).encode() + b" " + msg
        payloads.append(bytes(buf))
    t0 = time.perf_counter()
    for p in payloads:
        s.sendall(p)
    dt = time.perf_counter() - t0
    s.close()
    return len(batches) * 100 / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    n_batches = 300 if args.quick else 2000
    base = tempfile.mkdtemp(prefix="fastret-bench-net-")
    pki = certs.make_pki(os.path.join(base, "pki"))
    jidgen = bl.JidGen()
    batches = make_batches(n_batches, jidgen)
    results = {}
    _, tcp_port = start_receiver(pki, False)
    _, tls_port = start_receiver(pki, True)
    common = {"batch_max_records": 2000, "spool_fsync": "interval"}
    cases = [
        ("fastret_syslog tcp", "fastret_syslog",
         {"transport": "tcp", "host": "127.0.0.1", "port": tcp_port, **common}),
        ("fastret_syslog tls", "fastret_syslog",
         {"transport": "tls", "host": "localhost", "port": tls_port, "tls_ca_file": pki["ca"],
          **common}),
        ("fastret_logstash tls", "fastret_logstash",
         {"protocol": "tls", "host": "localhost", "port": tls_port, "tls_ca_file": pki["ca"],
          **common}),
    ]
    for label, module, cfg in cases:
        rate, ok = bench_fastret(module, cfg, base, batches)
        results[label] = rate
        print(f"{label:28s} {bl.fmt_rate(rate):>12s}  delivered={ok}")
    results["stock syslog returner"] = bench_stock_syslog(base, batches[: max(50, n_batches // 10)])
    print(f"{'stock syslog returner':28s} {bl.fmt_rate(results['stock syslog returner']):>12s}"
          f"  (/dev/log {'present' if os.path.exists('/dev/log') else 'absent: messages dropped by libc'})")
    results["raw socket tcp"] = bench_raw(tcp_port, pki, False, batches)
    results["raw socket tls"] = bench_raw(tls_port, pki, True, batches)
    print(f"{'raw socket tcp':28s} {bl.fmt_rate(results['raw socket tcp']):>12s}")
    print(f"{'raw socket tls':28s} {bl.fmt_rate(results['raw socket tls']):>12s}")
    tls = results["fastret_syslog tls"]
    ratios = {
        "tls vs stock syslog": tls / results["stock syslog returner"],
        "tls vs raw tls": tls / results["raw socket tls"],
        "tcp vs raw tcp": results["fastret_syslog tcp"] / results["raw socket tcp"],
    }
    print()
    for k, v in ratios.items():
        print(f"{k:28s} {bl.fmt_ratio(v):>12s}")
    print()
    print(f"target >= 100k events/s over TLS: {'met' if tls >= 100_000 else 'NOT met'}")
    print(f"target >= 5x stock syslog:        {'met' if ratios['tls vs stock syslog'] >= 5 else 'NOT met'}")
    print(f"target >= 0.5x raw socket (TLS):  {'met' if ratios['tls vs raw tls'] >= 0.5 else 'NOT met'}")
    bl.write_results(args.json, {"rates": results, "ratios": ratios})
    bl.close_fastret()


if __name__ == "__main__":
    main()
