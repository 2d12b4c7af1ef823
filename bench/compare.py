#!/usr/bin/env python3
"""Vestibule side by side with nginx and HAProxy, in one command.

Every proxy gets one core (CPU 0, the whole process tree pinned with taskset), the same
routing table, the same certificate and the same upstream: an nginx answering a fixed body,
on the other CPU(s) with the load generators. "direct" sends the load straight to that
upstream: the ceiling of what the load side can drive.

Scenarios (each a fresh proxy process per measurement, a warm-up, then the measured run;
rounds interleave the proxies, rotating their order; the table shows medians):

  h1          HTTP/1.1 keep-alive, small body            wrk -t1 -c50 --latency
  h1-16k      the same, 16 KiB body                      wrk -t1 -c50 --latency
  https       HTTPS keep-alive, TLS 1.3                  wrk -t1 -c50 --latency https://
  handshakes  a new TLS connection per request           wrk ... -H 'Connection: close' https://
  h2          HTTP/2 over TLS (ALPN h2)                  h2load -c10 -m100 -t1 -D
  h1-10k      h1 with 10,000 hosts, each its own backend, loaded in every proxy
  churn       h1 under load while 10 changes/s are applied (routes, endpoints, certificate),
              with a WebSocket held open across them

Besides requests/s, each proxy's own CPU time over the measured window (utime + stime of
all its processes, from /proc) gives requests per proxy-CPU-second: on a small machine the
load side (wrk and the upstream on one core) often saturates before the proxy does, and
then requests/s hide the difference that CPU time shows.

Usage: bench/compare.py [--duration 10] [--rounds 3] [--scenarios h1,https,...]
       [--proxies vestibule,nginx,haproxy,direct] [--churn-duration 60]
Results: target/compare/results.md and target/compare/results.json; configurations and
proxy logs in target/compare/work/.
"""

import argparse
import atexit
import base64
import dataclasses
import hashlib
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import socketserver
import ssl
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "compare")
WORK = os.path.join(OUT, "work")
VESTIBULE = os.path.join(ROOT, "target", "release", "vestibule")
# A second Vestibule binary (`--baseline`), measured in the same rounds as the first: the
# build before a change, to tell what the change did with the machine's drift taken out.
BASELINE = None

# Fixed ports in a range nothing else here uses, so a stray process from an earlier run is
# found (bind fails, loudly) instead of silently measured.
UPSTREAM_PORT = 19300        # on 127.0.0.1 and 127.0.0.2: two endpoints for endpoint churn
UPSTREAM_TLS_PORT = 19301    # the upstream's own HTTPS/h2 listener, for "direct"
WS_PORT = 19302
PORTS = {
    "vestibule": (19310, 19311),
    "baseline": (19313, 19314),
    "nginx": (19320, 19321),
    "haproxy": (19330, 19331),
    "direct": (UPSTREAM_PORT, UPSTREAM_TLS_PORT),
}
VESTIBULE_ADMIN_PORT = 19312
BASELINE_ADMIN_PORT = 19315

HOST = "bench.example"
BASIC_HOST = "basic.bench.example"
AUTH_URL_HOST = "authurl.bench.example"
LIMIT_HOST = "limit.bench.example"
# High enough that the load never reaches it: the scenario measures counting, not refusing.
LIMIT_RPS = 10_000_000
# "password" hashed as htpasswd does by default ($apr1$, MD5 1,000 rounds); the same file for
# nginx and the same Secret for Vestibule.
HTPASSWD = "bench:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00\n"
BASIC_CREDENTIALS = "Authorization: Basic YmVuY2g6cGFzc3dvcmQ="  # bench:password
WS_HOST = "ws.example"
NAMESPACE = "bench"
BODY = "hello from the compare.py upstream, a small fixed body\n"
BIG_BYTES = 16 * 1024
CONNECTIONS = 50
PROXY_CPU = 0
ALL_PROXIES = ["direct", "nginx", "haproxy", "vestibule", "baseline"]
SCENARIOS = ["h1", "h1-16k", "https", "handshakes", "h2", "h1-10k", "basic-auth", "auth-url",
             "rate-limit", "churn"]
