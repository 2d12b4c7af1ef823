#!/usr/bin/env python3
"""A bounded soak of Vestibule: steady traffic, a configuration change every second, WebSockets
held open, hostile requests, and the process's memory and file descriptors watched throughout.

One Vestibule process (`vestibule run --manifests DIR`) serves, for --duration seconds:

  keep-alive   HTTP/1.1 keep-alive requests, plain and over TLS (wrk with a Lua script that
               checks every status and body; a Python client pool when wrk is missing)
  new conns    a stream of new connections, one request each: plain HTTP, HTTPS with TLS 1.3,
               TLS 1.2 and resumed sessions (certificate verified against the soak's own CA),
               a POST with a body, a redirect to HTTPS, a host no rule serves (404)
  HTTP/2       a burst of h2 (ALPN) or h2c (prior knowledge) requests every 20 s (h2load)
  WebSockets   several held open for the whole run (plain and TLS), a message each every few
               seconds; plus a short-lived one every 5 s
  changes      one a second, rotating: an Ingress (with its Service and EndpointSlice) added
               or removed; the endpoints of a Service changed (an upstream added or removed,
               and a removed upstream really stopped a few seconds later, as a pod would be);
               the TLS Secret of a host rotated (RSA and ECDSA certificates; one change in ten
               a broken Secret, whose last good certificate must stay served). Each change is
               checked applied through /debug/config's installed_generation, then served.
  hostile      raw-socket requests every few seconds: malformed request lines, bad chunked
               bodies, invalid hosts, oversized heads, an h2c upgrade, broken HTTP/2, plain
               text to the TLS port, a slow head dropped; and connections left silent until
               the server must close them: an unfinished head, a stopped TLS handshake,
               HTTP/2 clients that stop talking, a client that stops reading

It samples Vestibule's VmRSS and open file descriptors every 2 s. It fails (exit 1) when a
well-formed request fails, a change is not applied or not served, a WebSocket drops, a hostile
request gets anything but a 4xx or a close (or hangs), the process dies or logs a panic, RSS
after the warm-up exceeds its bound, or the descriptors do not come back to their idle count
once the load has stopped. Exit 2 is a setup error (tool missing, port taken, not ready).

Usage: bench/soak.sh [--duration 1800] [--rate 500] [--new-conn-rate 10] [--out DIR]
                    [--tolerate CASE,...]
       (SOAK_SECONDS sets the duration; VESTIBULE=path takes that binary, else it is built)
Results: target/soak/results.json; Vestibule's log and the manifests in target/soak/.
"""

import argparse
import base64
import dataclasses
import hashlib
import http.client
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no bench/__pycache__ left behind
import compare  # noqa: E402  (its WebSocket frames and echo server, atomic writes, wrk output)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = "soak"
DOMAIN = "soak.test"
STABLE = f"stable.{DOMAIN}"       # / -> web (endpoints churn), /api -> api (fixed)
SECURE = f"secure.{DOMAIN}"       # TLS (rotated Secret), / -> web
WS = f"ws.{DOMAIN}"               # plain WebSockets -> ws (endpoints churn)
WSS = f"wss.{DOMAIN}"             # WebSockets over TLS, same Secret as SECURE
UNKNOWN = f"nobody.{DOMAIN}"      # no rule: 404
WEB_POOL = [f"127.0.1.{i}" for i in range(1, 5)]   # web's possible endpoints, all one port
API_IP = "127.0.1.10"             # api's endpoint, and every churned route's
UPSTREAM_IDLE_S = 5               # upstreams close idle keep-alive connections, as Node does
WS_INTERVAL_S = 3.0               # a held WebSocket's message period
WS_TIMEOUT_S = 10.0               # an echo later than this is a failure
HOSTILE_TIMEOUT_S = 15.0          # a hostile request neither answered nor closed by then hung
FD_MARGIN = 8                     # descriptors allowed above the idle count at the end
RSS_MIN_ALLOWANCE_MIB = 30        # RSS bound: baseline + max(this, RSS_SHARE of baseline)
RSS_SHARE = 0.20
SAMPLE_S = 2.0
SETTLE_S = 90                     # longest wait for descriptors to come back once idle
SETTLE_MIN_S = 15                 # shortest: upstreams close idle connections after 5 s
WRK_SEGMENT_S = 30                # wrk runs in segments, so progress shows and connections renew


class SetupError(Exception):
    """Something the soak needs is missing or broken: exit 2, not a verdict on Vestibule."""


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- What happened: counters and failures, shared by every thread ------------------------------

class Record:
    def __init__(self, tolerate=()):
        self.lock = threading.Lock()
        self.tolerate = set(tolerate)   # hostile cases whose bad outcomes are known defects
        self.started = time.monotonic()
        self.counts = {}        # category -> well-formed requests sent
        self.failed = {}        # category -> of which failed
        self.failures = []      # (seconds into the run, category, detail), the first 200
        self.hostile = {}       # case -> {outcome: n}
        self.hostile_bad = []   # (t, case, outcome), the first 100
        self.hostile_tolerated = {}   # case -> bad outcomes let pass (--tolerate)

    def t(self):
        return round(time.monotonic() - self.started, 1)

    def ok(self, category, n=1):
        with self.lock:
            self.counts[category] = self.counts.get(category, 0) + n

    def fail(self, category, detail, n=1, sent=True):
        with self.lock:
            if sent:
                self.counts[category] = self.counts.get(category, 0) + n
            self.failed[category] = self.failed.get(category, 0) + n
            if len(self.failures) < 200:
                self.failures.append((self.t(), category, str(detail)[:400]))
        if sum(self.failed.values()) <= 20:
            log(f"FAILURE {category}: {str(detail)[:300]}")

    def hostile_outcome(self, case, outcome, acceptable):
        tolerated = not acceptable and case in self.tolerate
        with self.lock:
            tally = self.hostile.setdefault(case, {})
            tally[outcome] = tally.get(outcome, 0) + 1
            if tolerated:
                self.hostile_tolerated[case] = self.hostile_tolerated.get(case, 0) + 1
            elif not acceptable and len(self.hostile_bad) < 100:
                self.hostile_bad.append((self.t(), case, outcome))
        if not acceptable:
            log(f"HOSTILE {case}: {'tolerated' if tolerated else 'unacceptable'} outcome "
                f"{outcome}")

    def total_failed(self):
        with self.lock:
            return sum(self.failed.values())


# --- Certificates: a CA, leaf certificates for the rotated Secret ------------------------------

@dataclasses.dataclass(frozen=True)
class Cert:
    name: str
    crt: str      # PEM text
    key: str      # PEM text
    sha256: str   # of the DER certificate


def openssl(*args):
    p = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise SetupError(f"openssl {' '.join(args[:3])}... failed: {p.stderr.strip()[:500]}")


def make_certs(d):
    """A CA and four leaves for SECURE and WSS (two RSA-2048, two ECDSA P-256), all signed by
    the CA, so clients verify fully; plus a broken pair (one leaf's certificate, another's key)."""
    os.makedirs(d, exist_ok=True)
    ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "30", "-subj", "/CN=Vestibule soak CA", "-keyout", ca_key,
            "-out", ca_crt)
    ext = os.path.join(d, "leaf.ext")
    with open(ext, "w") as f:
        f.write(f"subjectAltName=DNS:{SECURE},DNS:{WSS}\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    certs = []
    for i, kind in enumerate(("rsa", "ec", "rsa", "ec")):
        name = f"leaf-{i}-{kind}"
        key, csr, crt = (os.path.join(d, f"{name}.{e}") for e in ("key", "csr", "crt"))
        newkey = ["-newkey", "rsa:2048"] if kind == "rsa" else \
            ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        openssl("req", "-new", *newkey, "-nodes", "-subj", f"/CN={SECURE}", "-keyout", key,
                "-out", csr)
        openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
                "-days", "30", "-extfile", ext, "-out", crt)
        with open(crt) as c, open(key) as k:
            crt_text, key_text = c.read(), k.read()
        der = ssl.PEM_cert_to_DER_cert(crt_text)
        certs.append(Cert(name, crt_text, key_text, hashlib.sha256(der).hexdigest()))
    broken = Cert("broken", certs[0].crt, certs[1].key, certs[0].sha256)
    return ca_crt, certs, broken


# --- Manifests ---------------------------------------------------------------------------------
# Each document is written as JSON, which is YAML too; one file per thing that changes, so a
# change rewrites one small file (written aside and renamed into place: never half a file).

INGRESS_CLASS = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                 "metadata": {"name": "vestibule"},
                 "spec": {"controller": "vestibule.dev/ingress-controller"}}


def ingress(name, rules, tls=None):
    spec = {"ingressClassName": "vestibule", "rules": [
        {"host": host, "http": {"paths": [
            {"path": path, "pathType": "Prefix",
             "backend": {"service": {"name": svc, "port": {"number": 80}}}}
            for path, svc in paths]}}
        for host, paths in rules]}
    if tls:
        spec["tls"] = tls
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


def service(name):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"ports": [{"name": "http", "port": 80}]}}


def slice_(name, svc, ips, port):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": NS,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": port}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips]}


