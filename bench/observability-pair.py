#!/usr/bin/env python3
"""The cost of observability, measured with both configurations running at the same time.

Two Vestibule processes share one core (CPU 0), each with one worker thread (the access log's
writer thread there too), both under SCHED_BATCH so that the scheduler hands the core over in
slices rather than at every wake-up, which would cost each a cold cache many times a second:

  observed   --access-log json (to a file), metrics on, /metrics scraped once a second
  bare       --access-log off --metrics false

Each gets its own wrk (keep-alive, 50 connections) for the same seconds, and both forward to
the same echo backend; wrk, the backend and the scraper run on the other CPU(s). Because the
two run in the same instants, whatever the machine does meanwhile (a neighbour's burst, a
frequency change, steal time) falls on both alike, where measurements taken one after the
other see the machine at different speeds: on a shared VM, a bare run 10 s after another can
be 25% faster or slower, which swamps a cost of a few percent.

Each round gives, per process, requests served and CPU time used (utime + stime of all its
threads, /proc), so:

  CPU per request added   observed's CPU µs per request over bare's, minus one: the figure
                          to quote, the median over rounds (their spread is printed too)
  requests/s lost         one minus observed's requests over bare's. The scheduler shares
                          the core by thread, and the observed process has one more (the
                          log's writer), so it gets a little more than half the core, and
                          this figure understates the cost; it is printed as a check
Halfway through the rounds, both processes are started again with their places (start
order, ports) swapped, and each half's median is printed, as one place read about 0.5% less
CPU per request than the other in bare-against-bare runs.

`--control` runs bare against bare: the figures should then be near zero, and their spread is
what the method can resolve.

`--observed`, `--bare` and `--log-to` change what is compared (one feature alone; the log
written to /dev/null), and `--observed-binary` with `--bare-binary` compare two builds.
`--nginx` measures nginx's own access log the same way, as a reference: the same JSON fields
to standard output, written per line as ingress-nginx does, or as `--nginx-log-params` say.

Usage: bench/observability-pair.py [--duration 10] [--rounds 10] [--control] [--no-build]
Results: target/observability-pair.json; logs in target/observability-pair/.
Needs wrk, taskset and curl (Debian: apt-get install wrk util-linux curl), and 2 CPUs or more.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the manifests, written as compare.py writes them)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "observability-pair")
RESULTS = os.path.join(ROOT, "target", "observability-pair.json")
VESTIBULE = os.path.join(ROOT, "target", "release", "vestibule")
ECHO = os.path.join(ROOT, "target", "release", "vestibule-echo")
HOST = compare.HOST
# The echo backend, where compare.py's route (bench_route) sends its requests.
(BACKEND,) = compare.bench_route().endpoints
# (http, https, admin) per process; a range the other bench scripts do not use.
PORTS = {"a": (19380, 19743, 19354), "b": (19381, 19744, 19355)}
PROXY_CPU = "0"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The arguments after the log format on nginx's access_log line (--nginx-log-params).
NGINX_LOG_PARAMS = [""]

# What wrk asks for (--path, --header): by default GET / with no headers but Host, which the
# echo backend answers with a 350-byte description of the request.
REQUEST = {"path": "/", "headers": []}

FLAGS = {
    "observed": ["--access-log", "json", "--metrics", "true"],
    "bare": ["--access-log", "off", "--metrics", "false"],
}

log = compare.log


def fail(msg):
    log(f"observability-pair.py: {msg}")
    sys.exit(1)


def flag(flags, name, default):
    """The value `flags` give `name` (`--name value` or `--name=value`), else `default`."""
    for i, arg in enumerate(flags):
        if arg == name and i + 1 < len(flags):
            return flags[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return default


def manifests(directory):
    """One Ingress for HOST to the backend, as bench/compare.py writes them for Vestibule."""
    os.makedirs(directory, exist_ok=True)
    route = compare.bench_route()
    with open(os.path.join(directory, "bench.yaml"), "w") as f:
        f.write(compare.INGRESS_CLASS_YAML + "---\n" + compare.Vestibule.route_yaml(route))


def status(port, path="/", host=compare.HOST):
    """The status of GET `path` on 127.0.0.1:`port` (compare.get), or None."""
    return (compare.get(port, host, path, timeout=1) or [None])[0]


class Proxy:
    """One Vestibule process on CPU 0 in a configuration, on the ports of slot `a` or `b`."""

    name = "vestibule"

    def __init__(self, slot, config, binary, log_to, client_cpus):
        self.slot, self.config = slot, config
        self.runtime = None
        self.http, self.https, self.admin = PORTS[slot]
        self.log_path = os.devnull if log_to == "null" else os.path.join(WORK, f"access-{slot}.log")
        self.logs, self.metrics = self.features()
        self.proc = self.start(binary, log_to, self.output(log_to, client_cpus))
        deadline = time.monotonic() + 60
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                fail(f"{self.name} ({slot}, {config}) did not become ready: {self.problem()}")
            time.sleep(0.05)
        answer = status(self.http)
        if answer != 200:
            fail(f"{self.name} ({slot}, {config}): GET http://{HOST}/ answered {answer}")

    def features(self):
        """Whether the access log and metrics are on."""
        # Unset, the access log is on (in --log-format's format) and so are metrics.
        return (flag(FLAGS[self.config], "--access-log", "text") != "off",
                flag(FLAGS[self.config], "--metrics", "true") != "false")

    def start(self, binary, log_to, out):
        del log_to  # Vestibule writes its log to standard output, wherever that goes
        self.stderr_path = os.path.join(WORK, f"vestibule-{self.slot}.stderr")
        return compare.spawn(
            ["chrt", "--batch", "0", binary, "run",
             "--manifests", os.path.join(WORK, "manifests"),
             "--worker-threads", "1", "--log-level", "warn",
             "--http-addr", f"127.0.0.1:{self.http}",
             "--https-addr", f"127.0.0.1:{self.https}",
             "--admin-addr", f"127.0.0.1:{self.admin}"] + FLAGS[self.config],
            PROXY_CPU, stdout=out, stderr=open(self.stderr_path, "wb"))

    def ready(self):
        return status(self.admin, "/readyz", "admin") == 200

    def problem(self):
        with open(self.stderr_path) as f:
            return "\n" + f.read()[-2000:]

    def output(self, log_to, client_cpus):
        """The process's standard output: the log file, or a pipe to a process writing it."""
        # Opened for appending, so the file can be emptied between rounds while it is written.
        out = open(self.log_path if self.logs else os.devnull, "ab")
        if self.logs and log_to == "pipe":
            # As in Kubernetes: standard output is a pipe, and the container runtime, another
            # process, writes the lines to a file.
            runtime = subprocess.Popen(["taskset", "-c", client_cpus, "cat"],
                                       stdin=subprocess.PIPE, stdout=out)
            compare.STARTED.append(runtime)
            self.runtime = runtime
            out.close()
            out = runtime.stdin
        # spawn closes our copies of `out`: the runtime sees the end of the pipe when the
        # proxy exits.
        return out

    def stop(self):
        """Stops the process, then the runtime reading its output once that has drained."""
        compare.stop(self.proc)
        if self.runtime is not None:
            self.runtime.wait(10)

    def cpu_seconds(self):
        """User and system CPU seconds so far, of every thread and process of the proxy."""
        user, system = compare.cpu_ticks_by_kind(self.proc.pid)
        return user / CLK_TCK, system / CLK_TCK

    def wrk(self, seconds, client_cpus):
        return subprocess.Popen(
            ["taskset", "-c", client_cpus]
            + compare.wrk_cmd(f"http://127.0.0.1:{self.http}{REQUEST['path']}", seconds,
                              REQUEST["headers"]),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def empty_log(self):
        if self.logs and os.path.isfile(self.log_path):
            open(self.log_path, "w").close()

    def log_lines(self):
        if not self.logs or not os.path.isfile(self.log_path):
            return 0
        with open(self.log_path, "rb") as f:
            return sum(1 for _ in f)


class NginxProxy(Proxy):
    """nginx in Proxy's place (--nginx), for reference: one worker on CPU 0, proxying to the
    same backend with bench/compare.py's configuration. Observed, it writes compare's JSON
    line of the same fields to standard output, a pipe to another process as in a container
    (ingress-nginx's default: its access log is a link to /dev/stdout, written once per
    request); bare, `access_log off`. nginx-light has no metrics to compare."""

    name = "nginx"

    def features(self):
        return self.config == "observed", False

    def start(self, binary, log_to, out):
        del binary  # nginx is nginx
        self.dir = os.path.join(WORK, f"nginx-{self.slot}")
        os.makedirs(self.dir, exist_ok=True)
        target = self.log_path if log_to == "file" else "/dev/stdout"
        access_log = "off"
        if self.logs:
            access_log = f"{target} vestibule_like {NGINX_LOG_PARAMS[0]}".strip()
        cert = compare.make_cert("pair", "ecdsa")
        table = compare.Table((compare.bench_route(),), cert)
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(compare.nginx_conf(self.dir, self.http, self.https, table, access_log))
        return compare.spawn(
            ["chrt", "--batch", "0", "nginx", "-e", os.path.join(self.dir, "error.log"),
             "-p", self.dir, "-c", conf],
            PROXY_CPU, stdout=out, stderr=open(os.path.join(self.dir, "stderr.log"), "wb"))

    def ready(self):
        return status(self.http) == 200

    def problem(self):
        return f"see {self.dir}/error.log"


def scrape(proxies, stop_event, counts):
    """Scrapes /metrics of every process that has metrics once a second until told to stop."""
    while not stop_event.wait(1.0):
        for proxy in proxies:
            if proxy.metrics:
                ok = status(proxy.admin, "/metrics", "admin") == 200
                counts[ok] += 1


def round_once(proxies, seconds, client_cpus, flip):
    """Loads both processes for the same `seconds`; returns per process (requests, cpu s).
    Which load starts first alternates with `flip`, and each process's CPU time is read the
    moment its own load ends, so neither is favoured by the instants it runs alone."""
    for proxy in proxies:
        proxy.empty_log()
    results = [None, None]

    def one(i, load, before):
        out = load.communicate()[0]
        user, system = proxies[i].cpu_seconds()
        results[i] = (out, user - before[0], system - before[1])

    order = [1, 0] if flip else [0, 1]
    threads = []
    for i in order:
        before = proxies[i].cpu_seconds()
        thread = threading.Thread(target=one, args=(i, proxies[i].wrk(seconds, client_cpus), before))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    measured = []
    for proxy, (out, user_s, system_s) in zip(proxies, results):
        load = compare.parse_wrk(out)
        if load["errors"]:
            fail(f"{type(proxy).__name__} ({proxy.config}) answered {load['errors']} requests with errors:"
                 f"\n{out}")
        measured.append({"requests": load["requests"], "cpu_s": user_s + system_s,
                         "user_s": user_s, "system_s": system_s})
    return measured


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2, help="seconds before the first round")
    parser.add_argument("--control", action="store_true",
                        help="bare against bare: what the method reads when there is no cost")
    parser.add_argument("--observed", metavar="FLAGS",
                        help="the observed process's flags instead of the default "
                             f"'{' '.join(FLAGS['observed'])}', to cost one feature alone")
    parser.add_argument("--bare", metavar="FLAGS",
                        help="the bare process's flags instead of the default "
                             f"'{' '.join(FLAGS['bare'])}'")
    parser.add_argument("--observed-binary", metavar="PATH", default=VESTIBULE,
                        help="the observed process's binary (default: the release build)")
    parser.add_argument("--bare-binary", metavar="PATH", default=VESTIBULE,
                        help="the bare process's binary: with --bare set to the observed "
                             "flags, compares two builds' cost of observability directly")
    parser.add_argument("--log-to", choices=("pipe", "file", "null"), default="pipe",
                        help="where access log lines go: a pipe to another process that writes "
                             "them to a file, as a container runtime does with standard output "
                             "(the default); a file Vestibule writes itself; /dev/null")
    parser.add_argument("--nginx", action="store_true",
                        help="nginx in place of Vestibule, with its access log (the same JSON "
                             "fields) on against off, as a reference for the method")
    parser.add_argument("--nginx-log-params", metavar="PARAMS", default="",
                        help="with --nginx: the access_log line's parameters, such as "
                             "'buffer=64k flush=1s' (default: none, one write per request, "
                             "as ingress-nginx does)")
    parser.add_argument("--path", default="/",
                        help="the path and query wrk asks for; the echo backend answers "
                             "'?bytes=N' with N bytes, as a page or an asset would")
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="a header wrk sends (repeatable), such as a browser's User-Agent")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    NGINX_LOG_PARAMS[0] = args.nginx_log_params
    if not args.path.startswith("/"):
        fail("--path must start with /")
    REQUEST["path"], REQUEST["headers"] = args.path, args.header
    if args.observed is not None:
        FLAGS["observed"] = args.observed.split()
    if args.bare is not None:
        FLAGS["bare"] = args.bare.split()
    if args.duration < 1 or args.rounds < 1:
        fail("--duration and --rounds must be at least 1")
    for tool in ("wrk", "taskset") + (("nginx", "openssl") if args.nginx else ()):
        if shutil.which(tool) is None:
            fail(f"bench/observability-pair.py needs {tool} (Debian: apt-get install wrk "
                 "util-linux, and nginx-light openssl for --nginx)")
    cpus = os.cpu_count() or 1
    if cpus < 2:
        fail("bench/observability-pair.py needs at least 2 CPUs")
    client_cpus = "1" if cpus == 2 else f"1-{cpus - 1}"
    # This script's own work (the scraper) stays off the measured core.
    os.sched_setaffinity(0, set(range(1, cpus)))

    if not args.no_build:
        log("building vestibule and vestibule-echo (release)...")
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet",
                        "-p", "vestibule", "-p", "vestibule-testkit", "--bins"],
                       cwd=ROOT, check=True)
    shutil.rmtree(WORK, ignore_errors=True)
    manifests(os.path.join(WORK, "manifests"))

    try:
        compare.spawn([ECHO, "backend", f"{BACKEND[0]}:{BACKEND[1]}"], client_cpus,
                      stdout=subprocess.DEVNULL, stderr=open(os.path.join(WORK, "echo.log"), "wb"))
        deadline = time.monotonic() + 10
        while status(BACKEND[1]) != 200:
            if time.monotonic() > deadline:
                fail("the echo backend did not come up")
            time.sleep(0.05)

        configs = ("bare", "bare") if args.control else ("observed", "bare")
        # Under --control, the first is the one counted as "observed".
        binaries = (args.observed_binary, args.bare_binary)
        if args.control:
            binaries = (args.bare_binary, args.bare_binary)
        # The process started first, on slot a's ports, read about 0.5% less CPU per request
        # than the other in bare-against-bare runs, so each configuration takes each place for
        # half the rounds, new processes started for the second half.
        halves = [(False, (args.rounds + 1) // 2), (True, args.rounds // 2)]
        proxies = []
        stop_event, scraped = threading.Event(), {True: 0, False: 0}
        scraper = threading.Thread(target=scrape, args=(proxies, stop_event, scraped))
        scraper.start()
        rounds = []
        try:
            for swapped, count in halves:
                if count == 0:
                    continue
                order = [1, 0] if swapped else [0, 1]
                started = {}
                for slot, i in zip("ab", order):
                    kind = NginxProxy if args.nginx else Proxy
                    started[i] = kind(slot, configs[i], binaries[i], args.log_to, client_cpus)
                proxies[:] = [started[0], started[1]]
                log(f"{configs[0]} on slot {proxies[0].slot}, {configs[1]} on slot "
                    f"{proxies[1].slot}; warming up for {args.warmup} s...")
                round_once(proxies, args.warmup, client_cpus, False)
                log(f"{count} rounds of {args.duration} s, both configurations at once...")
                measure(proxies, count, args.duration, client_cpus, configs, rounds)
                stopping, proxies[:] = list(proxies), []
                for proxy in stopping:
                    proxy.stop()
        finally:
            stop_event.set()
            scraper.join()
    finally:
        compare.stop_all()
    report(args, configs, binaries, rounds, scraped)


def measure(proxies, count, duration, client_cpus, configs, rounds):
    """Runs `count` rounds of `duration` s, appending each round's figures to `rounds`."""
    for _ in range(count):
        number = len(rounds) + 1
        first, second = round_once(proxies, duration, client_cpus, number % 2 == 0)
        entry = {"slot": proxies[0].slot, "log_lines": proxies[0].log_lines()}
        for name, m in (("first", first), ("second", second)):
            entry[name] = dict(m, rps=m["requests"] / duration,
                               cpu_us=m["cpu_s"] / m["requests"] * 1e6,
                               user_us=m["user_s"] / m["requests"] * 1e6)
        entry["cpu_cost"] = entry["first"]["cpu_us"] / entry["second"]["cpu_us"] - 1
        entry["rps_lost"] = 1 - entry["first"]["rps"] / entry["second"]["rps"]
        entry["core_used"] = (first["cpu_s"] + second["cpu_s"]) / duration
        entry["user_added_us"] = entry["first"]["user_us"] - entry["second"]["user_us"]
        entry["cpu_added_us"] = entry["first"]["cpu_us"] - entry["second"]["cpu_us"]
        rounds.append(entry)
        log(f"  round {number:2}  {configs[0]} {entry['first']['rps']:7.0f} req/s "
            f"{entry['first']['cpu_us']:6.2f} µs/req   {configs[1]} "
            f"{entry['second']['rps']:7.0f} req/s {entry['second']['cpu_us']:6.2f} µs/req"
            f"   CPU +{entry['cpu_cost'] * 100:5.1f}%  req/s -{entry['rps_lost'] * 100:5.1f}%"
            f"   core {entry['core_used']:.2f}")


def report(args, configs, binaries, rounds, scraped):
    """Prints the summary over all rounds and writes every round to RESULTS."""
    def summary(key, of=rounds):
        values = sorted(r[key] * 100 for r in of)
        return {"median": statistics.median(values), "min": values[0], "max": values[-1],
                "mean": statistics.fmean(values),
                "stdev": statistics.stdev(values) if len(values) > 1 else 0.0}

    cpu, rps = summary("cpu_cost"), summary("rps_lost")
    core = statistics.median(r["core_used"] for r in rounds)
    label = "bare vs bare (control)" if args.control else "observed vs bare"
    print(f"\n{label}, at the same time on one core, {args.rounds} rounds of {args.duration} s")
    print(f"{'':34} {'median':>7} {'min':>7} {'max':>7} {'stdev':>7}")
    for name, s in (("CPU per request added", cpu), ("requests/s lost", rps)):
        print(f"{name:34} {s['median']:6.1f}% {s['min']:6.1f}% {s['max']:6.1f}% {s['stdev']:6.1f}%")
    by_slot = {}
    for slot in "ab":
        of = [r for r in rounds if r["slot"] == slot]
        if of:
            by_slot[slot] = summary("cpu_cost", of)
            print(f"  {configs[0]} on slot {slot}: median {by_slot[slot]['median']:.1f}% "
                  f"over {len(of)} rounds")
    added = statistics.median(r["cpu_added_us"] for r in rounds)
    user = statistics.median(r["user_added_us"] for r in rounds)
    print(f"CPU µs per request added (median): {added:.2f}, of which user space {user:.2f} "
          f"and the kernel {added - user:.2f} (clock ticks: rough)")
    print(f"core 0 used by the two together (median): {core:.2f}")
    if core < 0.9:
        print("  the core was not saturated: the load side limited the rate, so requests/s lost "
              "understates the cost; CPU per request added still holds")
    if not args.control:
        served = sum(r["first"]["requests"] for r in rounds)
        lines = sum(r["log_lines"] for r in rounds)
        print(f"access log lines per request: {lines / served:.4f}; "
              f"/metrics scrapes: {scraped[True]} answered, {scraped[False]} failed")
    with open(RESULTS, "w") as f:
        json.dump({"mode": "control" if args.control else "observed-vs-bare",
                   "flags": None if args.nginx else [FLAGS[configs[0]], FLAGS[configs[1]]],
                   "binaries": ["nginx", "nginx"] if args.nginx else list(binaries),
                   "nginx_log_params": args.nginx_log_params if args.nginx else None,
                   "log_to": args.log_to, "request": REQUEST,
                   "duration_s": args.duration, "configs": configs, "rounds": rounds,
                   "cpu_per_request_added_pct": cpu, "by_slot": by_slot,
                   "requests_per_s_lost_pct": rps,
                   "core_used": core, "scrapes": {"answered": scraped[True],
                                                   "failed": scraped[False]}}, f, indent=1)
    log(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
