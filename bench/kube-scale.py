#!/usr/bin/env python3
"""Scale figures for the Kubernetes source.

Serves a large cluster from the test API server (vestibule-test-apiserver: the real
list/watch protocol over HTTP), runs the release `vestibule run` against it through a
kubeconfig, and reports:

- time from process start to /readyz 200 (every kind listed, first table published);
- resident memory at ready and after the status writes have settled (VmRSS, and the
  peak VmHWM);
- time from an Ingress change written to the API server to the new host being served,
  over several changes (min, median, max).

Usage: bench/kube-scale.py [--ingresses 10000] [--secrets 1000] [--changes 20]
"""

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(port, host, path="/"):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path, headers={"Host": host})
        code = conn.getresponse().status
        conn.close()
        return code
    except OSError:
        return None


def memory_kib(pid):
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ingresses", type=int, default=10000)
    parser.add_argument("--secrets", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds to let status writes finish before the second reading")
    args = parser.parse_args()

    subprocess.run(
        ["cargo", "build", "--release", "--locked", "-p", "vestibule", "-p", "vestibule-testkit",
         "--bins"],
        cwd=ROOT, check=True)

    work = tempfile.mkdtemp(prefix="vestibule-kube-scale-")
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
        loaded = time.monotonic()
        line = api.stdout.readline()
        if not line.startswith("listening on"):
            sys.exit(f"the test API server did not start: {line!r}")
        print(f"API server loaded in {time.monotonic() - loaded:.1f} s", file=sys.stderr)

        env = dict(os.environ, POD_NAME="vestibule-bench", POD_NAMESPACE="vestibule")
        started = time.monotonic()
        vestibule = subprocess.Popen(
            [os.path.join(RELEASE, "vestibule"), "run", "--kubeconfig", kubeconfig,
             "--http-addr", f"127.0.0.1:{http_port}", "--https-addr", f"127.0.0.1:{https_port}",
             "--admin-addr", f"127.0.0.1:{admin_port}", "--publish-status-address", "192.0.2.1",
             "--log-format", "json"],
            env=env, stderr=open(os.path.join(ROOT, "target", "kube-scale-vestibule.log"), "w"))
        processes.append(vestibule)
        while status(admin_port, "admin", "/readyz") != 200:
            if vestibule.poll() is not None:
                sys.exit("vestibule exited before it was ready")
            if time.monotonic() - started > 600:
                sys.exit("not ready within 600 s")
            time.sleep(0.01)
        ready_s = time.monotonic() - started
        at_ready = memory_kib(vestibule.pid)
        # The first --secrets hosts have TLS and redirect plain HTTP; the last one does not.
        last = f"h{args.ingresses - 1}.scale.test"
        if status(http_port, last) != 200:
            sys.exit(f"{last} is not served once ready")
        time.sleep(args.settle)
        settled = memory_kib(vestibule.pid)

        latencies = []
        for _ in range(args.changes):
            n = random.randrange(args.ingresses)
            api.stdin.write(f"touch {n}\n")
            api.stdin.flush()
            written = time.monotonic()
            reply = api.stdout.readline().split()
            host = next(p.split("=", 1)[1] for p in reply if p.startswith("host="))
            while status(http_port, host) != 200:
                if time.monotonic() - written > 30:
                    sys.exit(f"{host} not served within 30 s")
                time.sleep(0.002)
            latencies.append((time.monotonic() - written) * 1000)
            time.sleep(0.2)

        result = {
            "ingresses": args.ingresses,
            "services": args.ingresses,
            "endpoint_slices": args.ingresses,
            "tls_secrets": args.secrets,
            "start_to_ready_s": round(ready_s, 2),
            "rss_at_ready_mib": round(at_ready["VmRSS"] / 1024, 1),
            "rss_settled_mib": round(settled["VmRSS"] / 1024, 1),
            "rss_peak_mib": round(settled["VmHWM"] / 1024, 1),
            "event_to_served_ms": {
                "min": round(min(latencies), 1),
                "median": round(statistics.median(latencies), 1),
                "max": round(max(latencies), 1),
            },
        }
        print(f"| objects | {args.ingresses} Ingresses, Services, EndpointSlices; "
              f"{args.secrets} TLS Secrets |")
        print("|---|---|")
        print(f"| start → ready | {result['start_to_ready_s']} s |")
        print(f"| RSS at ready / settled / peak | {result['rss_at_ready_mib']} / "
              f"{result['rss_settled_mib']} / {result['rss_peak_mib']} MiB |")
        lat = result["event_to_served_ms"]
        print(f"| watch event → served (min / median / max of {args.changes}) | "
              f"{lat['min']} / {lat['median']} / {lat['max']} ms |")
        with open(os.path.join(ROOT, "target", "kube-scale.json"), "w") as f:
            json.dump(result, f, indent=2)
        print("raw numbers: target/kube-scale.json", file=sys.stderr)
    finally:
        for p in reversed(processes):
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
