#!/usr/bin/env python3
"""How fast the dashboard's JSON API answers on a large configuration.

Serves a large cluster from the test API server (vestibule-test-apiserver: the real
list/watch protocol over HTTP), runs the release `vestibule run --dashboard` against it,
sends some traffic so the metrics have series, then times every /api/v1/ endpoint over
keep-alive (client-side wall time, the answer read to its end) and reports the median,
95th percentile and maximum, with the size of each answer. The target: under 50 ms with
10,000 Ingresses.

Usage: bench/dashboard.py [--ingresses 10000] [--secrets 1000] [--rounds 50] [--no-build]
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
ENDPOINTS = [
    "overview",
    "routes",
    "routes?q=h9999.scale&limit=10",
    "routes?limit=1000",
    "services",
    "certificates",
    "diagnostics",
    "traffic",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(conn, path, host="admin"):
    conn.request("GET", path, headers={"Host": host})
    response = conn.getresponse()
    body = response.read()
    return response.status, body


def wait_ready(admin_port, process):
    started = time.monotonic()
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=2)
            if get(conn, "/readyz")[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        if process.poll() is not None:
            sys.exit("vestibule exited before it was ready")
        if time.monotonic() - started > 600:
            sys.exit("not ready within 600 s")
        time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ingresses", type=int, default=10000)
    parser.add_argument("--secrets", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        subprocess.run(
            ["cargo", "build", "--release", "--locked", "-p", "vestibule", "-p",
             "vestibule-testkit", "--bins"], cwd=ROOT, check=True)

    work = tempfile.mkdtemp(prefix="vestibule-dashboard-bench-")
    kubeconfig = os.path.join(work, "kubeconfig")
    backend = free_port()
    http_port, https_port, admin_port = free_port(), free_port(), free_port()
    processes = []
    try:
        processes.append(subprocess.Popen(
            [os.path.join(RELEASE, "vestibule-echo"), "backend", f"127.0.0.1:{backend}"]))
        api = subprocess.Popen(
            [os.path.join(RELEASE, "vestibule-test-apiserver"),
             "--ingresses", str(args.ingresses), "--secrets", str(args.secrets),
             "--backend", f"127.0.0.1:{backend}", "--kubeconfig", kubeconfig],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        processes.append(api)
        if not api.stdout.readline().startswith("listening on"):
            sys.exit("the test API server did not start")
        env = dict(os.environ, POD_NAME="vestibule-bench", POD_NAMESPACE="vestibule")
        vestibule = subprocess.Popen(
            [os.path.join(RELEASE, "vestibule"), "run", "--kubeconfig", kubeconfig,
             "--http-addr", f"127.0.0.1:{http_port}", "--https-addr", f"127.0.0.1:{https_port}",
             "--admin-addr", f"127.0.0.1:{admin_port}", "--publish-status-address", "192.0.2.1",
             "--log-format", "json", "--access-log", "off", "--dashboard"],
            env=env, stderr=subprocess.DEVNULL)
        processes.append(vestibule)
        ready = wait_ready(admin_port, vestibule)
        print(f"ready in {ready:.1f} s with {args.ingresses} Ingresses", file=sys.stderr)

        proxy = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
        for n in range(0, args.ingresses, max(1, args.ingresses // 500)):
            get(proxy, "/", host=f"h{n}.scale.test")

        admin = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
        overview = json.loads(get(admin, "/api/v1/overview")[1])
        print(f"installed: {overview['virtual_hosts']} hosts, {overview['routes']} routes, "
              f"{overview['services']} Services, {overview['certificates']} certificates",
              file=sys.stderr)
        if overview["routes"] < args.ingresses:
            sys.exit("the configuration is not all installed")
        print(f"| endpoint ({args.ingresses} Ingresses, {args.secrets} TLS Secrets) "
              "| median | p95 | max | size |")
        print("|---|---|---|---|---|")
        for endpoint in ENDPOINTS:
            path = f"/api/v1/{endpoint}"
            times = []
            size = 0
            for _ in range(args.rounds):
                started = time.perf_counter()
                code, body = get(admin, path)
                times.append((time.perf_counter() - started) * 1000)
                if code != 200:
                    sys.exit(f"{path}: HTTP {code}: {body[:200]!r}")
                size = len(body)
            times.sort()
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            print(f"| `{path}` | {statistics.median(times):.1f} ms | {p95:.1f} ms "
                  f"| {times[-1]:.1f} ms | {size / 1024:.0f} KiB |")
    finally:
        for p in reversed(processes):
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