def secret(name, cert):
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "type": "kubernetes.io/tls", "data": {"tls.crt": b64(cert.crt),
                                                  "tls.key": b64(cert.key)}}


def docs(*objects):
    return "---\n".join(json.dumps(o, indent=1) + "\n" for o in objects)


class Manifests:
    def __init__(self, d, ports):
        self.dir, self.ports = d, ports
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)

    def write(self, name, text):
        compare.write_atomic(os.path.join(self.dir, name), text)

    def remove(self, name):
        os.unlink(os.path.join(self.dir, name))

    def initial(self, web_ips, ws_ports, cert):
        p = self.ports
        self.write("class.yaml", docs(INGRESS_CLASS))
        self.write("stable.yaml", docs(
            ingress("stable", [(STABLE, [("/", "web"), ("/api", "api")])]),
            service("web"), service("api"), slice_("api-1", "api", [API_IP], p.app)))
        self.write("secure.yaml", docs(
            ingress("secure", [(SECURE, [("/", "web")]), (WSS, [("/", "ws")])],
                    tls=[{"hosts": [SECURE, WSS], "secretName": "secure-tls"}]),
            ingress("ws", [(WS, [("/", "ws")])]), service("ws")))
        self.web_endpoints(web_ips)
        self.ws_endpoints(ws_ports)
        self.certificate(cert)

    def web_endpoints(self, ips):
        self.write("web-endpoints.yaml", docs(slice_("web-1", "web", ips, self.ports.app)))

    def ws_endpoints(self, ports):
        # One EndpointSlice per port, as Kubernetes writes them when ports differ.
        self.write("ws-endpoints.yaml", docs(*[slice_(f"ws-{port}", "ws", ["127.0.0.1"], port)
                                               for port in ports]))

    def certificate(self, cert):
        self.write("secure-tls.yaml", docs(secret("secure-tls", cert)))

    def route(self, n):
        name = f"churn-{n}"
        self.write(f"route-{n}.yaml", docs(
            ingress(name, [(f"{name}.{DOMAIN}", [("/", name)])]), service(name),
            slice_(f"{name}-1", name, [API_IP], self.ports.app)))


# --- Upstreams: HTTP servers on several loopback addresses, and WebSocket echo -----------------
# They run in a child process (`soak.py --upstream SPEC`), so that their work does not compete
# with the clients for this process's interpreter lock. The parent tells it on stdin to stop
# ("down IP") or start ("up IP") an HTTP server, as pods go and come.

class AppHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = UPSTREAM_IDLE_S   # a keep-alive connection idle this long is closed
    # The head and the body are two writes: with Nagle's algorithm the body would wait for
    # the proxy's delayed ACK of the head (40 ms).
    disable_nagle_algorithm = True
    server_version = "soak-upstream"

    def log_message(self, *args):
        pass

    def _body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self):
        data = self._body()
        big = re.search(r"[?&]bytes=(\d+)", self.path)
        if big:
            # A large body, for a client that will not read it.
            n = int(big.group(1))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = b"x" * 65536
            while n > 0:
                self.wfile.write(chunk[:n])
                n -= len(chunk)
            return
        reply = json.dumps({"upstream": self.server.name, "method": self.command,
                            "path": self.path, "host": self.headers.get("Host"),
                            "upgrade": self.headers.get("Upgrade"),
                            "body_len": len(data),
                            "body_sha256": hashlib.sha256(data).hexdigest()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = do_PUT = do_DELETE = _answer


class AppServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, addr, name):
        self.name = name
        self.conns = set()
        self.conns_lock = threading.Lock()
        super().__init__(addr, AppHandler)

    def process_request(self, request, client_address):
        with self.conns_lock:
            self.conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.conns_lock:
            self.conns.discard(request)
        super().shutdown_request(request)

    def down(self):
        """Stops listening and cuts every connection, as a pod that is gone."""
        self.shutdown()
        self.server_close()
        with self.conns_lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def upstream_main(spec):
    spec = json.loads(spec)
    servers = {}

    def up(ip):
        s = AppServer((ip, spec["app_port"]), spec["names"][ip])
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()
        servers[ip] = s

    for ip in spec["names"]:
        up(ip)
    for port in spec["ws_ports"]:
        threading.Thread(target=compare.ws_echo_server, args=(port,), daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, _, ip = line.strip().partition(" ")
        if cmd == "down" and ip in servers:
            servers.pop(ip).down()
        elif cmd == "up" and ip not in servers:
            up(ip)
        print("ok", flush=True)


class Upstreams:
    def __init__(self, ports, logfile):
        names = {ip: f"web-{i + 1}" for i, ip in enumerate(WEB_POOL)}
        names[API_IP] = "api"
        self.spec = {"app_port": ports.app, "ws_ports": [ports.ws_a, ports.ws_b],
                     "names": names}
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--upstream", json.dumps(self.spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logfile, text=True,
            start_new_session=True)
        self.lock = threading.Lock()
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise SetupError(f"the upstreams did not start (is a port in {ports.app}, "
                             f"{ports.ws_a}, {ports.ws_b} taken?); see {logfile.name}")
        self.down_ips = set()

    def command(self, cmd, ip):
        with self.lock:
            self.proc.stdin.write(f"{cmd} {ip}\n")
            self.proc.stdin.flush()
            if self.proc.stdout.readline().strip() != "ok":
                raise RuntimeError(f"upstream process did not acknowledge {cmd} {ip}")
            (self.down_ips.add if cmd == "down" else self.down_ips.discard)(ip)

    def stop(self):
        stop_process(self.proc)


def stop_process(proc, sig=signal.SIGTERM, grace=5.0):
    if proc is None or proc.poll() is not None:
        return proc.returncode if proc else None
    try:
        os.kill(proc.pid, sig)
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(5)
    except ProcessLookupError:
        return proc.poll()


# --- Vestibule: the process, its admin server, /proc ------------------------------------------

@dataclasses.dataclass
class Ports:
    http: int
    https: int
    admin: int
    app: int
    ws_a: int
    ws_b: int


class Vestibule:
    def __init__(self, binary, manifests, ports, out):
        self.ports = ports
        self.log_path = os.path.join(out, "vestibule.log")
        self.access_lines = 0
        self.access_status = {}
        self.access_tail = []
        err = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [binary, "run", "--manifests", manifests,
             "--http-addr", f"127.0.0.1:{ports.http}",
             "--https-addr", f"127.0.0.1:{ports.https}",
             "--admin-addr", f"127.0.0.1:{ports.admin}",
             "--access-log", "json", "--shutdown-grace-period", "5s"],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
            start_new_session=True)
        err.close()
        self.pid = self.proc.pid
        threading.Thread(target=self._read_access_log, daemon=True).start()

    def _read_access_log(self):
        status = re.compile(rb'"status":(\d+)')
        for line in self.proc.stdout:
            self.access_lines += 1
            m = status.search(line)
            code = m.group(1).decode() if m else "?"
            self.access_status[code] = self.access_status.get(code, 0) + 1

    def alive(self):
        return self.proc.poll() is None

    def admin(self, path, timeout=5):
        conn = http.client.HTTPConnection("127.0.0.1", self.ports.admin, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def config(self):
        status, body = self.admin("/debug/config")
        if status != 200:
            raise RuntimeError(f"/debug/config answered {status}")
        return json.loads(body)

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.admin("/readyz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            if not self.alive():
                raise SetupError(f"vestibule exited ({self.proc.returncode}) before it was "
                                 f"ready; see {self.log_path}")
            if time.monotonic() > deadline:
                raise SetupError(f"vestibule not ready after {timeout} s; see {self.log_path}")
            time.sleep(0.1)

    def status(self):
        """VmRSS (KiB), threads and open descriptors, from /proc."""
        rss = threads = None
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return {"rss_kib": rss, "fds": fds, "threads": threads, "cpu_s": round(cpu_s, 2)}

    def fd_kinds(self):
        kinds = {}
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
            except OSError:
                continue
            kind = re.sub(r"\[\d+\]$", "", target.split(":")[0]) if ":" in target else target
            kinds[kind] = kinds.get(kind, 0) + 1
        return kinds

    def sockets(self):
        """Each open TCP socket of the process as 'local -> remote STATE', from the socket
        inodes in /proc/PID/fd and /proc/net/tcp: what a leak holds, when there is one."""
        inodes = set()
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        states = {"01": "ESTABLISHED", "02": "SYN_SENT", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
                  "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK",
                  "0A": "LISTEN", "0B": "CLOSING"}

        def addr(hexaddr):
            ip, port = hexaddr.split(":")
            return f"{socket.inet_ntoa(bytes.fromhex(ip)[::-1])}:{int(port, 16)}"

        found = []
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[9] in inodes:
                    found.append(f"{addr(parts[1])} -> {addr(parts[2])} "
                                 f"{states.get(parts[3], parts[3])}")
        return sorted(found)

    def stop(self):
        return stop_process(self.proc, signal.SIGTERM, grace=20)


# --- Clients -----------------------------------------------------------------------------------

class SniConnection(http.client.HTTPConnection):
    """HTTPS to 127.0.0.1 with a chosen server name (SNI), context and session."""

    def __init__(self, port, sni, ctx, session=None, timeout=10):
        super().__init__("127.0.0.1", port, timeout=timeout)
        self.sni, self.ctx, self.session = sni, ctx, session

    def connect(self):
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self.ctx.wrap_socket(raw, server_hostname=self.sni, session=self.session)


def client_context(ca, tls12=False):
    ctx = ssl.create_default_context(cafile=ca)
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def upstream_of(body):
    try:
        return json.loads(body)
    except ValueError:
        return None


class Stopper:
    def __init__(self):
        self.event = threading.Event()

    def wait(self, seconds):
        return self.event.wait(max(0.0, seconds))

    @property
    def stopped(self):
        return self.event.is_set()


def paced(rate, stop):
    """Yields at `rate` per second until stopped, without catching up on lost time."""
    period = 1.0 / rate
    next_at = time.monotonic()
    while not stop.stopped:
        yield
        next_at = max(next_at + period, time.monotonic() - period)
        stop.wait(next_at - time.monotonic())


class NewConnections(threading.Thread):
    """One request per new connection, in a rotation of kinds, at `rate` per second."""

    def __init__(self, rec, ports, ca, certs, rate, stop, tls):
        super().__init__(daemon=True)
        self.rec, self.ports, self.rate, self.stop, self.tls = rec, ports, rate, stop, tls
        self.ctx13, self.ctx12 = client_context(ca), client_context(ca, tls12=True)
        self.fingerprints = {c.sha256 for c in certs}
        self.session = None
        self.resumed = 0
        self.rng = random.Random(7 if tls else 8)

    def run(self):
        kinds = ["tls13", "tls12", "resume"] if self.tls else \
            ["get", "api", "post", "get", "redirect", "unknown"]
        i = 0
        for _ in paced(self.rate, self.stop):
            kind = kinds[i % len(kinds)]
            i += 1
            try:
                self.one(kind)
            except Exception as e:  # noqa: BLE001 -- every error of a well-formed request counts
                self.rec.fail(f"new-{kind}", f"{type(e).__name__}: {e}")

    def one(self, kind):
        category = f"new-{kind}"
        body, headers, method, host, path = None, {}, "GET", STABLE, f"/n/{kind}"
        if kind == "api":
            path = "/api/items?x=1"
        elif kind == "post":
            method, path = "POST", "/api/upload"
            body = self.rng.randbytes(self.rng.randint(1, 4096))
        elif kind == "redirect":
            host = SECURE
        elif kind == "unknown":
            host = UNKNOWN
        if self.tls:
            host = SECURE
            ctx = self.ctx12 if kind == "tls12" else self.ctx13
            session = self.session if kind == "resume" else None
            conn = SniConnection(self.ports.https, SECURE, ctx, session)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.ports.http, timeout=10)
        # Over TLS the client closes after the answer instead: http.client lets go of the
        # socket, and its session, once a `Connection: close` response starts.
        headers.update({"Host": host} if self.tls else {"Host": host, "Connection": "close"})
        try:
            if self.tls:
                conn.connect()
                sock = conn.sock
                served = hashlib.sha256(sock.getpeercert(binary_form=True)).hexdigest()
                if served not in self.fingerprints:
                    raise RuntimeError(f"served an unknown certificate {served[:16]}")
                if kind == "tls12" and sock.version() != "TLSv1.2":
                    raise RuntimeError(f"asked for TLS 1.2, got {sock.version()}")
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if self.tls:
                # A TLS 1.3 session ticket arrives after the handshake, with the response;
                # a session is only good for the context it came from.
                if kind == "resume" and sock.session_reused:
                    self.resumed += 1
                if kind in ("tls13", "resume"):
                    self.session = sock.session
        finally:
            conn.close()
        want = {"redirect": 308, "unknown": 404}.get(kind, 200)
        if resp.status != want:
            raise RuntimeError(f"{method} {host}{path} answered {resp.status}, want {want}: "
                               f"{data[:120]!r}")
        if want == 308:
            loc = resp.getheader("Location", "")
            if loc != f"https://{SECURE}{path}":
                raise RuntimeError(f"redirect to {loc!r}")
        elif want == 200:
            reply = upstream_of(data)
            expect = "api" if kind in ("api", "post") else "web-"
            if not reply or not str(reply.get("upstream", "")).startswith(expect):
                raise RuntimeError(f"{host}{path} answered by {data[:120]!r}, want {expect}")
            if body is not None and reply.get("body_sha256") != hashlib.sha256(body).hexdigest():
                raise RuntimeError("the upstream got another body than the one sent")
        self.rec.ok(category)


class KeepAlivePool(threading.Thread):
    """The Python fallback when wrk is missing: persistent connections, paced requests."""

    def __init__(self, rec, ports, rate, stop, tls, ca, index):
        super().__init__(daemon=True)
        self.rec, self.ports, self.rate, self.stop, self.tls = rec, ports, rate, stop, tls
        self.ctx = client_context(ca)
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        self.index = index

    def connect(self):
        if self.tls:
            return SniConnection(self.ports.https, STABLE, self.ctx)
        return http.client.HTTPConnection("127.0.0.1", self.ports.http, timeout=10)

    def run(self):
        category = "keepalive-https" if self.tls else "keepalive-http"
        conn = self.connect()
        i = 0
        for _ in paced(self.rate, self.stop):
            i += 1
            path = "/api/k" if i % 3 == 0 else f"/k/{self.index}/{i}"
            try:
                conn.request("GET", path, headers={"Host": STABLE})
                resp = conn.getresponse()
                data = resp.read()
                reply = upstream_of(data)
                if resp.status != 200 or not reply:
                    raise RuntimeError(f"GET {path} answered {resp.status} {data[:100]!r}")
                self.rec.ok(category)
            except Exception as e:  # noqa: BLE001
                self.rec.fail(category, f"{type(e).__name__}: {e}")
                conn.close()
                conn = self.connect()
        conn.close()


WRK_LUA = r"""
-- Written by bench/soak.py: paced keep-alive requests; every answer must be 200 from an
-- upstream (its JSON names it). Failures are counted and the first few kept.
local targets = { %(targets)s }
local n, bad, first = 0, 0, ""
local threads = {}

function setup(thread) table.insert(threads, thread) end

function request()
  n = n + 1
  local t = targets[(n %% #targets) + 1]
  return wrk.format("GET", t[2] .. n, { Host = t[1] })
end

function delay() return %(delay)d end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"upstream": "', 1, true) then
    bad = bad + 1
    if bad <= 5 then first = first .. status .. " " .. string.sub(body or "", 1, 100) .. "|" end
  end
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write("SOAK_BAD " .. t:get("bad") .. "\n")
    io.write("SOAK_FIRST " .. t:get("first") .. "\n")
  end
end
"""


class WrkLoad(threading.Thread):
    """wrk, one thread, `connections` keep-alive connections paced to about `rate` requests/s,
    in segments of WRK_SEGMENT_S until the deadline."""

    def __init__(self, rec, url, rate, connections, deadline, out, name, stop):
        super().__init__(daemon=True)
        self.rec, self.url, self.deadline, self.stop, self.name_ = rec, url, deadline, stop, name
        self.connections, self.rate = connections, rate
        # Each connection waits `delay` ms before each request. wrk's timers make the real
        # period longer than asked (twice as long here), so the delay is corrected after each
        # segment from the rate measured.
        self.delay = max(1.0, connections * 1000 / rate - 1)
        self.script = os.path.join(out, f"{name}.lua")
        self.proc = None
        self.segments = []

    def write_script(self):
        targets = ", ".join(f'{{"{h}", "{p}"}}' for h, p in
                            [(STABLE, "/w/"), (STABLE, "/w/"), (STABLE, "/api/w")])
        with open(self.script, "w") as f:
            f.write(WRK_LUA % {"targets": targets, "delay": round(self.delay)})

    def run(self):
        category = self.name_
        while not self.stop.stopped:
            left = self.deadline - time.monotonic()
            if left < 1:
                break
            seconds = int(min(WRK_SEGMENT_S, left))
            self.write_script()
            cmd = ["wrk", "-t1", f"-c{self.connections}", f"-d{seconds}s", "--timeout", "10s",
                   "-s", self.script, self.url]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         text=True)
            out, _ = self.proc.communicate()
            try:
                r = compare.parse_wrk(out)
            except RuntimeError as e:
                self.rec.fail(category, f"wrk output unreadable: {e}", sent=False)
                continue
            bad = sum(int(x) for x in re.findall(r"^SOAK_BAD (\d+)", out, re.M))
            first = " ".join(re.findall(r"^SOAK_FIRST (.*)$", out, re.M)).strip()
            sock = sum(r["socket_errors"].values())
            self.segments.append({"t": self.rec.t(), "requests": r["requests"], "bad": bad,
                                  "socket_errors": r["socket_errors"], "rps": r["rps"],
                                  "delay_ms": round(self.delay)})
            if r["rps"] > 0 and seconds >= 10:
                self.delay = min(1000.0, max(1.0, self.delay * r["rps"] / self.rate))
            self.rec.ok(category, r["requests"] - bad)
            if bad:
                self.rec.fail(category, f"{bad} answers not 200 from an upstream: {first}",
                              n=bad)
            if sock:
                self.rec.fail(category, f"wrk socket errors {r['socket_errors']}", n=sock)

    def halt(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)


