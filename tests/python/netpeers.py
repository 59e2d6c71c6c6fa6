"""Test peers for the network sinks (plain Python, loopback only): a JSON-lines/GELF/CEF
receiver over TCP or TLS, an HTTP(S) receiver with scripted replies, a raw TCP listener that
records every byte, a stalled listener that accepts and never reads, a TLS server with any
certificate. Each runs in a thread of the test process and is stopped by close()."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time


class Receiver:
    """Accepts connections (TLS when `certfile` is given) and keeps every byte received."""

    def __init__(self, certfile=None, keyfile=None, cafile=None, require_client_cert=False,
                 read=True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.ctx = None
        if certfile:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(certfile, keyfile)
            if cafile:
                self.ctx.load_verify_locations(cafile)
                self.ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        self.read = read
        self.data = bytearray()
        self.connections = 0
        self.handshake_errors = []
        self.lock = threading.Lock()
        self.closed = False
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        if not self.read:
            return  # stalled: accept, never read
        if self.ctx:
            try:
                conn = self.ctx.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.handshake_errors.append(str(exc))
                conn.close()
                return
        self.handle(conn)

    def handle(self, conn):
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            with self.lock:
                self.data += chunk

    def lines(self, sep=b"\n"):
        with self.lock:
            parts = bytes(self.data).split(sep)
        return [p for p in parts[:-1]]

    def docs(self, sep=b"\n"):
        return [json.loads(p) for p in self.lines(sep) if p.strip()]

    def wait_docs(self, n, sep=b"\n", timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.lines(sep)) >= n:
                break
            time.sleep(0.05)
        return self.docs(sep)

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


class HttpReceiver(Receiver):
    """HTTP/1.1 server: each request's body is parsed as JSON and kept in `bodies`; replies
    come from `replies` (a list of (status, headers) used in turn; then 200)."""

    def __init__(self, replies=None, **kw):
        self.replies = list(replies or [])
        self.bodies = []
        self.requests = []
        self.times = []  # time.monotonic() at each request's arrival
        super().__init__(**kw)

    def handle(self, conn):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in
                       (line.split(":", 1) for line in lines[1:] if ":" in line)}
            length = int(headers.get("content-length", "0"))
            while len(buf) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            body, buf = buf[:length], buf[length:]
            with self.lock:
                self.requests.append((lines[0], headers))
                self.times.append(time.monotonic())
                status, extra = self.replies.pop(0) if self.replies else (200, {})
                if 200 <= status < 300:
                    self.bodies.append(json.loads(body))
            reply_body = b"ok" if status < 300 else b"no"
            hdrs = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
            conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Length: {len(reply_body)}\r\n{hdrs}\r\n"
                         .encode() + reply_body)

    def all_docs(self):
        with self.lock:
            return [d for b in self.bodies for d in b]
