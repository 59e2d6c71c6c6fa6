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

The raw socket reference writes the same bytes fastret writes: an untimed pass of
fastret_syslog over TCP into a capturing receiver records its stream (RFC 5424 messages with
their structured data, octet-counting framing), and the reference sends that stream with
sendall() in as many writes as there are batches (the capture checks that it holds one
message per event). Rounds (--rounds) run every case once, in turn, each fastret_syslog case
right before its reference; rates are the medians of the rounds, and the TLS ratio is the
median of the rounds' ratios (each from two runs next to each other in time).

Targets: >= 100,000 events/s over TLS, >= 5x the stock syslog returner, >= half the raw
socket rate.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import ssl
import statistics
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


def fastret_runner(module, cfg, base, batches):
    """A function that runs one round of `module`'s event_return over batches[1:] and returns
    (events/s, delivered); the first batch warms up (connect, handshake) here."""
    path = bl.write_master_config(base, f"{module}-{cfg.get('transport', cfg.get('protocol'))}",
                                  {module: cfg, "event_return": module})
    opts, rets = bl.load_returners(path)
    fn = rets[f"{module}.event_return"]
    import fastret

    fn(list(batches[0]))
    fastret.native().flush(30)

    def run():
        t0 = time.perf_counter()
        for b in batches[1:]:
            fn(list(b))
        delivered = fastret.native().flush(120)
        return (len(batches) - 1) * 100 / (time.perf_counter() - t0), delivered

    return run


def capture_stream(base, batches, port_cfg):
    """The bytes fastret_syslog writes for `batches` (after the warm-up batch), as one stream:
    an untimed pass over TCP into a receiver that keeps what it reads."""
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = bytearray()

    def serve():
        c, _ = srv.accept()
        while True:
            chunk = c.recv(1 << 20)
            if not chunk:
                return
            got.extend(chunk)

    threading.Thread(target=serve, daemon=True).start()
    cfg = {**port_cfg, "transport": "tcp", "host": "127.0.0.1", "port": srv.getsockname()[1]}
    path = bl.write_master_config(base, "capture", {"fastret_syslog": cfg,
                                                    "event_return": "fastret_syslog"})
    _, rets = bl.load_returners(path)
    fn = rets["fastret_syslog.event_return"]
    import fastret

    def settle():  # until the receiver has read everything written (it goes idle)
        last, deadline = -1, time.monotonic() + 30
        while len(got) != last and time.monotonic() < deadline:
            last = len(got)
            time.sleep(0.3)

    fn(list(batches[0]))
    if not fastret.native().flush(30):
        raise RuntimeError("capture: the warm-up batch was not delivered")
    settle()
    warm = len(got)
    for b in batches[1:]:
        fn(list(b))
    if not fastret.native().flush(120):
        raise RuntimeError("capture: the events were not delivered")
    settle()
    stream = bytes(got[warm:])
    frames, pos = 0, 0  # octet counting: "<length> <message>"
    while pos < len(stream):
        space = stream.index(b" ", pos)
        pos = space + 1 + int(stream[pos:space])
        frames += 1
    expected = (len(batches) - 1) * 100
    if frames != expected or pos != len(stream):
        raise RuntimeError(f"capture: {frames} messages for {expected} events")
    return stream


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


def raw_runner(port, pki, use_tls, stream, n_events, writes):
    """A function that runs one round of the reference and returns events/s: `stream`
    (fastret's own bytes for n_events events) written with sendall() in `writes` pieces, on
    one connection opened here."""
    s = socket.create_connection(("127.0.0.1", port))
    if use_tls:
        ctx = ssl.create_default_context(cafile=pki["ca"])
        s = ctx.wrap_socket(s, server_hostname="localhost")
    step = -(-len(stream) // writes)
    pieces = [stream[i:i + step] for i in range(0, len(stream), step)]

    def run():
        t0 = time.perf_counter()
        for p in pieces:
            s.sendall(p)
        return n_events / (time.perf_counter() - t0)

    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--rounds", type=int, help="rounds per case (default 5, --quick 1)")
    args = ap.parse_args()
    n_batches = 300 if args.quick else 2000
    rounds = args.rounds or (1 if args.quick else 5)
    base = tempfile.mkdtemp(prefix="fastret-bench-net-")
    pki = certs.make_pki(os.path.join(base, "pki"))
    # The receivers are forked before the events are built: forked after, they would share
    # the events' pages, and the first pass over them (reference counts are writes) would pay
    # a page copy per page, in whichever case happens to run first.
    _, tcp_port = start_receiver(pki, False)
    _, tls_port = start_receiver(pki, True)
    jidgen = bl.JidGen()
    batches = make_batches(n_batches, jidgen)
    results = {}
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
    stream = capture_stream(base, batches, common)
    n_events = (len(batches) - 1) * 100
    print(f"{'captured fastret stream':28s} {len(stream) / n_events:9.0f} B/event")
    fastret_runners = {label: fastret_runner(module, cfg, base, batches)
                       for label, module, cfg in cases}
    raw = {label: raw_runner(port, pki, use_tls, stream, n_events, len(batches) - 1)
           for label, port, use_tls in (("raw socket tcp", tcp_port, False),
                                        ("raw socket tls", tls_port, True))}
    # Each fastret_syslog case runs right before its reference.
    runners = {"fastret_syslog tcp": fastret_runners["fastret_syslog tcp"],
               "raw socket tcp": raw["raw socket tcp"],
               "fastret_logstash tls": fastret_runners["fastret_logstash tls"],
               "fastret_syslog tls": fastret_runners["fastret_syslog tls"],
               "raw socket tls": raw["raw socket tls"]}
    # Rounds interleave the cases, so that each round's ratios compare runs made under the
    # same conditions on this shared machine; a rate is the median of its rounds.
    rates = {label: [] for label in runners}
    delivered = {label: True for label, _, _ in cases}
    round_ratio = []
    for _ in range(rounds):
        for label, run in runners.items():
            out = run()
            if isinstance(out, tuple):
                out, ok = out
                delivered[label] = delivered[label] and ok
            rates[label].append(out)
        round_ratio.append(rates["fastret_syslog tls"][-1] / rates["raw socket tls"][-1])
    for label, rs in rates.items():
        results[label] = statistics.median(rs)
        extra = f"  delivered={delivered[label]}" if label in delivered else ""
        print(f"{label:28s} {bl.fmt_rate(results[label]):>12s}{extra}  "
              f"rounds: {' '.join(bl.fmt_rate(r).strip() for r in rs)}")
    results["stock syslog returner"] = bench_stock_syslog(base, batches[: max(50, n_batches // 10)])
    print(f"{'stock syslog returner':28s} {bl.fmt_rate(results['stock syslog returner']):>12s}"
          f"  (/dev/log {'present' if os.path.exists('/dev/log') else 'absent: messages dropped by libc'})")
    print(f"{'tls vs raw tls per round':28s} {' '.join(f'{r:.2f}x' for r in round_ratio)}")
    tls = results["fastret_syslog tls"]
    ratios = {
        "tls vs stock syslog": tls / results["stock syslog returner"],
        "tls vs raw tls": statistics.median(round_ratio),
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