class H2Bursts(threading.Thread):
    """Every 20 s, 200 requests over 2 connections of 10 streams: h2 over TLS, then h2c."""

    def __init__(self, rec, ports, stop):
        super().__init__(daemon=True)
        self.rec, self.ports, self.stop = rec, ports, stop

    def run(self):
        i = 0
        while not self.stop.wait(20):
            tls = i % 2 == 0
            i += 1
            category = "h2-tls" if tls else "h2c"
            url = f"https://127.0.0.1:{self.ports.https}/h2/" if tls else \
                f"http://127.0.0.1:{self.ports.http}/h2/"
            p = subprocess.run(["h2load", "-n200", "-c2", "-m10", "-t1", "-T10",
                                "-H", f":authority: {STABLE}", url],
                               capture_output=True, text=True)
            m = re.search(r"status codes: (\d+) 2xx", p.stdout)
            ok = int(m.group(1)) if m else 0
            self.rec.ok(category, ok)
            if ok != 200:
                tail = " / ".join(line for line in p.stdout.splitlines()
                                  if line.startswith(("requests:", "status codes:")))
                self.rec.fail(category, f"{200 - ok} of 200 not 2xx: {tail or p.stderr[:200]}",
                              n=200 - ok)


# --- WebSockets ----------------------------------------------------------------------------------