TOOLS = {  # command -> Debian package
    "nginx": "nginx-light", "haproxy": "haproxy", "wrk": "wrk", "h2load": "nghttp2-client",
    "openssl": "openssl", "taskset": "util-linux", "git": "git",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def fail(msg):
    log(f"compare.py: {msg}")
    sys.exit(1)


# --- Processes: everything started here is tracked and stopped on any exit ----------------

STARTED = []


def spawn(cmd, cpus, stdout=None, stderr=None, **kw):
    """Starts cmd pinned to cpus, in its own process group (so nginx's and HAProxy's
    workers stop with their master)."""
    proc = subprocess.Popen(["taskset", "-c", cpus] + cmd, stdout=stdout, stderr=stderr,
                            stdin=subprocess.DEVNULL, start_new_session=True, **kw)
    STARTED.append(proc)
    for f in (stdout, stderr):
        if hasattr(f, "close"):
            f.close()  # the child has its own copy
    return proc


def stop(proc, sig=signal.SIGTERM, grace=5.0):
    if proc is None:
        return
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
            proc.wait(grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    # Whatever is left of its group (workers of a master that died), by the group's id.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
    if proc in STARTED:
        STARTED.remove(proc)


def stop_all():
    for proc in list(reversed(STARTED)):
        stop(proc, grace=2.0)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


# --- /proc: CPU time and memory of a process tree ----------------------------------------

def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces and parentheses: split after the last ')'.
        return f.read().rpartition(")")[2].split()


def tree(root):
    """root and all its descendants, by scanning every process's parent."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat(entry)[1]), []).append(int(entry))
            except (OSError, IndexError):
                pass
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_ticks_by_kind(root):
    """User and system CPU time of the tree, in clock ticks. The root's cutime/cstime hold the
    time of children it has already reaped (nginx and HAProxy workers retired by a reload), so
    a worker that exits inside the window is still counted."""
    user = system = 0
    for pid in tree(root):
        try:
            fields = _stat(pid)
        except OSError:
            continue
        # utime and stime (fields 14 and 15) count every thread, those gone included.
        user, system = user + int(fields[11]), system + int(fields[12])
        if pid == root:
            user, system = user + int(fields[13]), system + int(fields[14])
    return user, system


def cpu_ticks(root):
    """CPU time of the tree, in clock ticks (cpu_ticks_by_kind, both kinds)."""
    return sum(cpu_ticks_by_kind(root))


def established_to(ip, port):
    """Established TCP connections to ip:port, from /proc/net/tcp (addresses in hex, the
    IPv4 address in network order read as a little-endian word)."""
    want = f"{bytes(reversed(socket.inet_aton(ip))).hex().upper()}:{port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        return sum(1 for line in f
                   if line.split()[2] == want and line.split()[3] == "01")


def pss_kib(root):
    """Proportional set size of the tree: shared pages (nginx master and workers) are
    counted once, not once per process."""
    total = 0
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


# --- The routing table every proxy is given ------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Cert:
    name: str
    crt: str
    key: str
    pem: str        # certificate and key in one file, as HAProxy wants it
    sha256: str     # of the DER certificate, to tell which one a proxy serves


@dataclasses.dataclass(frozen=True)
class Route:
    host: str
    service: str
    endpoints: tuple   # ((ip, port), ...)
    group: str         # which manifest file it goes to, so a change rewrites one small file
    auth: str = ""     # "basic" (the HTPASSWD users) or "url" (the upstream's /auth says yes),
    #                    or "limit" (a per-client request rate, LIMIT_RPS)


@dataclasses.dataclass(frozen=True)
class Table:
    routes: tuple
    cert: Cert

    def replace_route(self, route):
        return dataclasses.replace(
            self, routes=tuple(route if r.service == route.service else r for r in self.routes))


def bench_route():
    return Route(HOST, "bench", (("127.0.0.1", UPSTREAM_PORT),), "bench")


def small_table(cert):
    upstream = (("127.0.0.1", UPSTREAM_PORT),)
    return Table((bench_route(), Route(WS_HOST, "ws", (("127.0.0.1", WS_PORT),), "ws"),
                  Route(BASIC_HOST, "basic", upstream, "auth", auth="basic"),
                  Route(AUTH_URL_HOST, "authurl", upstream, "auth", auth="url"),
                  Route(LIMIT_HOST, "limited", upstream, "auth", auth="limit")), cert)


def big_table(cert, hosts=10_000):
    # The measured host sits in the middle of the others rather than first or last, so
    # no proxy is flattered by where it lands in a list.
    others = [Route(f"h{i:05d}.{HOST}", f"h{i:05d}", (("127.0.0.1", UPSTREAM_PORT),), "table")
              for i in range(hosts - 1)]
    mid = len(others) // 2
    routes = others[:mid] + [bench_route()] + others[mid:]
    return Table(tuple(routes) + (Route(WS_HOST, "ws", (("127.0.0.1", WS_PORT),), "ws"),), cert)


def make_cert(name, key_type):
    d = os.path.join(WORK, "certs")
    os.makedirs(d, exist_ok=True)
    crt, key, pem = (os.path.join(d, f"{name}.{ext}") for ext in ("crt", "key", "pem"))
    if key_type == "ecdsa":
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    else:
        newkey = ["-newkey", "rsa:2048"]
    run(["openssl", "req", "-x509", *newkey, "-nodes", "-days", "7", "-subj", f"/CN={HOST}",
         "-addext", f"subjectAltName=DNS:{HOST},DNS:*.{HOST},DNS:{WS_HOST}",
         "-keyout", key, "-out", crt])
    with open(crt) as c, open(key) as k, open(pem, "w") as p:
        crt_text = c.read()
        p.write(crt_text + k.read())
    der = ssl.PEM_cert_to_DER_cert(crt_text)
    return Cert(name, crt, key, pem, hashlib.sha256(der).hexdigest())


def write_atomic(path, text):
    # Readers (Vestibule's file watcher above all) must never see half a file.
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# --- Load generators and their output -------------------------------------------------------

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk_cmd(url, seconds, headers=(), connections=CONNECTIONS, host=HOST):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Host: {host}"]
    for h in headers:
        cmd += ["-H", h]
    return cmd + [url]


def parse_wrk(out):
    r = {"tool_output": out}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if not m:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    r["requests"] = int(m.group(1))
    r["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        r[f"p{pct}_ms"] = parse_ms(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                  map(int, m.groups()))) if m else {
        "connect": 0, "read": 0, "write": 0, "timeout": 0}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non_2xx"] = int(m.group(1)) if m else 0
    r["errors"] = r["non_2xx"] + sum(r["socket_errors"].values())
    return r


def h2load_cmd(url, seconds, log_file=None):
    cmd = ["h2load", "-c10", "-m100", "-t1", "-D", str(seconds), "-H", f":authority: {HOST}"]
    if log_file:
        cmd += ["--log-file", log_file]
    return cmd + [url]


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[i]


def parse_h2load(out, log_file):
    r = {"tool_output": out}
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    n = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not (m and n and s):
        raise RuntimeError(f"could not read h2load's output:\n{out}")
    r["rps"] = float(m.group(2))
    done, succeeded, failed, errored, timeout = (int(n.group(i)) for i in (3, 4, 5, 6, 7))
    r["requests"] = done
    r["non_2xx"] = sum(int(s.group(i)) for i in (2, 3, 4))
    r["socket_errors"] = {"failed": failed, "errored": errored, "timeout": timeout}
    r["errors"] = r["non_2xx"] + failed + errored + timeout
    t = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    r["mean_ms"] = parse_ms(t.group(3)) if t else None
    # h2load prints no percentiles; its per-request log (start, status, microseconds) has
    # what is needed.
    durations = []
    with open(log_file) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3:
                durations.append(int(parts[2]) / 1000)
    durations.sort()
    for pct in (50, 75, 90, 99):
        r[f"p{pct}_ms"] = percentile(durations, pct)
    return r


# --- HTTP, TLS and WebSocket probes ---------------------------------------------------------

def tls_context(alpn=("http/1.1",)):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(list(alpn))
    return ctx


def get(port, host=HOST, path="/", tls=False, timeout=3, ip="127.0.0.1", headers=()):
    """(status, body, tls version, certificate sha256) or None when nothing answers."""
    try:
        if tls:
            conn = http.client.HTTPSConnection(ip, port, timeout=timeout,
                                               context=tls_context())
        else:
            conn = http.client.HTTPConnection(ip, port, timeout=timeout)
        fields = {"Host": host}
        fields.update(h.split(": ", 1) for h in headers)
        conn.request("GET", path, headers=fields)
        resp = conn.getresponse()
        body = resp.read()
        version = cert = None
        if tls:
            version = conn.sock.version()
            cert = hashlib.sha256(conn.sock.getpeercert(binary_form=True)).hexdigest()
        conn.close()
        return resp.status, body, version, cert
    except (OSError, http.client.HTTPException):
        return None


def closes_after_response(port):
    """Whether the server ends the connection after answering a Connection: close request,
    so that each request of the handshakes scenario really is a new connection."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            with tls_context().wrap_socket(raw) as s:
                s.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
                          .encode())
                while s.recv(65536):
                    pass
                return True
    except (socket.timeout, TimeoutError):
        return False
    except (OSError, ssl.SSLError):
        return True  # a reset after the response is a close too


def alpn_of(port):
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
        with tls_context(("h2", "http/1.1")).wrap_socket(raw) as s:
            return s.selected_alpn_protocol()


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def ws_read_frame(sock):
    b0, b1 = recv_exact(sock, 2)
    length = b1 & 0x7F
    if length == 126:
        length = int.from_bytes(recv_exact(sock, 2), "big")
    elif length == 127:
        length = int.from_bytes(recv_exact(sock, 8), "big")
    mask = recv_exact(sock, 4) if b1 & 0x80 else None
    payload = recv_exact(sock, length)
    if mask:
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return b0 & 0x0F, payload


def ws_frame(opcode, payload, masked):
    head = bytes([0x80 | opcode])
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


def ws_echo_server(port):
    """The WebSocket upstream (run as `compare.py --ws-echo-server PORT`): echoes every text
    and binary message, answers pings; a plain GET gets 200, for readiness checks."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            sock = self.request
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                head += chunk
            lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in lines[1:])}
            key = headers.get("sec-websocket-key")
            if not key or headers.get("upgrade", "").lower() != "websocket":
                body = b"websocket echo\n"
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n"
                             b"\r\n%s" % (len(body), body))
                return
            sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Accept: {ws_accept(key)}\r\n\r\n"
                          ).encode())
            while True:
                try:
                    opcode, payload = ws_read_frame(sock)
                except (ConnectionError, OSError):
                    return
                if opcode == 8:
                    sock.sendall(ws_frame(8, payload[:2], masked=False))
                    return
                if opcode == 9:
                    sock.sendall(ws_frame(10, payload, masked=False))
                elif opcode in (1, 2):
                    sock.sendall(ws_frame(opcode, payload, masked=False))

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    with Server(("127.0.0.1", port), Handler) as server:
        server.serve_forever()


class WsProbe(threading.Thread):
    """Holds one WebSocket open through a proxy; sends a message every second and expects
    its echo. survived: connected, and every message came back on the same connection."""

    def __init__(self, port, interval=1.0, timeout=5.0):
        super().__init__(daemon=True)
        self.port, self.interval, self.timeout = port, interval, timeout
        self.halt = threading.Event()
        self.connected = threading.Event()
        self.sent = self.echoed = 0
        self.error = None
        self.error_after_s = None
        self.max_rtt_ms = 0.0
        self.started_at = None

    def run(self):
        self.started_at = time.monotonic()
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {WS_HOST}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(1)  # byte by byte: nothing after the head may be eaten
                if not chunk:
                    raise ConnectionError("closed during the handshake")
                head += chunk
            status = head.split(b"\r\n")[0]
            if b" 101 " not in status + b" ":
                raise ConnectionError(f"handshake answered {status.decode(errors='replace')}")
            if ws_accept(key).encode() not in head:
                raise ConnectionError("wrong Sec-WebSocket-Accept")
            self.connected.set()
            n = 0
            while not self.halt.is_set():
                n += 1
                msg = f"message {n}".encode()
                sent_at = time.monotonic()
                sock.sendall(ws_frame(1, msg, masked=True))
                self.sent += 1
                while True:
                    opcode, payload = ws_read_frame(sock)
                    if opcode == 8:
                        raise ConnectionError("closed by the server")
                    if opcode in (1, 2):
                        break
                if payload != msg:
                    raise ConnectionError(f"echo {payload[:40]!r} for {msg!r}")
                self.echoed += 1
                self.max_rtt_ms = max(self.max_rtt_ms, (time.monotonic() - sent_at) * 1000)
                self.halt.wait(max(0.0, self.interval - (time.monotonic() - sent_at)))
            try:
                sock.sendall(ws_frame(8, (1000).to_bytes(2, "big"), masked=True))
            except OSError:
                pass
            sock.close()
        except (OSError, ConnectionError, ValueError) as e:
            self.error = f"{type(e).__name__}: {e}"
            self.error_after_s = round(time.monotonic() - self.started_at, 1)
        finally:
            self.connected.set()  # wake a waiter even when the handshake failed

    def result(self):
        return {"survived": self.error is None and self.sent > 0 and self.sent == self.echoed,
                "sent": self.sent, "echoed": self.echoed, "error": self.error,
                "error_after_s": self.error_after_s, "max_rtt_ms": round(self.max_rtt_ms, 1)}


# --- The upstream ---------------------------------------------------------------------------

def start_upstream(load_cpus, cert):
    d = os.path.join(WORK, "upstream")
    os.makedirs(d, exist_ok=True)
    big = os.path.join(d, "16k.bin")
    with open(big, "wb") as f:
        f.write(bytes(random.Random(16).choices(b"abcdefghijklmnopqrstuvwxyz0123456789",
                                                k=BIG_BYTES)))
    head, temp = nginx_common(d, max(2, len(load_cpus.split(","))))
    body = BODY.replace("\n", "\\n")  # nginx's own escape in a quoted string
    conf = f"""{head}
http {{
{temp}
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  sendfile on;
  tcp_nopush on;
  ssl_certificate {cert.crt};
  ssl_certificate_key {cert.key};
  ssl_protocols TLSv1.2 TLSv1.3;
  server {{
    listen 127.0.0.1:{UPSTREAM_PORT} reuseport backlog=4096;
    listen 127.0.0.2:{UPSTREAM_PORT} reuseport backlog=4096;
    listen 127.0.0.1:{UPSTREAM_TLS_PORT} ssl http2 reuseport backlog=4096;
    default_type text/plain;
    location = /16k {{ alias {big}; default_type application/octet-stream; }}
    location / {{ return 200 "{body}"; }}
  }}
}}
"""
    write_atomic(os.path.join(d, "nginx.conf"), conf)
    err = open(os.path.join(d, "stderr.log"), "w")
    proc = spawn(["nginx", "-e", os.path.join(d, "error.log"), "-p", d, "-c",
                  os.path.join(d, "nginx.conf")], load_cpus, stdout=err, stderr=err)
    ws_log = open(os.path.join(WORK, "ws-echo.log"), "w")
    ws = spawn([sys.executable, os.path.abspath(__file__), "--ws-echo-server", str(WS_PORT)],
               load_cpus, stdout=ws_log, stderr=ws_log)
    deadline = time.monotonic() + 10
    while True:
        ok = [get(UPSTREAM_PORT), get(UPSTREAM_PORT, path="/16k"),
              get(UPSTREAM_TLS_PORT, tls=True), get(WS_PORT, WS_HOST),
              get(UPSTREAM_PORT, ip="127.0.0.2")]
        if all(r and r[0] == 200 for r in ok):
            if ok[0][1].decode() != BODY or len(ok[1][1]) != BIG_BYTES:
                fail("the upstream answers with the wrong body")
            return proc, ws
        if proc.poll() is not None or ws.poll() is not None or time.monotonic() > deadline:
            fail(f"the upstream did not come up; see {d}/error.log, {d}/stderr.log and "
                 f"{WORK}/ws-echo.log (is something else on ports 19300-19302?)")
        time.sleep(0.1)


def nginx_common(d, workers):
    # Running as root, workers would drop to nobody, who cannot read the work directory.
    user = "user root;" if os.geteuid() == 0 else ""
    temp = "\n".join(f"  {kind}_temp_path {d}/tmp-{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""{user}
worker_processes {workers};
worker_rlimit_nofile 16384;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
""", temp


def nginx_conf(d, h, s, table, access_log):
    """nginx.conf for `table`, one worker, on 127.0.0.1 ports `h` (HTTP) and `s` (HTTPS), with
    `access_log` as the access_log directive's arguments (`off`, or a path, the format
    `vestibule_like` and any parameters)."""
    head, temp = nginx_common(d, 1)
    upstreams, servers, zones = [], [], []
    for r in table.routes:
        # keepalive is per upstream block; every backend gets the same pool, as every
        # Service does in the other two.
        eps = " ".join(f"server {ip}:{port};" for ip, port in r.endpoints)
        upstreams.append(f"  upstream svc_{r.service} {{ {eps} keepalive 64; "
                         "keepalive_requests 1000000; }")
        auth = ""
        if r.auth == "basic":
            htpasswd = os.path.join(d, "htpasswd")
            write_atomic(htpasswd, HTPASSWD)
            auth = f'auth_basic "bench"; auth_basic_user_file {htpasswd}; '
        elif r.auth == "limit":
            # As ingress-nginx writes limit-rps: a zone per Ingress, burst = rate x 5.
            zones.append(f"  limit_req_zone $binary_remote_addr zone=z_{r.service}:5m "
                         f"rate={LIMIT_RPS}r/s;")
            auth = f"limit_req zone=z_{r.service} burst={LIMIT_RPS * 5} nodelay; "
        elif r.auth == "url":
            # As ingress-nginx writes it: an internal location the subrequest goes to.
            auth = ("auth_request /_auth; location = /_auth { internal; "
                    f"proxy_pass http://svc_{r.service}/auth; proxy_pass_request_body off; "
                    'proxy_set_header Content-Length ""; proxy_set_header X-Forwarded-Proto ""; '
                    "proxy_set_header X-Original-URL $scheme://$http_host$request_uri; "
                    "proxy_set_header X-Original-Method $request_method; } ")
        servers.append(f"  server {{ listen 127.0.0.1:{h}; listen 127.0.0.1:{s} ssl http2; "
                       f"server_name {r.host}; {auth}"
                       f"location / {{ proxy_pass http://svc_{r.service}; }} }}")
    # The access log carries what Vestibule's JSON line carries, in the same shape.
    fmt = ('{"time":"$time_iso8601","client_ip":"$remote_addr","method":"$request_method",'
           '"host":"$host","path":"$request_uri","protocol":"$server_protocol",'
           '"status":$status,"bytes_sent":$bytes_sent,"bytes_received":$request_length,'
           '"duration":$request_time,"upstream_addr":"$upstream_addr",'
           '"upstream_status":"$upstream_status",'
           '"upstream_duration":"$upstream_response_time","namespace":"bench",'
           '"ingress":"$proxy_host","service":"$proxy_host","request_id":"$request_id",'
           '"user_agent":"$http_user_agent","referer":"$http_referer"}')
    return f"""{head}
http {{
{temp}
  log_format vestibule_like escape=json '{fmt}';
  access_log {access_log};
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  server_names_hash_max_size 65536;
  server_names_hash_bucket_size 128;
  ssl_certificate {table.cert.crt};
  ssl_certificate_key {table.cert.key};
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache shared:SSL:10m;
  ssl_session_tickets on;
  map $http_upgrade $connection_upgrade {{ default upgrade; "" ""; }}
  proxy_http_version 1.1;
  proxy_set_header Host $host;
  proxy_set_header Upgrade $http_upgrade;
  proxy_set_header Connection $connection_upgrade;
  proxy_set_header X-Request-ID $request_id;
  proxy_set_header X-Real-IP $remote_addr;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Host $host;
  proxy_set_header X-Forwarded-Port $server_port;
  proxy_set_header X-Forwarded-Proto $scheme;
  server {{ listen 127.0.0.1:{h} default_server; listen 127.0.0.1:{s} ssl http2 default_server;
       return 404; }}
{chr(10).join(upstreams + zones)}
{chr(10).join(servers)}
}}
"""


# --- The proxies ----------------------------------------------------------------------------

class Proxy:
    """One proxy under test: renders a Table into its own configuration, starts on CPU 0,
    and applies a new Table while running (churn)."""

    name = ""
    label = ""

    def __init__(self, args):
        self.args = args
        self.http_port, self.https_port = PORTS[self.name]
        self.dir = os.path.join(WORK, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.access_log = None

    @property
    def root(self):
        return self.proc.pid if self.proc else None

    def logs(self):
        return []

    def write_config(self, table):
        raise NotImplementedError

    def start(self):
        raise NotImplementedError

    def apply(self, table):
        """A change while running; returns how it was applied, for the report."""
        raise NotImplementedError

    reloads = None  # reloads done during churn, for proxies that reload

    def settle(self, timeout=15):
        """Waits until the last change applied has been taken up (for a proxy that defers
        reloads)."""

    def stop(self):
        stop(self.proc)
        self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def where(self):
        return ", ".join(self.logs()) or "(no logs)"

    def wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while True:
            r = get(self.http_port)
            if r and r[0] == 200:
                return
            if not self.alive():
                fail(f"{self.name} exited before answering; logs: {self.where()}")
            if time.monotonic() > deadline:
                fail(f"{self.name} does not answer 200 for {HOST} after {timeout} s "
                     f"(last: {r[0] if r else 'no answer'}); logs: {self.where()}")
            time.sleep(0.05)

    def truncate_access_log(self):
        if self.access_log and os.path.exists(self.access_log):
            # Every proxy opened it for appending, so it can be emptied under the writer.
            os.truncate(self.access_log, 0)

    def access_log_lines(self):
        if not self.access_log or not os.path.exists(self.access_log):
            return None
        n = 0
        with open(self.access_log, "rb") as f:
            while chunk := f.read(1 << 20):
                n += chunk.count(b"\n")
        return n


class Direct(Proxy):
    name = "direct"
    label = "direct (no proxy)"

    def write_config(self, table):
        pass

    def start(self):
        pass

    def stop(self):
        pass

    def alive(self):
        return True


class Nginx(Proxy):
    name = "nginx"
    label = "nginx"

    def __init__(self, args):
        super().__init__(args)
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.access_log = os.path.join(self.dir, "access.log")

    def logs(self):
        return [os.path.join(self.dir, "error.log"), os.path.join(self.dir, "stderr.log")]

    def render(self, table):
        return nginx_conf(self.dir, self.http_port, self.https_port, table,
                          f"{self.access_log} vestibule_like buffer=64k flush=1s")

    def write_config(self, table):
        write_atomic(self.conf, self.render(table))

    def start(self):
        self.truncate_access_log()
        err = open(os.path.join(self.dir, "stderr.log"), "w")
        self.proc = spawn(["nginx", "-e", os.path.join(self.dir, "error.log"), "-p", self.dir,
                           "-c", self.conf], str(PROXY_CPU), stdout=err, stderr=err)
        self.reloads = 0

    def apply(self, table):
        self.write_config(table)
        # What `nginx -s reload` does, without starting a second nginx that parses the
        # whole configuration only to find the pid file. A HUP that arrives during a reload
        # makes the master reload again afterwards, so none is lost.
        os.kill(self.proc.pid, signal.SIGHUP)
        self.reloads = (self.reloads or 0) + 1
        return "rewrite nginx.conf, reload (SIGHUP to the master) for every change"

    def stop(self):
        # QUIT is the graceful stop that flushes the buffered access log.
        stop(self.proc, signal.SIGQUIT)
        self.proc = None


class HAProxy(Proxy):
    name = "haproxy"
    label = "HAProxy"

    def __init__(self, args):
        super().__init__(args)
        self.conf = os.path.join(self.dir, "haproxy.cfg")
        self.map = os.path.join(self.dir, "hosts.map")
        self.access_log = os.path.join(self.dir, "access.log")

    def logs(self):
        return [os.path.join(self.dir, "stderr.log"), self.access_log]

    def render(self, table):
        h, s = self.http_port, self.https_port
        backends = []
        for r in table.routes:
            servers = "\n".join(f"  server e{i} {ip}:{port}"
                                for i, (ip, port) in enumerate(r.endpoints))
            backends.append(f"backend svc_{r.service}\n{servers}\n")
        hosts = "".join(f"{r.host} svc_{r.service}\n" for r in table.routes)
        conf = f"""global
  nbthread 1
  maxconn 8000
  # No syslog daemon needed: log lines go to standard output, which is a file here.
  log stdout format raw local0 info

defaults
  mode http
  log global
  option httplog
  option dontlognull
  option http-keep-alive
  option forwardfor
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 75s
  timeout tunnel 1h

frontend fe
  bind 127.0.0.1:{h}
  bind 127.0.0.1:{s} ssl crt {table.cert.pem} alpn h2,http/1.1
  unique-id-format %[uuid()]
  http-request set-header X-Request-ID %[unique-id]
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
  http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}
  use_backend %[req.hdr(host),field(1,:),lower,map({self.map},svc_notfound)]

backend svc_notfound
  http-request return status 404

{chr(10).join(backends)}"""
        return conf, hosts

    def write_config(self, table):
        conf, hosts = self.render(table)
        write_atomic(self.map, hosts)
        write_atomic(self.conf, conf)

    def start(self):
        self.truncate_access_log()
        out = open(self.access_log, "a")
        err = open(os.path.join(self.dir, "stderr.log"), "w")
        # Master-worker mode: reloads (USR2) keep the master's pid and hand over the
        # listening sockets, the way HAProxy is reloaded in production.
        self.proc = spawn(["haproxy", "-W", "-db", "-f", self.conf], str(PROXY_CPU),
                          stdout=out, stderr=err)
        self.reloads, self.pending, self.asked_at, self.resent = 0, False, None, 0
        self.started = self.loaded = self.log_offset = 0

    def scan_log(self):
        """Reloads started and configurations loaded so far (the first load included), from
        the master's "Reloading HAProxy" and "Loading success." lines."""
        with open(os.path.join(self.dir, "stderr.log"), "rb") as f:
            f.seek(self.log_offset)
            data = f.read()
        data = data[:data.rfind(b"\n") + 1]
        self.log_offset += len(data)
        self.started += data.count(b"Reloading HAProxy")
        self.loaded += data.count(b"Loading success.")

    def apply(self, table):
        self.write_config(table)
        self.pending = True
        self.flush()
        return ("rewrite haproxy.cfg and map, reload (SIGUSR2 to the master, master-worker "
                "mode); changes made during a reload go into the next one")

    def flush(self):
        """One reload at a time, as a controller would do it. HAProxy 2.6's master drops a
        USR2 that comes just after a reload has finished (seen here: every other one is
        lost when sent at once), so a reload that has not started 0.3 s after being asked
        for is asked for again."""
        self.scan_log()
        now = time.monotonic()
        if self.asked_at is not None:
            if self.started < self.reloads:
                if now - self.asked_at > 0.3:
                    os.kill(self.proc.pid, signal.SIGUSR2)
                    self.asked_at = now
                    self.resent += 1
                return
            if self.loaded < self.reloads + 1:
                return
            self.asked_at = None
        if self.pending:
            os.kill(self.proc.pid, signal.SIGUSR2)
            self.reloads += 1
            self.asked_at = now
            self.pending = False

    def settle(self, timeout=15):
        deadline = time.monotonic() + timeout
        while (self.pending or self.asked_at is not None) and time.monotonic() < deadline:
            self.flush()
            time.sleep(0.05)


# Vestibule's IngressClass; bench/observability-pair.py uses it and `Vestibule.route_yaml` too.
INGRESS_CLASS_YAML = """apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: vestibule}
spec: {controller: vestibule.dev/ingress-controller}
"""


class Vestibule(Proxy):
    name = "vestibule"
    label = "Vestibule"
    admin_port = VESTIBULE_ADMIN_PORT

    @staticmethod
    def binary():
        return VESTIBULE

    def __init__(self, args):
        super().__init__(args)
        self.manifests = os.path.join(self.dir, "manifests")
        os.makedirs(self.manifests, exist_ok=True)
        self.access_log = os.path.join(self.dir, "access.log")
        self.written = None  # file name -> content, as on disk

    def logs(self):
        return [os.path.join(self.dir, "stderr.log")]

    @staticmethod
    def route_yaml(r):
        annotations = {
            "basic": {"nginx.ingress.kubernetes.io/auth-type": "basic",
                      "nginx.ingress.kubernetes.io/auth-secret": "bench-users",
                      "nginx.ingress.kubernetes.io/auth-realm": "bench"},
            "url": {"nginx.ingress.kubernetes.io/auth-url":
                    f"http://{r.endpoints[0][0]}:{r.endpoints[0][1]}/auth"},
            "limit": {"nginx.ingress.kubernetes.io/limit-rps": str(LIMIT_RPS)},
        }.get(r.auth, {})
        meta = f"{{name: {r.service}, namespace: {NAMESPACE}"
        if annotations:
            meta += ", annotations: {" + ", ".join(f'"{k}": "{v}"'
                                                  for k, v in annotations.items()) + "}"
        meta += "}"
        eps = "\n".join(f'  - addresses: ["{ip}"]\n    conditions: {{ready: true}}'
                        for ip, _ in r.endpoints)
        # One EndpointSlice's ports apply to all its endpoints; every endpoint here shares
        # the port, and a second endpoint is a second address (127.0.0.2).
        port = r.endpoints[0][1]
        return f"""apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {meta}
spec:
  ingressClassName: vestibule
  rules:
    - host: {r.host}
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service: {{name: {r.service}, port: {{number: 80}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {r.service}, namespace: {NAMESPACE}}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {r.service}-1
  namespace: {NAMESPACE}
  labels: {{kubernetes.io/service-name: {r.service}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
{eps}
"""

    def render(self, table):
        files = {"class.yaml": INGRESS_CLASS_YAML}
        with open(table.cert.crt) as c, open(table.cert.key) as k:
            crt, key = c.read(), k.read()
        indent = lambda text: "".join(f"    {line}\n" for line in text.splitlines())
        files["tls.yaml"] = (f"apiVersion: v1\nkind: Secret\nmetadata: {{name: bench-tls, "
                             f"namespace: {NAMESPACE}}}\ntype: kubernetes.io/tls\nstringData:\n"
                             f"  tls.crt: |\n{indent(crt)}  tls.key: |\n{indent(key)}")
        files["users.yaml"] = (f"apiVersion: v1\nkind: Secret\nmetadata: {{name: bench-users, "
                               f"namespace: {NAMESPACE}}}\ntype: Opaque\nstringData:\n"
                               f"  auth: |\n{indent(HTPASSWD)}")
        groups = {}
        for r in table.routes:
            groups.setdefault(r.group, []).append(self.route_yaml(r))
        for group, docs in groups.items():
            if len(docs) <= ROUTES_PER_FILE:
                files[f"{group}.yaml"] = "---\n".join(docs)
                continue
            for n in range(0, len(docs), ROUTES_PER_FILE):
                files[f"{group}-{n // ROUTES_PER_FILE:03d}.yaml"] = \
                    "---\n".join(docs[n:n + ROUTES_PER_FILE])
        return files

    def write_config(self, table):
        files = self.render(table)
        if self.written is None:
            self.written = {}
            for name in os.listdir(self.manifests):
                with open(os.path.join(self.manifests, name)) as f:
                    self.written[name] = f.read()
        for name in set(self.written) - set(files):
            os.unlink(os.path.join(self.manifests, name))
            del self.written[name]
        for name, text in files.items():
            if self.written.get(name) != text:
                write_atomic(os.path.join(self.manifests, name), text)
                self.written[name] = text

    def start(self):
        self.truncate_access_log()
        out = open(self.access_log, "a")
        err = open(os.path.join(self.dir, "stderr.log"), "w")
        self.proc = spawn(
            [self.binary(), "run", "--manifests", self.manifests, "--worker-threads", "1",
             "--access-log", "json", "--metrics", "true", "--log-level", "warn",
             "--shutdown-grace-period", "1s",
             "--default-ssl-certificate", f"{NAMESPACE}/bench-tls",
             "--http-addr", f"127.0.0.1:{self.http_port}",
             "--https-addr", f"127.0.0.1:{self.https_port}",
             "--admin-addr", f"127.0.0.1:{self.admin_port}"],
            str(PROXY_CPU), stdout=out, stderr=err)

    def wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while (get(self.admin_port, "admin", "/readyz") or [None])[0] != 200:
            if not self.alive():
                fail(f"{self.name} exited before it was ready; logs: {self.where()}")
            if time.monotonic() > deadline:
                fail(f"{self.name} not ready after {timeout} s; logs: {self.where()}")
            time.sleep(0.05)
        super().wait_ready(max(1, deadline - time.monotonic()))

    def apply(self, table):
        self.write_config(table)
        return "write the changed manifest file (temporary file renamed into place)"


# Vestibule's YAML reader takes at most 1,024 documents from one file; a route is three.
ROUTES_PER_FILE = 300

class Baseline(Vestibule):
    """Another build of Vestibule (`--baseline PATH`), configured exactly as the first."""
    name = "baseline"
    label = "Vestibule (baseline)"
    admin_port = BASELINE_ADMIN_PORT

    @staticmethod
    def binary():
        return BASELINE


PROXY_CLASSES = {"direct": Direct, "nginx": Nginx, "haproxy": HAProxy, "vestibule": Vestibule,
                 "baseline": Baseline}


# --- Scenarios ------------------------------------------------------------------------------

@dataclasses.dataclass
class Scenario:
    name: str
    what: str
    table: str          # "small" or "10k"
    tls: bool = False
    path: str = "/"
    tool: str = "wrk"
    headers: tuple = ()
    unit: str = "req"   # what one "request" counted by the tool is
    host: str = HOST


SCENARIO_DEFS = {
    "h1": Scenario("h1", "HTTP/1.1 keep-alive, small body", "small"),
    "h1-16k": Scenario("h1-16k", "HTTP/1.1 keep-alive, 16 KiB body", "small", path="/16k"),
    "https": Scenario("https", "HTTPS keep-alive (TLS 1.3), small body", "small", tls=True),
    "handshakes": Scenario("handshakes", "new TLS 1.3 connection per request", "small",
                           tls=True, headers=("Connection: close",), unit="conn"),
    "h2": Scenario("h2", "HTTP/2 over TLS, 10 connections x 100 streams", "small", tls=True,
                   tool="h2load"),
    "h1-10k": Scenario("h1-10k", "h1 with 10,000 hosts loaded", "10k"),
    "basic-auth": Scenario("basic-auth", "h1 with basic auth ($apr1$ htpasswd)", "small",
                           headers=(BASIC_CREDENTIALS,), host=BASIC_HOST),
    "auth-url": Scenario("auth-url", "h1 with external auth (the upstream says yes)", "small",
                         host=AUTH_URL_HOST),
    "rate-limit": Scenario("rate-limit", "h1 with a per-client request rate (never reached)",
                           "small", host=LIMIT_HOST),
}

# Scenarios a proxy is not configured for here (HAProxy has no htpasswd or auth_request).
UNSUPPORTED = {"haproxy": {"basic-auth", "auth-url", "rate-limit"}}


def load_cmd(sc, proxy, seconds, log_file=None):
    port = proxy.https_port if sc.tls else proxy.http_port
    url = f"{'https' if sc.tls else 'http'}://127.0.0.1:{port}{sc.path}"
    if sc.tool == "h2load":
        return h2load_cmd(url, seconds, log_file)
    return wrk_cmd(url, seconds, sc.headers, host=sc.host)


def run_load(sc, proxy, seconds, load_cpus):
    log_file = os.path.join(WORK, "h2load-requests.tsv") if sc.tool == "h2load" else None
    cmd = ["taskset", "-c", load_cpus] + load_cmd(sc, proxy, seconds, log_file)
    # Tracked like the proxies, so an interrupted run does not leave the load running.
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    STARTED.append(p)
    out, err = p.communicate(timeout=seconds + 120)
    STARTED.remove(p)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{out}{err}")
    if sc.tool == "h2load":
        r = parse_h2load(out, log_file)
        os.unlink(log_file)
        return r
    return parse_wrk(out)


def check_scenario(sc, proxy, table, load_cpus):
    """Fails loudly unless the proxy serves this scenario's request as the upstream would."""
    where = f"logs: {proxy.where()}"
    port = proxy.https_port if sc.tls else proxy.http_port
    # Connection: close would take the socket, and its TLS facts, away before they are read.
    headers = tuple(h for h in sc.headers if not h.lower().startswith("connection:"))
    r = get(port, host=sc.host, path=sc.path, tls=sc.tls, headers=headers)
    if not r or r[0] != 200:
        fail(f"{proxy.name}: GET {sc.path} for {sc.host} ({sc.name}) answered "
             f"{r[0] if r else 'nothing'}; {where}")
    if sc.name == "basic-auth" and proxy.name != "direct":
        denied = get(port, host=sc.host, path=sc.path)
        if not denied or denied[0] != 401:
            fail(f"{proxy.name}: {sc.host} without credentials answered "
                 f"{denied[0] if denied else 'nothing'}, not 401; {where}")
    status, body, version, _ = r
    if sc.path == "/16k" and len(body) != BIG_BYTES:
        fail(f"{proxy.name}: /16k gave {len(body)} bytes, not {BIG_BYTES}; {where}")
    if sc.path == "/" and body.decode(errors="replace") != BODY:
        fail(f"{proxy.name}: GET / did not return the upstream's body: {body[:200]!r}; {where}")
    if sc.tls and version != "TLSv1.3":
        fail(f"{proxy.name}: negotiated {version}, not TLS 1.3; {where}")
    if sc.tls and r[3] != table.cert.sha256:
        fail(f"{proxy.name}: serves another certificate than {table.cert.crt}; {where}")
    if "Connection: close" in sc.headers and not closes_after_response(proxy.https_port):
        fail(f"{proxy.name}: kept the connection open after Connection: close; {where}")
    if sc.tool == "h2load":
        if alpn_of(proxy.https_port) != "h2":
            fail(f"{proxy.name}: ALPN did not select h2; {where}")
        url = f"https://127.0.0.1:{proxy.https_port}/"
        p = subprocess.run(["taskset", "-c", load_cpus, "h2load", "-n10", "-c1",
                            "-H", f":authority: {HOST}", url], capture_output=True, text=True)
        if "10 2xx" not in p.stdout:
            fail(f"{proxy.name}: 10 HTTP/2 requests did not all get 2xx:\n{p.stdout}; {where}")
    if sc.table == "10k" and proxy.name != "direct":
        # The table is really loaded: hosts at both ends of it answer, a stranger does not.
        for host in (table.routes[0].host, table.routes[-2].host):
            r = get(proxy.http_port, host)
            if not r or r[0] != 200:
                fail(f"{proxy.name}: {host} answered {r[0] if r else 'nothing'}; {where}")
        r = get(proxy.http_port, "nobody.example")
        if not r or r[0] != 404:
            fail(f"{proxy.name}: an unknown host answered {r[0] if r else 'nothing'}, "
                 f"not 404; {where}")


def measure(sc, proxy, table, args):
    proxy.write_config(table)
    started = time.monotonic()
    proxy.start()
    try:
        proxy.wait_ready()
        ready_s = round(time.monotonic() - started, 2)
        check_scenario(sc, proxy, table, args.load_cpus)
        run_load(sc, proxy, args.warmup, args.load_cpus)
        proxy.truncate_access_log()
        root = proxy.root
        before = cpu_ticks(root) if root else None
        started = time.monotonic()
        r = run_load(sc, proxy, args.duration, args.load_cpus)
        r["wall_s"] = round(time.monotonic() - started, 3)
        r["start_to_200_s"] = ready_s
        if root:
            if not proxy.alive():
                fail(f"{proxy.name} died during the measurement; logs: {proxy.where()}")
            r["cpu_s"] = (cpu_ticks(root) - before) / CLK_TCK
            r["cpu_share"] = round(r["cpu_s"] / r["wall_s"], 3)
            r["req_per_cpu_s"] = round(r["requests"] / r["cpu_s"], 1) if r["cpu_s"] else None
            r["pss_mib"] = round(pss_kib(root) / 1024, 1)
        else:
            r.update(cpu_s=None, cpu_share=None, req_per_cpu_s=None, pss_mib=None)
    finally:
        proxy.stop()
    lines = proxy.access_log_lines()
    r["access_log_lines"] = lines
    if proxy.access_log and os.path.exists(proxy.access_log):
        with open(proxy.access_log, "rb") as f:
            # HAProxy makes its standard output non-blocking, which drops O_APPEND: after
            # the truncation its file starts with a hole of zero bytes (no newlines, so the
            # count above is right).
            head = f.read(1 << 16).lstrip(b"\0")
            r["access_log_sample"] = head.split(b"\n")[0].decode(errors="replace")
        os.truncate(proxy.access_log, 0)  # can be hundreds of MB; the count is what matters
    return r


# --- Churn ----------------------------------------------------------------------------------

def churn(proxy, table, certs, args):
    """h1 under full load while changes are applied at a steady rate; a WebSocket is held
    open across them."""
    proxy.write_config(table)
    proxy.start()
    kinds = ("route", "endpoints", "certificate")
    result = {"changes": {k: 0 for k in kinds}}
    try:
        proxy.wait_ready()
        check_scenario(SCENARIO_DEFS["h1"], proxy, table, args.load_cpus)
        r = get(proxy.http_port, WS_HOST)
        if not r or r[0] != 200:
            fail(f"{proxy.name}: {WS_HOST} answered {r[0] if r else 'nothing'}; "
                 f"logs: {proxy.where()}")
        run_load(SCENARIO_DEFS["h1"], proxy, args.warmup, args.load_cpus)
        ws = WsProbe(proxy.http_port)
        ws.start()
        ws.connected.wait(10)
        if ws.error:
            fail(f"{proxy.name}: the WebSocket did not open: {ws.error}; logs: {proxy.where()}")
        root = proxy.root
        before = cpu_ticks(root)
        url = f"http://127.0.0.1:{proxy.http_port}/"
        wrk = subprocess.Popen(["taskset", "-c", args.load_cpus]
                               + wrk_cmd(url, args.churn_duration),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        STARTED.append(wrk)
        started = time.monotonic()
        extra = None            # the Route added by the last route change, if it is in
        removed = None          # the host the last route change took out
        second_endpoint = False
        second_used = False     # whether the proxy ever connected to the added endpoint
        cert_i = 0
        apply_ms, processes = [], []
        i = 0
        how = None
        while wrk.poll() is None:
            delay = started + i / args.churn_rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
                if wrk.poll() is not None:
                    break
            kind = kinds[i % len(kinds)]
            if kind == "route":
                if extra:
                    table = dataclasses.replace(
                        table, routes=tuple(r for r in table.routes if r is not extra))
                    removed, extra = extra.host, None
                else:
                    extra = Route(f"churn-{i}.example", f"churn-{i}",
                                  (("127.0.0.1", UPSTREAM_PORT),), f"churn-{i}")
                    table = dataclasses.replace(table, routes=table.routes + (extra,))
            elif kind == "endpoints":
                second_endpoint = not second_endpoint
                eps = (("127.0.0.1", UPSTREAM_PORT),)
                if second_endpoint:
                    eps += (("127.0.0.2", UPSTREAM_PORT),)
                table = table.replace_route(dataclasses.replace(bench_route(), endpoints=eps))
            else:
                cert_i = (cert_i + 1) % len(certs)
                table = dataclasses.replace(table, cert=certs[cert_i])
            if second_endpoint and established_to("127.0.0.2", UPSTREAM_PORT):
                second_used = True
            t = time.monotonic()
            how = proxy.apply(table)
            apply_ms.append((time.monotonic() - t) * 1000)
            result["changes"][kind] += 1
            i += 1
            if i % args.churn_rate == 0:
                processes.append(len(tree(root)))
        out, _ = wrk.communicate()
        STARTED.remove(wrk)
        cpu_s = (cpu_ticks(root) - before) / CLK_TCK
        processes_end = len(tree(root))  # while the WebSocket still holds its old worker
        wall = time.monotonic() - started
        r = parse_wrk(out)
        # The final configuration must be the one served: a proxy that fell behind or
        # rejected a reload would otherwise look good for doing nothing.
        proxy.settle()
        time.sleep(2)
        final = {}
        if extra:
            probe = get(proxy.http_port, extra.host)
            final["route"] = f"{extra.host} -> {probe[0] if probe else 'no answer'} (want 200)"
            final_ok = bool(probe and probe[0] == 200)
        else:
            probe = get(proxy.http_port, removed)
            final["route"] = f"{removed} (removed) -> {probe[0] if probe else 'no answer'} " \
                             "(want 404)"
            final_ok = bool(probe and probe[0] == 404)
        probe = get(proxy.https_port, tls=True)
        served = probe[3] if probe else None
        final["certificate"] = "the last one" if served == certs[cert_i].sha256 else \
            f"not the last one ({'no answer' if not probe else served[:12]})"
        final_ok = final_ok and served == certs[cert_i].sha256
        final["endpoints"] = "the added address was used" if second_used else \
            "the added address (127.0.0.2) was never connected to"
        final_ok = final_ok and second_used
        ws.halt.set()
        ws.join(10)
        result.update(
            applied_how=how, reloads=proxy.reloads,
            reload_signals_resent=getattr(proxy, "resent", None), seconds=round(wall, 1), requests=r["requests"], rps=r["rps"],
            non_2xx=r["non_2xx"], socket_errors=r["socket_errors"], errors=r["errors"],
            p50_ms=r["p50_ms"], p99_ms=r["p99_ms"], cpu_s=cpu_s,
            req_per_cpu_s=round(r["requests"] / cpu_s, 1) if cpu_s else None,
            apply_ms_median=round(statistics.median(apply_ms), 2) if apply_ms else None,
            processes_max=max(processes) if processes else None,
            processes_end=processes_end, pss_mib_end=round(pss_kib(root) / 1024, 1),
            final=final, final_ok=final_ok, websocket=ws.result(), tool_output=out)
        if not proxy.alive():
            result["died"] = True
    finally:
        proxy.stop()
    if os.path.exists(proxy.access_log):
        os.truncate(proxy.access_log, 0)
    return result


# --- Report ---------------------------------------------------------------------------------

def med(rounds, key):
    values = [r[key] for r in rounds if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(entry):
    """Medians and ratios from the rounds so far, so an interrupted run still reports."""
    for data in entry["proxies"].values():
        rounds = data["rounds"]
        if not rounds:
            continue
        m = {k: med(rounds, k) for k in ("rps", "req_per_cpu_s", "cpu_share", "p50_ms",
                                          "p99_ms", "pss_mib")}
        m["errors"] = sum(r["errors"] for r in rounds)
        logged = [r["access_log_lines"] / r["requests"] for r in rounds
                  if r.get("access_log_lines") is not None and r["requests"]]
        m["log_lines_per_request"] = statistics.median(logged) if logged else None
        data["median"] = m
    ratios = {}
    v = entry["proxies"].get("vestibule", {}).get("median")
    for other in ("nginx", "haproxy", "baseline"):
        o = entry["proxies"].get(other, {}).get("median")
        if v and o:
            ratios[f"{other}_rps"] = fmt_ratio(v["rps"], o["rps"])
            ratios[f"{other}_cpu"] = fmt_ratio(v["req_per_cpu_s"], o["req_per_cpu_s"])
    # Against the baseline, round by round too: the two ran minutes apart at most, so each
    # round's ratio shares that moment's machine, and their spread is the run's noise.
    pairs = [(a["req_per_cpu_s"], b["req_per_cpu_s"])
             for a, b in zip(entry["proxies"].get("vestibule", {}).get("rounds", []),
                             entry["proxies"].get("baseline", {}).get("rounds", []))
             if a.get("req_per_cpu_s") and b.get("req_per_cpu_s")]
    if pairs:
        per_round = sorted(a / b for a, b in pairs)
        ratios["baseline_cpu_rounds"] = [round(r, 3) for r in per_round]
        ratios["baseline_cpu_range"] = f"{per_round[0]:.2f}–{per_round[-1]:.2f}"
    entry["ratios"] = ratios


def fmt_num(v):
    return "–" if v is None else f"{v:,.0f}"


def fmt_ms(v):
    if v is None:
        return "–"
    return f"{v * 1000:.0f} µs" if v < 1 else f"{v:.2f} ms"


def fmt_ratio(a, b):
    return "–" if not a or not b else f"{a / b:.2f}"


def report(results, args):
    lines = ["# Vestibule, nginx and HAProxy side by side", ""]
    if not results["complete"]:
        lines += ["**Incomplete run: it stopped before the end; figures below are partial.**", ""]
    meta = results["meta"]
    lines += [f"Commit `{meta['commit'][:12]}`{' (dirty)' if meta['dirty'] else ''}, "
              f"{meta['cpu']} ({meta['cpus']} CPUs), {meta['date']}. "
              f"Proxy on CPU {PROXY_CPU}, wrk/h2load and the upstream on CPU {args.load_cpus}. "
              f"Medians of {args.rounds} round(s) of {args.duration} s after {args.warmup} s "
              f"of warm-up, proxy order rotated each round. Certificate: {args.key}.", ""]
    if results["scenarios"]:
        lines += ["| scenario | proxy | req/s | req per proxy-CPU-s | proxy CPU | p50 | p99 "
                  "| errors | access log lines/req | PSS MiB |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, sc in results["scenarios"].items():
            for p in args.proxies:
                m = sc["proxies"].get(p, {}).get("median")
                if not m:
                    continue
                share = "–" if m["cpu_share"] is None else f"{m['cpu_share'] * 100:.0f}%"
                log_ratio = "–" if m["log_lines_per_request"] is None else \
                    f"{m['log_lines_per_request']:.2f}"
                lines.append(
                    f"| {name} | {PROXY_CLASSES[p].label} | {fmt_num(m['rps'])} | "
                    f"{fmt_num(m['req_per_cpu_s'])} | {share} | {fmt_ms(m['p50_ms'])} | "
                    f"{fmt_ms(m['p99_ms'])} | {m['errors']} | {log_ratio} | "
                    f"{'–' if m['pss_mib'] is None else round(m['pss_mib'], 1)} |")
        lines += ["", "Ratios (above 1: Vestibule does better):", "",
                  "| scenario | Vestibule/nginx req/s | Vestibule/nginx req per CPU-s "
                  "| Vestibule/HAProxy req/s | Vestibule/HAProxy req per CPU-s |",
                  "|---|---:|---:|---:|---:|"]
        for name, sc in results["scenarios"].items():
            rt = sc.get("ratios", {})
            lines.append(f"| {name} | {rt.get('nginx_rps', '–')} | {rt.get('nginx_cpu', '–')} | "
                         f"{rt.get('haproxy_rps', '–')} | {rt.get('haproxy_cpu', '–')} |")
        lines += [""]
        if "baseline" in args.proxies:
            lines += [f"Against the baseline build ({BASELINE}), above 1: this build does "
                      "better:", "",
                      "| scenario | req/s | req per CPU-s (medians) | per round, lowest–highest |",
                      "|---|---:|---:|---:|"]
            for name, sc in results["scenarios"].items():
                rt = sc.get("ratios", {})
                lines.append(f"| {name} | {rt.get('baseline_rps', '–')} | "
                             f"{rt.get('baseline_cpu', '–')} | "
                             f"{rt.get('baseline_cpu_range', '–')} |")
            lines += [""]
    if results.get("churn"):
        lines += [f"Churn: h1 under load (wrk -t1 -c{CONNECTIONS}, {args.churn_duration} s) "
                  f"with {args.churn_rate} changes/s rotating route (add/remove an Ingress), "
                  "endpoints (a second address in the EndpointSlice) and certificate "
                  "(the default TLS Secret replaced), one WebSocket held open through the "
                  "proxy with a message echoed every second.", "",
                  "| proxy | changes | req/s | req per proxy-CPU-s | failed: non-2xx "
                  "| failed: socket errors c/r/w/t | p99 | WebSocket | final config served "
                  "| processes max/end |",
                  "|---|---:|---:|---:|---:|---:|---:|---|---|---:|"]
        for p, c in results["churn"].items():
            se = c["socket_errors"]
            ws = c["websocket"]
            reloads = "" if c.get("reloads") is None else f" ({c['reloads']} reloads)"
            wstext = (f"survived ({ws['echoed']}/{ws['sent']} echoed, max {ws['max_rtt_ms']} ms)"
                      if ws["survived"] else
                      f"**lost** after {ws['error_after_s']} s ({ws['echoed']}/{ws['sent']}: "
                      f"{ws['error']})")
            lines.append(
                f"| {PROXY_CLASSES[p].label} | {sum(c['changes'].values())}{reloads} "
                f"| {fmt_num(c['rps'])} "
                f"| {fmt_num(c['req_per_cpu_s'])} | {c['non_2xx']} | "
                f"{se['connect']}/{se['read']}/{se['write']}/{se['timeout']} | "
                f"{fmt_ms(c['p99_ms'])} | {wstext} | "
                f"{'yes' if c['final_ok'] else 'NO: ' + '; '.join(c['final'].values())} | "
                f"{c['processes_max']}/{c['processes_end']} |")
        lines += ["", "How changes were applied: " + "; ".join(
            f"{PROXY_CLASSES[p].label}: {c['applied_how']}" for p, c in results["churn"].items())
            + ".", ""]
    lines += ["Notes:", ""]
    lines += [f"- {n}" for n in results["notes"]]
    if results["warnings"]:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in results["warnings"]]
    return "\n".join(lines) + "\n"


NOTES = [
    "Logging, the measured configuration: Vestibule with metrics on and `--access-log json` "
    "(standard output to a file); nginx with a JSON access log of the same fields to a file, "
    "`buffer=64k flush=1s`; HAProxy with `option httplog` to standard output, which is a "
    "file (`log stdout`: one write per line, no syslog daemon involved). nginx and HAProxy "
    "keep no request metrics beyond that.",
    "Same routing in all three: Host routing to one backend per host (an upstream block with "
    "`keepalive 64`, a HAProxy backend behind a host map with `http-reuse always`, an Ingress "
    "with its own Service and EndpointSlice), HTTP/1.1 to the upstream, the X-Forwarded-*, "
    "X-Real-IP and X-Request-ID headers set, one certificate as the default for every host. "
    "nginx: 1 worker; HAProxy: nbthread 1; Vestibule: --worker-threads 1. Each process tree "
    "is pinned whole to the proxy CPU.",
    "Latency is closed-loop: wrk and h2load keep a fixed number of requests in flight, so "
    "p50/p99 compare the proxies at the same concurrency, not at the same request rate; a "
    "faster proxy serves more requests at that concurrency and its percentiles are not "
    "those of the slower one's load.",
    "req per proxy-CPU-s is requests divided by the CPU time (user + system, all processes "
    "and threads) the proxy used over the measured window; it is the figure to compare when "
    "the proxy used less than its whole core (proxy CPU below ~90%): the load side, on "
    "one core with the upstream, was then the bottleneck.",
    "handshakes: wrk with `Connection: close` over HTTPS, so each request is a new TCP "
    "connection and full TLS 1.3 handshake (wrk does not resume sessions); req/s are "
    "connections/s. wrk's latency there starts after the handshake.",
    "h2: h2load -c10 -m100 -t1; p50/p99 from its per-request log (--log-file).",
    "Churn: nginx is reloaded for every change, as ingress-nginx did before it moved endpoint "
    "updates into Lua (nginx-light has no Lua); HAProxy is reloaded in master-worker mode, one "
    "reload at a time, the changes made during a reload going into the next one (its master "
    "drops a USR2 that arrives just after a reload; production HAProxy controllers change "
    "endpoints through the runtime API instead). Vestibule reads the changed manifest file. "
    "Old nginx and HAProxy workers that still hold the WebSocket stay alive after a reload: "
    "'processes' counts them. 'final config served' checks the last route state, the last "
    "certificate, and that the proxy connected to the endpoint the changes added.",
]


def environment():
    def first_line(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return None
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git("rev-parse", "HEAD").stdout.strip() or "unknown",
        "dirty": git("status", "--porcelain", "--untracked-files=no").stdout.strip() != "",
        "cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
        "versions": {
            "vestibule": first_line([VESTIBULE, "--version"]),
            "baseline": BASELINE and first_line([BASELINE, "--version"]),
            "nginx": first_line(["nginx", "-v"]),
            "haproxy": first_line(["haproxy", "-v"]),
            "wrk": first_line(["wrk", "-v"]),
            "h2load": first_line(["h2load", "--version"]),
            "openssl": first_line(["openssl", "version"]),
            "python": platform.python_version(),
        },
    }


# --- Setup ----------------------------------------------------------------------------------

def ensure_tools():
    missing = [cmd for cmd in TOOLS if shutil.which(cmd) is None]
    if not missing:
        return
    packages = sorted({TOOLS[c] for c in missing})
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        fail(f"missing {', '.join(missing)}; install the Debian packages "
             f"{' '.join(packages)} (or their equivalents) and run again")
    log(f"installing {' '.join(packages)} (missing: {', '.join(missing)})...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=False, env=env)
    p = subprocess.run(["apt-get", "install", "-y", *packages], env=env)
    still = [cmd for cmd in TOOLS if shutil.which(cmd) is None]
    if p.returncode != 0 or still:
        fail(f"could not install {' '.join(packages)}; still missing: {', '.join(still)}")


def build():
    log("building vestibule (release)...")
    p = subprocess.run(["cargo", "build", "--release", "--locked", "-p", "vestibule",
                        "-p", "vestibule-testkit", "--bins"], cwd=ROOT)
    if p.returncode != 0:
        fail("cargo build failed")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help=f"comma list out of {','.join(SCENARIOS)}")
    ap.add_argument("--proxies", default=",".join(ALL_PROXIES),
                    help=f"comma list out of {','.join(ALL_PROXIES)}")
    ap.add_argument("--churn-duration", type=int, default=60, help="seconds of churn")
    ap.add_argument("--churn-rate", type=int, default=10, help="changes per second")
    ap.add_argument("--key", choices=("rsa", "ecdsa"), default="rsa",
                    help="certificate key: RSA-2048 (default) or ECDSA P-256")
    ap.add_argument("--no-build", action="store_true",
                    help="use target/release/vestibule as it is")
    ap.add_argument("--vestibule", metavar="PATH",
                    help="measure this vestibule binary (implies --no-build); bench/pgo.sh "
                         "trains its instrumented build with it")
    ap.add_argument("--baseline", metavar="PATH",
                    help="also measure this second vestibule binary (the build before a "
                         "change), in the same rounds, and report this build against it")
    ap.add_argument("--out", metavar="DIR", default=OUT,
                    help="where results, configurations and logs go (default target/compare)")
    ap.add_argument("--ws-echo-server", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ws_echo_server:
        return args
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.proxies = [p for p in ALL_PROXIES if p in args.proxies.split(",")]
    for s in args.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s}")
    if not args.proxies:
        ap.error("no known proxy in --proxies")
    if args.duration < 1 or args.rounds < 1 or args.warmup < 1 or args.churn_duration < 2 \
            or args.churn_rate < 1:
        ap.error("durations, rounds and rate must be positive")
    return args


def main():
    global VESTIBULE, BASELINE, OUT, WORK
    args = parse_args()
    if args.ws_echo_server:
        ws_echo_server(args.ws_echo_server)
        return
    if args.vestibule:
        VESTIBULE = os.path.abspath(args.vestibule)
        args.no_build = True
    if args.baseline:
        BASELINE = os.path.abspath(args.baseline)
        if "baseline" not in args.proxies:
            args.proxies.append("baseline")
        if not os.access(BASELINE, os.X_OK):
            fail(f"{BASELINE} is not an executable")
    else:
        args.proxies = [p for p in args.proxies if p != "baseline"]
    OUT = os.path.abspath(args.out)
    WORK = os.path.join(OUT, "work")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or PROXY_CPU not in cpus:
        fail(f"needs CPU {PROXY_CPU} and at least one more (have {cpus})")
    args.load_cpus = ",".join(str(c) for c in cpus if c != PROXY_CPU)

    ensure_tools()
    if not args.no_build:
        build()
    if "vestibule" in args.proxies and not os.access(VESTIBULE, os.X_OK):
        fail(f"{VESTIBULE} is missing; build it or drop --no-build")

    atexit.register(stop_all)
    # SIGTERM and SIGHUP end the run through the same path as Ctrl-C: finally, then atexit.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: sys.exit(128 + s))
    # Everything started from here inherits the load CPUs; proxies are moved to CPU 0.
    os.sched_setaffinity(0, [c for c in cpus if c != PROXY_CPU])

    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    results = {"meta": environment(), "settings": {
        "duration_s": args.duration, "rounds": args.rounds, "warmup_s": args.warmup,
        "connections": CONNECTIONS, "proxy_cpu": PROXY_CPU, "load_cpus": args.load_cpus,
        "key": args.key, "churn_duration_s": args.churn_duration,
        "churn_rate_per_s": args.churn_rate, "upstream_body_bytes": len(BODY),
        "proxies": args.proxies}, "scenarios": {}, "churn": {}, "notes": NOTES,
        "warnings": [], "complete": False}
    try:
        log("generating certificates...")
        cert = make_cert("bench", args.key)
        certs = [cert] + [make_cert(f"churn-{i}", args.key) for i in range(3)] \
            if "churn" in args.scenarios else [cert]
        upstream, ws_server = start_upstream(args.load_cpus, cert)
        proxies = {p: PROXY_CLASSES[p](args) for p in args.proxies}
        tables = {"small": small_table(cert)}
        if "h1-10k" in args.scenarios:
            tables["10k"] = big_table(cert)

        todo = [s for s in args.scenarios if s != "churn"]
        each = args.warmup + args.duration + 2
        log(f"{len(todo)} scenario(s) x {args.rounds} round(s) x {len(proxies)} proxies, "
            f"about {len(todo) * args.rounds * len(proxies) * each / 60:.0f} min"
            + (f", then churn {len(proxies) - ('direct' in proxies)} x {args.churn_duration} s"
               if "churn" in args.scenarios else ""))
        for name in todo:
            sc = SCENARIO_DEFS[name]
            entry = {"what": sc.what, "tool": " ".join(load_cmd(sc, proxies[args.proxies[0]],
                                                                args.duration, "LOG")),
                     "proxies": {p: {"rounds": []} for p in proxies}}
            results["scenarios"][name] = entry
            for rnd in range(args.rounds):
                order = args.proxies[rnd % len(args.proxies):] + \
                    args.proxies[:rnd % len(args.proxies)]
                for p in order:
                    if name in UNSUPPORTED.get(p, ()):
                        continue
                    r = measure(sc, proxies[p], tables[sc.table], args)
                    r["round"] = rnd + 1
                    entry["proxies"][p]["rounds"].append(r)
                    summarize(entry)
                    log(f"  {name:10} round {rnd + 1} {p:9} {r['rps']:>10,.0f} {sc.unit}/s"
                        + (f"  cpu {r['cpu_share'] * 100:3.0f}%  "
                           f"{r['req_per_cpu_s']:>9,.0f} {sc.unit}/cpu-s"
                           if r["req_per_cpu_s"] else "")
                        + f"  p99 {fmt_ms(r['p99_ms'])}  errors {r['errors']}")
                    if r["errors"]:
                        results["warnings"].append(
                            f"{name} round {rnd + 1} {p}: {r['errors']} failed requests")
                    share = r["access_log_lines"] / r["requests"] \
                        if r.get("access_log_lines") is not None and r["requests"] else None
                    if share is not None and share < 0.99:
                        results["warnings"].append(
                            f"{name} round {rnd + 1} {p}: only {share:.2f} access log lines "
                            "per request")

        if "churn" in args.scenarios:
            for p in args.proxies:
                if p == "direct":
                    continue
                log(f"  churn      {p}: {args.churn_duration} s at {args.churn_rate} changes/s...")
                c = churn(proxies[p], tables["small"], certs, args)
                results["churn"][p] = c
                ws = c["websocket"]
                log(f"  churn      {p:9} {c['rps']:>10,.0f} req/s  failed {c['errors']} "
                    f"(non-2xx {c['non_2xx']}, socket {c['socket_errors']})  websocket "
                    f"{'survived' if ws['survived'] else 'LOST: ' + str(ws['error'])}  "
                    f"final config {'served' if c['final_ok'] else 'NOT served'}")
                if not c["final_ok"]:
                    results["warnings"].append(f"churn {p}: final configuration not served: "
                                               f"{c['final']}")
        stop(upstream)
        stop(ws_server)
        results["complete"] = True
    finally:
        stop_all()
        os.makedirs(OUT, exist_ok=True)
        md = report(results, args)
        with open(os.path.join(OUT, "results.md"), "w") as f:
            f.write(md)
        with open(os.path.join(OUT, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    print(md)
    log(f"results: {OUT}/results.md and results.json; configurations and logs in {WORK}/")


if __name__ == "__main__":
    main()