class WebSocket:
    def __init__(self, ports, ca, tls, timeout=WS_TIMEOUT_S):
        raw = socket.create_connection(("127.0.0.1", ports.https if tls else ports.http),
                                       timeout=timeout)
        host = WSS if tls else WS
        if tls:
            ctx = client_context(ca)
            raw = ctx.wrap_socket(raw, server_hostname=WSS)
        self.sock = raw
        key = base64.b64encode(os.urandom(16)).decode()
        raw.sendall((f"GET /chat HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = raw.recv(1)  # byte by byte: nothing after the head may be eaten
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101 "):
            status_line = head.split(b"\r\n")[0]
            raise ConnectionError(f"handshake answered {status_line!r}")
        if compare.ws_accept(key).encode() not in head:
            raise ConnectionError("wrong Sec-WebSocket-Accept")

    def exchange(self, msg):
        self.sock.sendall(compare.ws_frame(1, msg, masked=True))
        while True:
            opcode, payload = compare.ws_read_frame(self.sock)
            if opcode == 8:
                raise ConnectionError("closed by the server")
            if opcode in (1, 2):
                break
        if payload != msg:
            raise ConnectionError(f"echo {payload[:40]!r} for {msg[:40]!r}")

    def close(self):
        try:
            self.sock.sendall(compare.ws_frame(8, (1000).to_bytes(2, "big"), masked=True))
            compare.ws_read_frame(self.sock)  # the close frame back
        except (OSError, ConnectionError, ValueError):
            pass
        self.sock.close()


class HeldWebSocket(threading.Thread):
    def __init__(self, rec, ports, ca, tls, index, stop, offset):
        super().__init__(daemon=True)
        self.rec, self.ports, self.ca, self.tls, self.stop = rec, ports, ca, tls, stop
        self.index, self.offset = index, offset
        self.opened = threading.Event()
        self.sent = self.echoed = 0
        self.max_rtt_ms = 0.0
        self.error = None
        self.ws = None

    def run(self):
        category = "ws-held-message"
        try:
            self.ws = WebSocket(self.ports, self.ca, self.tls)
            self.rec.ok("ws-held-open")
        except Exception as e:  # noqa: BLE001
            self.error = f"did not open: {type(e).__name__}: {e}"
            self.rec.fail("ws-held-open", self.error)
            self.opened.set()
            return
        self.opened.set()
        self.stop.wait(self.offset)
        n = 0
        while True:
            last = self.stop.stopped
            n += 1
            msg = f"held {self.index} message {n} {'x' * (n % 200)}".encode()
            t = time.monotonic()
            try:
                self.ws.exchange(msg)
            except Exception as e:  # noqa: BLE001
                self.error = f"dropped at message {n}: {type(e).__name__}: {e}"
                self.rec.fail(category, f"WebSocket {self.index} ({'TLS' if self.tls else 'plain'})"
                                        f" {self.error}")
                return
            self.sent = self.echoed = n
            self.max_rtt_ms = max(self.max_rtt_ms, (time.monotonic() - t) * 1000)
            self.rec.ok(category)
            if last:
                break
            self.stop.wait(WS_INTERVAL_S)
        self.ws.close()

    def result(self):
        return {"tls": self.tls, "alive_to_the_end": self.error is None and self.echoed > 0,
                "messages": self.echoed, "max_rtt_ms": round(self.max_rtt_ms, 1),
                "error": self.error}


class ShortWebSockets(threading.Thread):
    """A WebSocket opened, used once and closed every 5 s, alternately plain and TLS."""

    def __init__(self, rec, ports, ca, stop):
        super().__init__(daemon=True)
        self.rec, self.ports, self.ca, self.stop = rec, ports, ca, stop

    def run(self):
        i = 0
        while not self.stop.wait(5):
            i += 1
            tls = i % 2 == 0
            try:
                ws = WebSocket(self.ports, self.ca, tls)
                ws.exchange(f"short {i}".encode())
                ws.close()
                self.rec.ok("ws-short")
            except Exception as e:  # noqa: BLE001
                self.rec.fail("ws-short", f"{'TLS' if tls else 'plain'}: {type(e).__name__}: {e}")


# --- Configuration changes, one a second ---------------------------------------------------------

class Changes(threading.Thread):
    """Rotates route, web endpoints, certificate, route, ws endpoints, certificate: one change
    a second. Each is checked installed (installed_generation moves on), then served."""

    KINDS = ("route", "web-endpoints", "certificate", "route", "ws-endpoints", "certificate")

    def __init__(self, rec, v, manifests, upstreams, ports, ca, certs, broken, stop, state):
        super().__init__(daemon=True)
        self.rec, self.v, self.m, self.up, self.ports = rec, v, manifests, upstreams, ports
        self.ca, self.certs, self.broken, self.stop = ca, certs, broken, stop
        self.rng = random.Random(1)
        self.s = state
        self.done = {k: 0 for k in set(self.KINDS)}
        self.not_applied = 0
        self.not_served = 0
        self.apply_ms = []
        self.cert_changes = 0
        self.pending_down = set()   # removed from web's endpoints at the last web change

    def run(self):
        started = time.monotonic()
        i = 0
        while not self.stop.stopped:
            self.stop.wait(started + i - time.monotonic())
            if self.stop.stopped:
                break
            kind = self.KINDS[i % len(self.KINDS)]
            i += 1
            try:
                self.change(kind)
            except Exception as e:  # noqa: BLE001
                self.not_applied += 1
                self.rec.fail("change", f"{kind}: {type(e).__name__}: {e}", sent=False)

    def change(self, kind):
        before = self.s["generation"]
        check = None
        if kind == "route":
            if self.s["route"] is None:
                self.s["n"] += 1
                self.m.route(self.s["n"])
                self.s["route"] = self.s["n"]
            else:
                self.m.remove(f"route-{self.s['route']}.yaml")
                self.s["removed"] = self.s["route"]
                self.s["route"] = None
            check = self.check_route
        elif kind == "web-endpoints":
            current = self.s["web"]
            while True:
                new = sorted(self.rng.sample(WEB_POOL, self.rng.randint(1, len(WEB_POOL))))
                if new != current:
                    break
            # Pods that were taken out at the last change are gone by now (unless back in).
            for ip in sorted(self.pending_down - set(new)):
                self.up.command("down", ip)
            for ip in new:
                if ip in self.up.down_ips:
                    self.up.command("up", ip)   # a new pod is up before it is an endpoint
            self.pending_down = set(current) - set(new)
            self.m.web_endpoints(new)
            self.s["web"] = new
            check = self.check_web
        elif kind == "ws-endpoints":
            options = [[self.ports.ws_a], [self.ports.ws_a, self.ports.ws_b], [self.ports.ws_b]]
            cur = options.index(self.s["ws"])
            self.s["ws"] = options[(cur + 1) % len(options)]
            self.m.ws_endpoints(self.s["ws"])
            check = self.check_ws
        else:
            self.cert_changes += 1
            if self.cert_changes % 10 == 0:
                # A broken Secret (one certificate, another's key): the last good one stays.
                self.m.certificate(self.broken)
                self.s["cert_broken"] = True
            else:
                self.s["cert_i"] = (self.s["cert_i"] + 1) % len(self.certs)
                self.m.certificate(self.certs[self.s["cert_i"]])
                self.s["cert_broken"] = False
            check = self.check_cert
        written = time.monotonic()
        config = self.wait_generation(before, written, kind)
        if config is None:
            return
        self.apply_ms.append(round((time.monotonic() - written) * 1000, 1))
        problem = check(config)
        if problem:
            self.not_served += 1
            self.rec.fail("change", f"{kind} installed (generation {self.s['generation']}) but "
                                    f"not served: {problem}", sent=False)
        else:
            self.done[kind] += 1

    def wait_generation(self, before, written, kind):
        time.sleep(0.1)  # the watcher lets writes settle for 100 ms
        while True:
            config = self.v.config()
            if config["installed_generation"] > before:
                self.s["generation"] = config["installed_generation"]
                return config
            if time.monotonic() - written > 5:
                self.not_applied += 1
                self.rec.fail("change", f"{kind}: no new configuration installed 5 s after the "
                                        f"write (still generation {before})", sent=False)
                return None
            time.sleep(0.02)

    def get(self, host, path="/"):
        conn = http.client.HTTPConnection("127.0.0.1", self.ports.http, timeout=5)
        try:
            conn.request("GET", path, headers={"Host": host, "Connection": "close"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def check_route(self, config):
        if self.s["route"] is not None:
            host = f"churn-{self.s['route']}.{DOMAIN}"
            status, body = self.get(host)
            reply = upstream_of(body) or {}
            if status != 200 or reply.get("upstream") != "api":
                return f"{host} added: answered {status} {body[:80]!r}, want 200 from api"
        else:
            host = f"churn-{self.s['removed']}.{DOMAIN}"
            status, body = self.get(host)
            if status != 404:
                return f"{host} removed: answered {status}, want 404"
        return None

    @staticmethod
    def endpoints_of(config, service):
        """The addresses of a Service's cluster in /debug/config's table."""
        found = []
        for cluster in config["table"]["clusters"]:
            text = json.dumps(cluster.get("key"))
            if f'"{NS}"' in text and f'"{service}"' in text:
                found.append(sorted(f"{e['address']}" for e in cluster["endpoints"]))
        return found

    def check_web(self, config):
        want = sorted(f"{ip}:{self.ports.app}" for ip in self.s["web"])
        got = self.endpoints_of(config, "web")
        if got != [want]:
            return f"web's endpoints in /debug/config are {got}, want {want}"
        return None

    def check_ws(self, config):
        want = sorted(f"127.0.0.1:{p}" for p in self.s["ws"])
        got = self.endpoints_of(config, "ws")
        if got != [want]:
            return f"ws's endpoints in /debug/config are {got}, want {want}"
        return None

    def served_cert(self):
        ctx = client_context(self.ca)
        with socket.create_connection(("127.0.0.1", self.ports.https), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=SECURE) as s:
                return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()

    def check_cert(self, config):
        want = self.certs[self.s["cert_i"]]
        served = self.served_cert()
        if served != want.sha256:
            names = {c.sha256: c.name for c in self.certs}
            return (f"{SECURE} serves {names.get(served, served[:16])}, want {want.name}"
                    + (" (the last good one, the Secret being broken)"
                       if self.s["cert_broken"] else ""))
        return None

    def result(self):
        ms = sorted(self.apply_ms)
        return {"applied_and_served": self.done, "not_applied": self.not_applied,
                "not_served": self.not_served, "broken_secrets": self.cert_changes // 10,
                "apply_ms_median": statistics.median(ms) if ms else None,
                "apply_ms_p99": compare.percentile(ms, 99), "apply_ms_max": ms[-1] if ms else None}


# --- Hostile requests ----------------------------------------------------------------------------

def read_response(sock, deadline, stop=None):
    """Reads one response head (and its body, by Content-Length) or until the peer closes,
    the deadline passes or `stop` is set. Returns (status or None, closed, head text, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(min(1.0, max(0.05, deadline - time.monotonic())))
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            if time.monotonic() >= deadline or (stop is not None and stop.stopped):
                return None, False, data.decode("latin-1"), b""
            continue
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return None, True, data.decode("latin-1"), b""
        if not chunk:
            return None, True, data.decode("latin-1"), b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    head = head.decode("latin-1")
    m = re.match(r"HTTP/1\.[01] (\d{3})", head)
    status = int(m.group(1)) if m else None
    length = re.search(r"(?im)^content-length:\s*(\d+)", head)
    while length and len(body) < int(length.group(1)) and time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (OSError, ssl.SSLError):
            break
        if not chunk:
            break
        body += chunk
    return status, False, head, body


H2_PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def plain(host=STABLE):
    return f"Host: {host}\r\n"


def hostile_cases():
    """(name, port kind, payload, extra check). Every case wants a 4xx or a close."""
    long_field = "X-Big: " + "b" * 40_000 + "\r\n"
    many = "".join(f"X-Field-{i}: {i}\r\n" for i in range(150))
    return [
        ("garbage-request-line", "http", "HELLO WORLD\r\n\r\n"),
        ("bad-method", "http", f"G(T / HTTP/1.1\r\n{plain()}\r\n"),
        ("nul-in-target", "http", f"GET /a\x00b HTTP/1.1\r\n{plain()}\r\n"),
        ("binary-junk", "http", None),  # random bytes, drawn each time
        ("bad-version", "http", f"GET / HTTP/1.x\r\n{plain()}\r\n"),
        ("bad-header-name", "http", f"GET / HTTP/1.1\r\n{plain()}Bad Header: x\r\n\r\n"),
        ("obs-fold", "http", f"GET / HTTP/1.1\r\n{plain()}X-A: b\r\n  c\r\n\r\n"),
        ("bad-chunk-size", "http", f"POST /api/c HTTP/1.1\r\n{plain()}Transfer-Encoding: chunked"
                                   "\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-overflow", "http", f"POST /api/c HTTP/1.1\r\n{plain()}Transfer-Encoding: "
                                        "chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ("chunk-longer-than-declared", "http", f"POST /api/c HTTP/1.1\r\n{plain()}"
                                               "Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n"
                                               "0\r\n\r\n"),
        ("two-content-lengths", "http", f"POST /api/c HTTP/1.1\r\n{plain()}Content-Length: 3\r\n"
                                        "Content-Length: 5\r\n\r\nhello"),
        ("te-and-content-length", "http", f"POST /api/c HTTP/1.1\r\n{plain()}Content-Length: 4\r\n"
                                          "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("te-not-chunked", "http", f"POST /api/c HTTP/1.1\r\n{plain()}Transfer-Encoding: "
                                   "xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ("invalid-host", "http", "GET / HTTP/1.1\r\nHost: bad host!\r\n\r\n"),
        ("two-hosts", "http", f"GET / HTTP/1.1\r\n{plain()}Host: other.{DOMAIN}\r\n\r\n"),
        ("host-with-userinfo", "http", f"GET http://u@{STABLE}/ HTTP/1.1\r\n{plain()}\r\n"),
        ("host-bad-port", "http", f"GET / HTTP/1.1\r\nHost: {STABLE}:99999x\r\n\r\n"),
        ("oversized-header", "http", f"GET / HTTP/1.1\r\n{plain()}{long_field}\r\n"),
        ("too-many-fields", "http", f"GET / HTTP/1.1\r\n{plain()}{many}\r\n"),
        ("long-uri", "http", f"GET /{'u' * 9000} HTTP/1.1\r\n{plain()}\r\n"),
        ("path-climb", "http", f"GET /a/..%2F..%2Fetc/passwd HTTP/1.1\r\n{plain()}\r\n"),
        ("huge-content-length", "http", f"POST /api/c HTTP/1.1\r\n{plain()}Content-Length: "
                                        "99999999999\r\n\r\nxx"),
        ("expect-oversized", "http", f"POST /api/c HTTP/1.1\r\n{plain()}Content-Length: 5000000"
                                     "\r\nExpect: 100-continue\r\n\r\n"),
        ("h2c-upgrade", "http", f"GET /h2c HTTP/1.1\r\n{plain()}Connection: Upgrade, "
                                "HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: "
                                "AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"),
        # HTTP/2 with prior knowledge: SETTINGS, then HEADERS whose block is not HPACK (a
        # COMPRESSION_ERROR: GOAWAY and close); and a SETTINGS frame of a wrong size.
        ("h2-bad-hpack", "http", H2_PREFACE + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"
                                 "\x00\x00\x05\x01\x05\x00\x00\x00\x01\xff\xff\xff\xff\xff"),
        ("h2-bad-settings", "http", H2_PREFACE + "\x00\x00\x05\x04\x00\x00\x00\x00\x00"
                                    "\x00\x03\x00\x00\x00"),
        ("plain-http-on-tls-port", "https", f"GET / HTTP/1.1\r\n{plain()}\r\n"),
        ("slowloris-drip", "http", None),
    ]


# Connections opened and then left silent, each with the time within which the server must
# close it: a head never finished (--client-header-timeout, 60 s: 408), a TLS handshake
# stopped after the first bytes (the 10 s handshake timeout), and HTTP/2 connections, cleartext
# and TLS, whose client completes the handshake (preface, SETTINGS, ACK) and then neither sends
# nor answers anything (--client-keepalive-timeout, 75 s); and a client that stops reading.
H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
H2_SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
HOLDS = [
    ("slowloris-hold", "http", f"GET /held HTTP/1.1\r\n{plain()}X-Partial: ".encode(), 75),
    ("tls-handshake-stall", "https", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 20),
    ("h2c-silent-client", "http", H2_PREFACE.encode() + H2_SETTINGS + H2_SETTINGS_ACK, 90),
    ("h2-tls-silent-client", "h2-tls", H2_PREFACE.encode() + H2_SETTINGS + H2_SETTINGS_ACK, 90),
    # A client that asks for 8 MB and reads none of it (nginx's send_timeout, 60 s, closes
    # such a connection); bound here by the idle timeout too.
    ("slow-reader", "slow-reader",
     f"GET /api/big?bytes=8000000 HTTP/1.1\r\n{plain()}\r\n".encode(), 90),
]


class Hostile(threading.Thread):
    def __init__(self, rec, v, ports, interval, stop):
        super().__init__(daemon=True)
        self.rec, self.v, self.ports, self.interval, self.stop = rec, v, ports, interval, stop
        self.rng = random.Random(3)
        self.sent = 0
        self.held = {}   # hold case -> (thread, started)

    def run(self):
        cases = hostile_cases()
        i = 0
        while not self.stop.wait(self.interval):
            if i % len(cases) == 0:
                self.rng.shuffle(cases)
            name, port, payload = cases[i % len(cases)]
            i += 1
            # The holds run beside the others, one of each kind at a time, each started
            # again a minute after the last one started (or when it ends, if later).
            for hold in HOLDS:
                t, started = self.held.get(hold[0], (None, 0))
                if (t is None or not t.is_alive()) and time.monotonic() - started >= 60:
                    t = threading.Thread(target=self.guard, args=(self.hold, *hold), daemon=True)
                    t.start()
                    self.held[hold[0]] = (t, time.monotonic())
            self.guard(self.one, name, port, payload)

    def guard(self, fn, *args):
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001
            self.rec.hostile_outcome(args[0], f"harness error {type(e).__name__}: {e}", False)

    def one(self, name, port_kind, payload):
        port = self.ports.https if port_kind == "https" else self.ports.http
        deadline = time.monotonic() + HOSTILE_TIMEOUT_S
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            self.sent += 1
            try:
                if name == "binary-junk":
                    sock.sendall(b"\x01" + self.rng.randbytes(511))
                elif name == "slowloris-drip":
                    sock.sendall(f"GET /slow HTTP/1.1\r\n{plain()}".encode())
                    for n in range(5):
                        if self.stop.wait(1):
                            break
                        sock.sendall(f"X-Drip-{n}: {n}\r\n".encode())
                    self.rec.hostile_outcome(name, "dropped by the client", True)
                    return   # closed here, head unfinished
                else:
                    sock.sendall(payload.encode("latin-1"))
            except (BrokenPipeError, ConnectionResetError):
                self.rec.hostile_outcome(name, "close", True)  # refused mid-send: a close
                return
            status, closed, head, body = read_response(sock, deadline)
            if status is not None and status < 400 and not closed:
                # Was the connection closed after the answer? (What RFC 9112 asks after a
                # request with both Transfer-Encoding and Content-Length.)
                closed = read_response(sock, time.monotonic() + 3)[1]
        outcome, ok = self.judge(name, status, closed, body)
        self.rec.hostile_outcome(name, outcome, ok)

    @staticmethod
    def judge(name, status, closed, body):
        if status is None:
            return ("close", True) if closed else ("no answer, no close (hung)", False)
        if 400 <= status < 500:
            return str(status), True
        if name == "te-and-content-length" and status == 200:
            # RFC 9112 6.1: reject, or serve by Transfer-Encoding alone and then close.
            return ("200 then close", True) if closed else ("200, connection kept", False)
        if name == "h2c-upgrade" and status == 200:
            # Served as the plain request it also is, the Upgrade dropped: fine, so long as
            # the upstream never heard of h2c.
            reply = upstream_of(body) or {}
            if reply.get("upgrade") is None and reply.get("upstream"):
                return "200 (upgrade dropped)", True
            return f"200 with the upgrade forwarded: {body[:80]!r}", False
        return str(status), False

    def hold(self, name, port_kind, payload, limit):
        """Sends `payload` and then nothing: the server must close the connection (an
        answer first, such as 408, is fine) within `limit` seconds."""
        port = self.ports.https if port_kind in ("https", "h2-tls") else self.ports.http
        if port_kind == "slow-reader":
            return self.slow_reader(name, port, payload, limit)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            sock = raw
            if port_kind == "h2-tls":
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                ctx.set_alpn_protocols(["h2"])
                sock = ctx.wrap_socket(raw, server_hostname=STABLE)
                if sock.selected_alpn_protocol() != "h2":
                    raise RuntimeError(f"ALPN chose {sock.selected_alpn_protocol()}, not h2")
            self.sent += 1
            sock.sendall(payload)
            started = time.monotonic()
            status, closed, _, _ = read_response(sock, started + limit, self.stop)
            if status is not None and not closed:
                closed = read_response(sock, started + limit, self.stop)[1]
            waited = time.monotonic() - started
        if self.stop.stopped and not closed:
            return  # the run ended first
        answer = f"{status} and " if status else ""
        if closed:
            self.rec.hostile_outcome(name, f"{answer}close after ~{int(waited // 5 * 5)} s",
                                     True)
        else:
            self.rec.hostile_outcome(name, f"{answer}still open after {waited:.0f} s", False)


    def slow_reader(self, name, port, payload, limit):
        """Asks for a large body and never reads it. Reading nothing, the client cannot see
        a close behind the data; the server's side of the connection, in /proc/net/tcp, can
        (ESTABLISHED while the server holds it, FIN_WAIT or gone once it lets go)."""
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(5)
            sock.connect(("127.0.0.1", port))
            self.sent += 1
            sock.sendall(payload)
            started = time.monotonic()
            mine = sock.getsockname()[1]
            state = "01"
            while time.monotonic() - started < limit and not self.stop.wait(1):
                state = tcp_state(port, mine)
                if state != "01":
                    break
            waited = time.monotonic() - started
        if state == "01" and self.stop.stopped:
            return  # the run ended first
        if state != "01":
            self.rec.hostile_outcome(name, f"close after ~{int(waited // 5 * 5)} s", True)
        else:
            self.rec.hostile_outcome(name, f"still open after {waited:.0f} s", False)


def tcp_state(server_port, client_port):
    """The state (hex, as in /proc/net/tcp: 01 ESTABLISHED) of the server's side of the
    loopback connection from client_port, or None when it is gone."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[1] == local and parts[2] == remote:
                return parts[3]
    return None


# --- Sampling ------------------------------------------------------------------------------------

class Sampler(threading.Thread):
    def __init__(self, rec, v, stop):
        super().__init__(daemon=True)
        self.rec, self.v, self.stop = rec, v, stop
        self.samples = []

    def sample(self):
        s = self.v.status()
        s["t"] = self.rec.t()
        self.samples.append(s)
        return s

    def run(self):
        while not self.stop.wait(SAMPLE_S):
            if not self.v.alive():
                return
            try:
                self.sample()
            except OSError:
                return


def slope_mib_per_hour(samples):
    """Least-squares slope of RSS over time."""
    if len(samples) < 3:
        return None
    xs = [s["t"] for s in samples]
    ys = [s["rss_kib"] / 1024 for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den * 3600, 2) if den else None


def count_series(metrics_text):
    return sum(1 for line in metrics_text.splitlines() if line and not line.startswith("#"))


def metric_sum(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            try:
                total += float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    return total


# --- The run -------------------------------------------------------------------------------------

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int,
                    default=int(os.environ.get("SOAK_SECONDS") or 1800),
                    help="seconds of load (default 1800, or SOAK_SECONDS)")
    ap.add_argument("--vestibule", default=os.path.join(ROOT, "target", "release", "vestibule"),
                    help="the binary to soak")
    ap.add_argument("--rate", type=int, default=500,
                    help="keep-alive requests/s in all (about 80%% plain, 20%% TLS)")
    ap.add_argument("--new-conn-rate", type=float, default=10,
                    help="new connections/s in all (half plain, half TLS)")
    ap.add_argument("--websockets", type=int, default=4, help="WebSockets held open (half TLS)")
    ap.add_argument("--hostile-interval", type=float, default=2.0,
                    help="seconds between hostile requests")
    ap.add_argument("--port-base", type=int, default=19400,
                    help="ports used: BASE..BASE+2 Vestibule, BASE+10, BASE+20, BASE+21 upstreams")
    ap.add_argument("--python-load", action="store_true",
                    help="keep-alive load from Python clients even when wrk is there")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "soak"),
                    help="results, logs and manifests (default target/soak)")
    ap.add_argument("--tolerate", default="", metavar="CASES",
                    help="hostile cases (comma list) whose unacceptable outcomes are known "
                         "defects: reported, but they do not fail the soak")
    ap.add_argument("--upstream", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.upstream and (args.duration < 30 or args.rate < 10 or args.new_conn_rate <= 0):
        ap.error("--duration must be at least 30 s (the warm-up is 20 s at least), --rate at "
                 "least 10, and --new-conn-rate positive")
    return args


def main():
    args = parse_args()
    if args.upstream:
        upstream_main(args.upstream)
        return 0
    try:
        return soak(args)
    except SetupError as e:
        log(f"setup error: {e}")
        return 2


def soak(args):
    tolerate = [c for c in args.tolerate.split(",") if c]
    known = {c[0] for c in hostile_cases()} | {h[0] for h in HOLDS}
    if set(tolerate) - known:
        raise SetupError(f"--tolerate: unknown case(s) {sorted(set(tolerate) - known)}; "
                         f"cases: {', '.join(sorted(known))}")
    if not shutil.which("openssl"):
        raise SetupError("openssl is needed to make the certificates (apt-get install openssl)")
    binary = os.path.abspath(args.vestibule)
    if not os.access(binary, os.X_OK):
        raise SetupError(f"{binary} is not an executable; build it or set VESTIBULE")
    use_wrk = shutil.which("wrk") and not args.python_load
    use_h2load = shutil.which("h2load")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    b = args.port_base
    ports = Ports(b, b + 1, b + 2, b + 10, b + 20, b + 21)
    for port in (ports.http, ports.https, ports.admin):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError as e:
                raise SetupError(f"port {port} is taken ({e}); another soak running? "
                                 "--port-base moves every port")

    warmup = max(20, int(args.duration * 0.2))
    log(f"soak: {args.duration} s (warm-up {warmup} s) of {binary}")
    log(f"load: ~{args.rate} keep-alive req/s ({'wrk' if use_wrk else 'Python clients'}), "
        f"{args.new_conn_rate:g} new connections/s, {args.websockets} WebSockets held, "
        f"a change a second, a hostile request every {args.hostile_interval:g} s"
        + ("" if use_h2load else "; no h2load, so no HTTP/2 bursts"))
    ca, certs, broken = make_certs(os.path.join(out, "certs"))
    manifests = Manifests(os.path.join(out, "manifests"), ports)
    state = {"web": WEB_POOL[:2], "ws": [ports.ws_a], "cert_i": 0, "cert_broken": False,
             "route": None, "removed": None, "n": 0, "generation": 0}
    manifests.initial(state["web"], state["ws"], certs[0])

    rec = Record(tolerate)
    upstream_log = open(os.path.join(out, "upstreams.log"), "w")
    upstreams = Upstreams(ports, upstream_log)
    v = None
    threads, loads = [], []
    stop = Stopper()
    try:
        v = Vestibule(binary, manifests.dir, ports, out)
        v.wait_ready()
        state["generation"] = v.config()["installed_generation"]
        time.sleep(1)
        idle = v.status()
        log(f"ready: generation {state['generation']}, RSS {idle['rss_kib'] / 1024:.1f} MiB, "
            f"{idle['fds']} descriptors, {idle['threads']} threads (idle)")
        idle_fd_kinds = v.fd_kinds()
        idle_sockets = v.sockets()

        rec.started = time.monotonic()
        deadline = rec.started + args.duration
        sampler = Sampler(rec, v, stop)
        sampler.sample()
        held = [HeldWebSocket(rec, ports, ca, i % 2 == 1, i, stop,
                              offset=i * WS_INTERVAL_S / max(1, args.websockets))
                for i in range(args.websockets)]
        for ws in held:
            ws.start()
            ws.opened.wait(15)
        https_rate = max(1, args.rate // 5)
        if use_wrk:
            loads = [WrkLoad(rec, f"http://127.0.0.1:{ports.http}/", args.rate - https_rate, 6,
                             deadline, out, "keepalive-http", stop),
                     WrkLoad(rec, f"https://127.0.0.1:{ports.https}/", https_rate, 2,
                             deadline, out, "keepalive-https", stop)]
        else:
            per = max(1, (args.rate - https_rate) // 6)
            loads = [KeepAlivePool(rec, ports, per, stop, False, ca, i) for i in range(6)] + \
                    [KeepAlivePool(rec, ports, max(1, https_rate // 2), stop, True, ca, i)
                     for i in range(2)]
        new_http = NewConnections(rec, ports, ca, certs, args.new_conn_rate / 2, stop, False)
        new_https = NewConnections(rec, ports, ca, certs, args.new_conn_rate / 2, stop, True)
        changes = Changes(rec, v, manifests, upstreams, ports, ca, certs, broken, stop, state)
        hostile = Hostile(rec, v, ports, args.hostile_interval, stop)
        threads = [sampler, *loads, new_http, new_https, ShortWebSockets(rec, ports, ca, stop),
                   changes, hostile]
        if use_h2load:
            threads.append(H2Bursts(rec, ports, stop))
        for t in threads:
            t.start()

        # --- the run: watch the process, report progress each minute
        baseline = None
        next_report = rec.started + 60
        died = None
        while time.monotonic() < deadline:
            time.sleep(1)
            if not v.alive():
                died = f"vestibule exited with {v.proc.returncode} at {rec.t()} s"
                log(died)
                break
            now = time.monotonic()
            if baseline is None and now - rec.started >= warmup:
                recent = [s["rss_kib"] for s in sampler.samples if s["t"] >= warmup - 10]
                baseline = {"rss_kib": statistics.median(recent),
                            "fds": sampler.samples[-1]["fds"], "t": rec.t(),
                            "metrics_series": count_series(v.admin("/metrics")[1].decode())}
                log(f"warm-up over: RSS baseline {baseline['rss_kib'] / 1024:.1f} MiB, "
                    f"{baseline['fds']} descriptors under load")
            if now >= next_report:
                next_report += 60
                s = sampler.samples[-1]
                with rec.lock:
                    sent = sum(rec.counts.values())
                log(f"{rec.t():6.0f} s: {sent:,} requests, {rec.total_failed()} failed, "
                    f"{sum(changes.done.values())} changes, RSS {s['rss_kib'] / 1024:.1f} MiB, "
                    f"{s['fds']} fds, {hostile.sent} hostile")
        ran_s = rec.t()

        # --- stop the load; the held WebSockets exchange a last message and close
        stop.event.set()
        for load in loads:
            if isinstance(load, WrkLoad):
                load.halt()
        for t in threads:
            t.join(30 if t not in (hostile,) else 90)
        for ws in held:
            ws.join(15)
        ws_results = [ws.result() for ws in held]

        # --- the final configuration is the one served
        final_problems = []
        if v.alive():
            time.sleep(1)
            config = v.config()
            for check in (changes.check_route, changes.check_web, changes.check_ws,
                          changes.check_cert):
                try:
                    problem = check(config)
                except Exception as e:  # noqa: BLE001
                    problem = f"{check.__name__}: {type(e).__name__}: {e}"
                if problem:
                    final_problems.append(problem)
            metrics_text = v.admin("/metrics")[1].decode()
            with open(os.path.join(out, "metrics-end.txt"), "w") as f:
                f.write(metrics_text)
        else:
            metrics_text = ""

        # --- idle: descriptors must come back to where they were before the load
        # Idle connections take a while to go (upstreams close theirs after 5 s): wait at
        # least SETTLE_MIN_S, then until the count is within the margin and has not moved
        # for 5 s, or SETTLE_S in all.
        settle = {"waited_s": None, "fds_each_second": []}
        end = None
        if v.alive():
            t0 = time.monotonic()
            while True:
                end = sampler.sample()
                series = settle["fds_each_second"]
                series.append(end["fds"])
                waited = time.monotonic() - t0
                if waited >= SETTLE_MIN_S and end["fds"] <= idle["fds"] + FD_MARGIN \
                        and len(set(series[-5:])) == 1:
                    settle["waited_s"] = round(waited, 1)
                    break
                if waited > SETTLE_S:
                    break
                time.sleep(1)
            settle["fd_kinds"] = v.fd_kinds()
            settle["fd_kinds_idle_start"] = idle_fd_kinds
            settle["sockets"] = v.sockets()
            settle["sockets_idle_start"] = idle_sockets
        exit_code = v.stop() if v.alive() else v.proc.returncode
    finally:
        stop.event.set()
        for load in loads:
            if isinstance(load, WrkLoad):
                load.halt()
        if v is not None and v.alive():
            v.stop()
        upstreams.stop()
        upstream_log.close()

    return verdict(args, rec, v, idle, baseline, end, sampler, settle, ran_s, warmup, died,
                   ws_results, changes, hostile, loads, new_https, final_problems, metrics_text,
                   exit_code, out, bool(use_wrk), bool(use_h2load))


def verdict(args, rec, v, idle, baseline, end, sampler, settle, ran_s, warmup, died,
            ws_results, changes, hostile, loads, new_https, final_problems, metrics_text,
            exit_code, out, used_wrk, used_h2load):
    reasons = []
    samples = sampler.samples
    after = [s for s in samples if s["t"] >= warmup and s["t"] <= ran_s + 1]
    if died:
        reasons.append(died)
    if rec.total_failed():
        reasons.append(f"{rec.total_failed()} well-formed requests or checks failed")
    lost = [w for w in ws_results if not w["alive_to_the_end"]]
    if lost:
        reasons.append(f"{len(lost)} of {len(ws_results)} held WebSockets dropped")
    if final_problems:
        reasons.append("final configuration not served: " + "; ".join(final_problems))
    bad_hostile = len(rec.hostile_bad)
    if bad_hostile:
        reasons.append(f"{bad_hostile} hostile requests got an unacceptable outcome")

    rss = {"idle_start_mib": round(idle["rss_kib"] / 1024, 1)}
    if baseline:
        base = baseline["rss_kib"] / 1024
        allowance = max(RSS_MIN_ALLOWANCE_MIB, RSS_SHARE * base)
        peak = max(after, key=lambda s: s["rss_kib"]) if after else None
        rss.update(baseline_mib=round(base, 1), bound_mib=round(base + allowance, 1),
                   peak_mib=round(peak["rss_kib"] / 1024, 1) if peak else None,
                   peak_at_s=peak["t"] if peak else None,
                   end_of_load_mib=round(after[-1]["rss_kib"] / 1024, 1) if after else None,
                   slope_after_warmup_mib_per_hour=slope_mib_per_hour(after))
        over = [s for s in after if s["rss_kib"] / 1024 > base + allowance]
        if over:
            reasons.append(f"RSS {over[0]['rss_kib'] / 1024:.1f} MiB at {over[0]['t']} s is past "
                           f"its bound of {base + allowance:.1f} MiB (baseline {base:.1f} + "
                           f"{allowance:.1f})")
    elif not died:
        reasons.append("the run ended before the warm-up did")
    if end:
        rss["idle_end_mib"] = round(end["rss_kib"] / 1024, 1)
    fds = {"idle_start": idle["fds"], "after_warmup_under_load": baseline and baseline["fds"],
           "peak": max((s["fds"] for s in samples), default=None),
           "idle_end": end and end["fds"], "margin": FD_MARGIN,
           "settled_after_s": settle.get("waited_s"),
           "kinds_idle_start": settle.get("fd_kinds_idle_start"),
           "kinds_idle_end": settle.get("fd_kinds"),
           "sockets_idle_start": settle.get("sockets_idle_start"),
           "sockets_idle_end": settle.get("sockets"),
           "settle_fds_each_second": settle.get("fds_each_second")}
    if end and end["fds"] > idle["fds"] + FD_MARGIN:
        reasons.append(f"{end['fds']} descriptors open {SETTLE_S} s after the load stopped, "
                       f"against {idle['fds']} idle before it (margin {FD_MARGIN})")
    if exit_code not in (0, None) and not died:
        reasons.append(f"SIGTERM: exited {exit_code}, not 0")

    panics, errors, warns = [], [], []
    with open(v.log_path, errors="replace") as f:
        for line in f:
            if "panicked" in line:
                panics.append(line.strip()[:300])
            elif " ERROR " in line or '"level":"ERROR"' in line:
                errors.append(line.strip()[:300])
            elif " WARN " in line or '"level":"WARN"' in line:
                warns.append(line.strip()[:300])
    if panics:
        reasons.append(f"{len(panics)} panics in the log")

    with rec.lock:
        counts, failed = dict(rec.counts), dict(rec.failed)
    cpu = [s for s in samples if s["t"] <= ran_s + 1]
    cpu_share = round((cpu[-1]["cpu_s"] - cpu[0]["cpu_s"]) / (cpu[-1]["t"] - cpu[0]["t"]), 3) \
        if len(cpu) > 1 and cpu[-1]["t"] > cpu[0]["t"] else None
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "pass": not reasons, "reasons": reasons,
        "duration_s": ran_s, "warmup_s": warmup, "binary": os.path.abspath(args.vestibule),
        "settings": {"rate": args.rate, "new_conn_rate": args.new_conn_rate,
                     "websockets": args.websockets, "hostile_interval_s": args.hostile_interval,
                     "keepalive_load": "wrk" if used_wrk else "python", "h2load": used_h2load,
                     "upstream_idle_timeout_s": UPSTREAM_IDLE_S},
        "requests": {"sent": sum(counts.values()), "failed": sum(failed.values()),
                     "by_kind": counts, "failed_by_kind": failed,
                     "tls_sessions_resumed": new_https.resumed},
        "failures_first": rec.failures[:50],
        "changes": changes.result(),
        "websockets": {"held": len(ws_results),
                       "alive_to_the_end": sum(w["alive_to_the_end"] for w in ws_results),
                       "each": ws_results},
        "hostile": {"sent": hostile.sent, "unacceptable": rec.hostile_bad,
                    "tolerated": rec.hostile_tolerated, "outcomes": rec.hostile},
        "rss": rss, "fds": fds,
        "threads": {"idle_start": idle["threads"],
                    "peak": max((s["threads"] for s in samples), default=None),
                    "idle_end": end and end["threads"]},
        "vestibule_cpu_share_under_load": cpu_share,
        "access_log": {"lines": v.access_lines, "by_status": v.access_status},
        "metrics": {
            "upstream_errors": metric_sum(metrics_text, "vestibule_upstream_errors_total"),
            "upstream_retries": metric_sum(metrics_text, "vestibule_upstream_retries_total"),
            "tls_handshakes_ok": metric_sum(metrics_text, "vestibule_tls_handshakes_total",
                                            outcome="ok"),
            "tls_handshakes_failed": metric_sum(metrics_text, "vestibule_tls_handshakes_total",
                                                outcome="failed"),
            "tls_handshakes_timed_out": metric_sum(metrics_text,
                                                   "vestibule_tls_handshakes_total",
                                                   outcome="timed_out"),
            "client_header_timeouts": metric_sum(metrics_text,
                                                 "vestibule_client_header_timeouts_total"),
            "series_after_warmup": baseline and baseline["metrics_series"],
            "series": count_series(metrics_text),
            "bytes": len(metrics_text)},
        "log": {"panics": panics[:10], "errors": len(errors), "errors_first": errors[:10],
                "warnings": len(warns), "warnings_first": warns[:10], "path": v.log_path},
        "sigterm_exit": exit_code,
        "wrk_segments": [seg for load in loads if isinstance(load, WrkLoad)
                         for seg in load.segments],
        "samples": samples,
    }
    path = os.path.join(out, "results.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
    print_summary(summary, path)
    return 0 if not reasons else 1


def print_summary(s, path):
    r, c, w, h, m = s["requests"], s["changes"], s["websockets"], s["hostile"], s["rss"]
    f = s["fds"]
    lines = [
        "",
        f"Soak {'PASSED' if s['pass'] else 'FAILED'} ({s['date']})",
        f"  duration        {s['duration_s']:.0f} s (warm-up {s['warmup_s']} s), Vestibule CPU "
        f"{(s['vestibule_cpu_share_under_load'] or 0) * 100:.0f}% of a core under load",
        f"  requests        {r['sent']:,} well-formed, {r['failed']} failed",
        "                  " + ", ".join(f"{k} {v:,}" for k, v in sorted(r["by_kind"].items())),
        f"  changes         {sum(c['applied_and_served'].values())} applied and served "
        f"({', '.join(f'{k} {v}' for k, v in sorted(c['applied_and_served'].items()))}; "
        f"{c['broken_secrets']} broken Secrets), {c['not_applied']} not applied, "
        f"{c['not_served']} not served; write to installed: median {c['apply_ms_median']} ms, "
        f"p99 {c['apply_ms_p99']} ms, max {c['apply_ms_max']} ms",
        f"  websockets      {w['alive_to_the_end']} of {w['held']} held open to the end",
        f"  hostile         {h['sent']} sent, {len(h['unacceptable'])} unacceptable outcomes"
        + "".join(f"; {n} of {case} tolerated (--tolerate: a known defect)"
                  for case, n in sorted(h["tolerated"].items())),
        f"  RSS             idle {m['idle_start_mib']} MiB; after warm-up {m.get('baseline_mib')} "
        f"MiB, bound {m.get('bound_mib')}, peak {m.get('peak_mib')} (at {m.get('peak_at_s')} s), "
        f"end of load {m.get('end_of_load_mib')}, idle at the end {m.get('idle_end_mib')}; "
        f"slope {m.get('slope_after_warmup_mib_per_hour')} MiB/h",
        f"  descriptors     idle {f['idle_start']}; under load after warm-up "
        f"{f['after_warmup_under_load']}, peak {f['peak']}; idle at the end {f['idle_end']} "
        f"(settled after {f['settled_after_s']} s)",
        f"  upstream        {s['metrics']['upstream_errors']:.0f} errors, "
        f"{s['metrics']['upstream_retries']:.0f} retries (Vestibule's metrics); metric series "
        f"{s['metrics']['series_after_warmup']} after warm-up, {s['metrics']['series']} at the "
        f"end; access log {s['access_log']['lines']:,} lines",
        f"  log             {len(s['log']['panics'])} panics, {s['log']['errors']} errors, "
        f"{s['log']['warnings']} warnings ({s['log']['path']})",
    ]
    for t, cat, detail in s["failures_first"][:10]:
        lines.append(f"  failure at {t} s [{cat}] {detail}")
    for t, case, outcome in h["unacceptable"][:10]:
        lines.append(f"  hostile at {t} s [{case}] {outcome}")
    for reason in s["reasons"]:
        lines.append(f"  FAIL: {reason}")
    lines.append(f"  results: {path}")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except SetupError as e:
        log(f"setup error: {e}")
        sys.exit(2)
    except Exception:  # noqa: BLE001 -- a bug of the harness is not a verdict on Vestibule
        traceback.print_exc()
        sys.exit(2)
