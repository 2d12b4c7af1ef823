#!/usr/bin/env bash
# The cost of observability: requests/s through Vestibule with metrics and the access log on,
# against the same with both off, in one run.
#
#   observed   --access-log json (stdout to a file), metrics on, /metrics scraped once a second
#   bare       --access-log off --metrics false
#
# Vestibule runs with one worker thread pinned to CPU 0 (its access log writer thread too);
# wrk (keep-alive, 50 connections), the echo backend and the scraper run on the other CPUs. The two configurations alternate over
# several rounds (A B, B A, A B, ...), each measurement in a fresh process after a warm-up, so
# that drift in the machine's speed falls on both alike. Two costs are printed: requests/s
# lost, and Vestibule's CPU time per request gained (the one to trust when the clients, not
# Vestibule, are the bottleneck: the script says so). Each is given twice: from the median of
# each configuration, and as the median of the rounds' own ratios (the COST lines), which
# cancels part of the drift of a shared machine's speed over the run. On a shared VM that
# drift still moves the result by several points: bench/observability-pair.py runs both
# configurations at once, and its figure is the one to quote.
# Every figure, every round's included, goes to target/observability-bench.json.
#
# Needs wrk, taskset and curl (Debian: apt-get install wrk util-linux curl), and 2 CPUs or more.
# Run on an otherwise idle machine; on shared VMs compare only figures from one run.
#
# Usage: bench/observability.sh [seconds per measurement, default 10] [rounds, default 5]
#        bench/observability.sh --instructions [seconds of load per configuration, default 10]
#   The second form counts instructions per request under valgrind (apt-get install valgrind)
#   for four configurations (bare, metrics only, access log only, both): a figure that the
#   speed of a shared machine does not move.
set -euo pipefail
cd "$(dirname "$0")/.."

INSTRUCTIONS=0
if [ "${1:-}" = --instructions ]; then
  INSTRUCTIONS=1
  shift
fi
DURATION=${1:-10}
ROUNDS=${2:-5}
WARMUP=2
CONNECTIONS=50
PROXY_CPU=0
# wrk and the scraper on CPU 1; the backend on the CPUs after it, or CPU 1 too on 2 CPUs.
CLIENT_CPUS=1
if [ "$(nproc)" -ge 3 ]; then BACKEND_CPUS=2-$(($(nproc) - 1)); else BACKEND_CPUS=1; fi
HOST=bench.local
BACKEND=127.0.0.1:19200
HTTP_ADDR=127.0.0.1:19280
HTTPS_ADDR=127.0.0.1:19643
ADMIN_ADDR=127.0.0.1:19254
WORK=target/observability-bench
RESULTS=target/observability-bench.json
# VESTIBULE=PATH measures another build (built as it is; nothing is built then).
VESTIBULE=${VESTIBULE:-target/release/vestibule}
ECHO=target/release/vestibule-echo

for tool in wrk taskset curl; do
  if ! command -v "$tool" >/dev/null; then
    echo "bench/observability.sh needs $tool (Debian: apt-get install wrk util-linux curl)" >&2
    exit 2
  fi
done
if [ "$INSTRUCTIONS" = 1 ]; then
  for tool in valgrind callgrind_control callgrind_annotate; do
    command -v "$tool" >/dev/null || {
      echo "bench/observability.sh --instructions needs $tool (Debian: apt-get install valgrind)" >&2
      exit 2
    }
  done
fi
[ "$(nproc)" -ge 2 ] || { echo "bench/observability.sh needs at least 2 CPUs" >&2; exit 2; }
case "$DURATION$ROUNDS" in
  *[!0-9]*) echo "usage: bench/observability.sh [--instructions] [seconds] [rounds]" >&2; exit 2 ;;
esac
if [ "$DURATION" -lt 1 ] || [ "$ROUNDS" -lt 1 ]; then
  echo "usage: bench/observability.sh [--instructions] [seconds] [rounds]" >&2
  exit 2
fi

if [ "$VESTIBULE" = target/release/vestibule ]; then
  echo "building vestibule and vestibule-echo (release)..." >&2
  cargo build --release --locked --quiet -p vestibule -p vestibule-testkit --bins
fi

# The flags this measures; stop early, with a clear message, on a binary without them.
help=$("$VESTIBULE" run --help)
for flag in --access-log --metrics; do
  grep -Eq -- "(^|[[:space:],])$flag([[:space:]=<]|\$)" <<<"$help" || {
    echo "$VESTIBULE run does not know $flag: nothing to measure" >&2
    exit 2
  }
done

rm -rf "$WORK"
mkdir -p "$WORK/manifests"

# --- Processes, and stopping them on any exit --------------------------------------------------

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -f "$WORK"/access-*.log
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Stops one process started here (SIGTERM, then SIGKILL after 5 s) and forgets it.
stop() {
  local pid=$1 i rest=()
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for i in "${PIDS[@]}"; do [ "$i" = "$pid" ] || rest+=("$i"); done
  PIDS=("${rest[@]+"${rest[@]}"}")
}

# --- The backend and the manifests ----------------------------------------------------------------

taskset -c "$BACKEND_CPUS" "$ECHO" backend "$BACKEND" \
  >"$WORK/echo.log" 2>&1 &
PIDS+=($!)

cat >"$WORK/manifests/bench.yaml" <<YAML
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: vestibule
spec:
  controller: vestibule.dev/ingress-controller
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bench
  namespace: bench
spec:
  ingressClassName: vestibule
  rules:
    - host: $HOST
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service: {name: backend, port: {number: 80}}
---
apiVersion: v1
kind: Service
metadata:
  name: backend
  namespace: bench
spec:
  ports:
    - name: http
      port: 80
      targetPort: ${BACKEND##*:}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: backend-1
  namespace: bench
  labels:
    kubernetes.io/service-name: backend
addressType: IPv4
ports:
  - name: http
    port: ${BACKEND##*:}
endpoints:
  - addresses: ["${BACKEND%:*}"]
    conditions: {ready: true}
YAML

for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://$BACKEND/" && break
  sleep 0.05
done
curl -sf -o /dev/null "http://$BACKEND/" || { echo "the echo backend did not come up" >&2; exit 1; }

# --- One measurement ------------------------------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# Starts Vestibule in configuration $1 (observed|bare) and waits for /readyz.
VESTIBULE_PID=
# Anything after the configuration runs Vestibule under it (valgrind, for --instructions).
start_vestibule() {
  local config=$1 out flags
  shift
  case "$config" in
    observed)
      out="$WORK/access-observed.log"
      flags=(--access-log json --metrics true)
      ;;
    bare)
      out=/dev/null
      flags=(--access-log off --metrics false)
      ;;
    access-log)
      out="$WORK/access-observed.log"
      flags=(--access-log json --metrics false)
      ;;
    metrics)
      out=/dev/null
      flags=(--access-log off --metrics true)
      ;;
  esac
  # >> opens the file for appending, so it can be emptied while Vestibule writes to it.
  : >"$WORK/vestibule-$config.stderr"
  taskset -c "$PROXY_CPU" "$@" "$VESTIBULE" run --manifests "$WORK/manifests" \
    --worker-threads 1 --log-level warn --shutdown-grace-period 1s \
    --http-addr "$HTTP_ADDR" --https-addr "$HTTPS_ADDR" --admin-addr "$ADMIN_ADDR" \
    "${flags[@]}" >>"$out" 2>>"$WORK/vestibule-$config.stderr" &
  VESTIBULE_PID=$!
  PIDS+=("$VESTIBULE_PID")
  local i
  for i in $(seq 1 1200); do
    if ! kill -0 "$VESTIBULE_PID" 2>/dev/null; then
      echo "vestibule ($config) exited before it was ready:" >&2
      tail -n 20 "$WORK/vestibule-$config.stderr" >&2
      exit 1
    fi
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$ADMIN_ADDR/readyz")" = 200 ] && break
    sleep 0.05
  done
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$ADMIN_ADDR/readyz")" = 200 ] || {
    echo "vestibule ($config) not ready after 60 s:" >&2
    tail -n 20 "$WORK/vestibule-$config.stderr" >&2
    exit 1
  }
  local code
  code=$(curl -s -o "$WORK/probe.body" -w '%{http_code}' -H "Host: $HOST" "http://$HTTP_ADDR/")
  if [ "$code" != 200 ] || ! grep -q '"name":"backend"' "$WORK/probe.body"; then
    echo "vestibule ($config): GET http://$HOST/ answered $code, not the echo backend:" >&2
    head -c 400 "$WORK/probe.body" >&2
    exit 1
  fi
}

# Scrapes /metrics once a second until killed; appends one status code a line to $1.
scrape_loop() {
  while :; do
    curl -s -o "$WORK/metrics.last" -w '%{http_code}\n' --max-time 1 \
      "http://$ADMIN_ADDR/metrics" >>"$1" || echo 000 >>"$1"
    sleep 1
  done
}

wrk_run() {
  taskset -c "$CLIENT_CPUS" wrk -t1 -c"$CONNECTIONS" -d"$1s" -H "Host: $HOST" \
    "http://$HTTP_ADDR/"
}

# Results of the last measurement, read by the caller.
M_RPS='' M_REQUESTS='' M_NON2XX='' M_CPU='' M_CPU_US='' M_LOG_LINES=''
M_SCRAPES='' M_SCRAPES_FAILED='' M_METRICS_BYTES=

measure() {
  local config=$1 scraper='' scrapes="$WORK/scrapes-$1.txt" out
  start_vestibule "$config"
  : >"$scrapes"
  if [ "$config" = observed ]; then
    # Before the load: the counters exist and the request above is in them.
    curl -sf -o "$WORK/metrics.last" "http://$ADMIN_ADDR/metrics" || true
    grep -q '^vestibule_http_requests_total{' "$WORK/metrics.last" || {
      echo "vestibule (observed): /metrics has no vestibule_http_requests_total" >&2
      exit 1
    }
    scrape_loop "$scrapes" &
    scraper=$!
    PIDS+=("$scraper")
    # The scraper (and the curl it starts) on the client CPUs, away from Vestibule.
    taskset -pc "$CLIENT_CPUS" "$scraper" >/dev/null
  fi

  wrk_run "$WARMUP" >/dev/null
  if [ "$config" = observed ]; then : >"$WORK/access-observed.log"; fi
  : >"$scrapes"
  local ticks_before ticks_after
  ticks_before=$(cpu_ticks "$VESTIBULE_PID")
  out=$(wrk_run "$DURATION")
  ticks_after=$(cpu_ticks "$VESTIBULE_PID")
  echo "$out" >"$WORK/wrk-$config.last"

  M_RPS=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' <<<"$out")
  M_REQUESTS=$(awk '/requests in/ { print $1 }' <<<"$out")
  M_NON2XX=$(awk '/Non-2xx or 3xx responses/ { print $NF }' <<<"$out")
  M_NON2XX=${M_NON2XX:-0}
  M_CPU=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$CLK_TCK" -v d="$DURATION" \
    'BEGIN { printf "%.2f", t / hz / d }')
  if [ -z "$M_RPS" ] || [ -z "$M_REQUESTS" ] || [ "$M_REQUESTS" -eq 0 ]; then
    echo "could not read wrk's output:" >&2
    echo "$out" >&2
    exit 1
  fi
  # Vestibule's CPU time (all its threads) per request, in microseconds.
  M_CPU_US=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$CLK_TCK" -v n="$M_REQUESTS" \
    'BEGIN { printf "%.2f", t / hz / n * 1e6 }')

  if [ -n "$scraper" ]; then
    stop "$scraper"
    M_SCRAPES=$(wc -l <"$scrapes" | tr -d ' ')
    M_SCRAPES_FAILED=$(grep -vc '^200$' "$scrapes" || true)
    M_METRICS_BYTES=$(wc -c <"$WORK/metrics.last" | tr -d ' ')
  else
    M_SCRAPES=0 M_SCRAPES_FAILED=0 M_METRICS_BYTES=0
  fi

  stop "$VESTIBULE_PID"
  if [ "$config" = observed ]; then
    # Lines written by the logger after the load, all flushed once the process has exited.
    M_LOG_LINES=$(wc -l <"$WORK/access-observed.log" | tr -d ' ')
    head -n 1 "$WORK/access-observed.log" >"$WORK/access-log.sample"
    rm -f "$WORK/access-observed.log"
  else
    M_LOG_LINES=0
  fi
}

# --- The rounds -------------------------------------------------------------------------------

declare -A RPS CPU CPU_US LINES REQS
RPS=([observed]="" [bare]="") CPU=([observed]="" [bare]="") CPU_US=([observed]="" [bare]="")
LINES=([observed]="" [bare]="") REQS=([observed]="" [bare]="")
SCRAPE_COUNT=0 SCRAPE_FAILED=0 METRICS_BYTES=0 NON2XX=0

# --- Instructions per request (--instructions) ---------------------------------------------------

# Counts the user-space instructions Vestibule executes per request under valgrind's
# callgrind, counting only while the load runs. Unlike time, the count does not move with
# the other tenants of a shared machine, so a difference of a few percent shows. It leaves out
# the kernel's share (the socket system calls, about half of the CPU time here) and cache
# effects, so it is a bound on the cost in time, not the cost itself.
measure_instructions() {
  local config=$1 out="$WORK/callgrind-$1.out" load total requests
  rm -f "$out"*
  start_vestibule "$config" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$out"
  wrk_run "$WARMUP" >/dev/null
  callgrind_control -i on "$VESTIBULE_PID" >/dev/null 2>&1
  load=$(wrk_run "$DURATION")
  callgrind_control -i off "$VESTIBULE_PID" >/dev/null 2>&1
  stop "$VESTIBULE_PID"
  requests=$(awk '/requests in/ { print $1 }' <<<"$load")
  total=$(callgrind_annotate "$out"* 2>/dev/null |
    awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }')
  if [ -z "$requests" ] || [ "$requests" -eq 0 ] || [ -z "$total" ]; then
    echo "no count for $config (requests: ${requests:-none}, instructions: ${total:-none})" >&2
    exit 1
  fi
  rm -f "$out"* "$WORK"/access-*.log
  M_REQUESTS=$requests
  M_INSTRUCTIONS=$((total / requests))
}

if [ "$INSTRUCTIONS" = 1 ]; then
  echo "instructions per request under callgrind, ${DURATION} s of load per configuration..." >&2
  declare -A IPR
  for config in bare metrics access-log observed; do
    measure_instructions "$config"
    IPR[$config]=$M_INSTRUCTIONS
    printf '  %-10s %8d instructions/request (%d requests)\n' "$config" "$M_INSTRUCTIONS" \
      "$M_REQUESTS" >&2
  done
  echo
  printf '%-44s %12s %8s\n' "user-space instructions per request" "count" "added"
  for config in bare metrics access-log observed; do
    printf '%-44s %12d %7.1f%%\n' "$config" "${IPR[$config]}" \
      "$(awk -v a="${IPR[$config]}" -v b="${IPR[bare]}" 'BEGIN { print (a / b - 1) * 100 }')"
  done
  {
    printf '{\n  "mode": "instructions",\n  "seconds": %s,\n' "$DURATION"
    printf '  "instructions_per_request": {"bare": %d, "metrics": %d, "access_log": %d, "observed": %d}\n}\n' \
      "${IPR[bare]}" "${IPR[metrics]}" "${IPR[access-log]}" "${IPR[observed]}"
  } >"$RESULTS"
  echo "results: $RESULTS" >&2
  exit 0
fi

echo "$ROUNDS rounds of ${DURATION} s per configuration (plus ${WARMUP} s warm-up each)..." >&2
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order="observed bare"; else order="bare observed"; fi
  for config in $order; do
    measure "$config"
    RPS[$config]+="$M_RPS "
    CPU[$config]+="$M_CPU "
    CPU_US[$config]+="$M_CPU_US "
    REQS[$config]+="$M_REQUESTS "
    LINES[$config]+="$M_LOG_LINES "
    NON2XX=$((NON2XX + M_NON2XX))
    if [ "$config" = observed ]; then
      SCRAPE_COUNT=$((SCRAPE_COUNT + M_SCRAPES))
      SCRAPE_FAILED=$((SCRAPE_FAILED + M_SCRAPES_FAILED))
      METRICS_BYTES=$M_METRICS_BYTES
      printf '  round %d %-9s %8s req/s  cpu %s  %6s µs/req  %s log lines, %s scrapes\n' \
        "$round" "$config" "$M_RPS" "$M_CPU" "$M_CPU_US" "$M_LOG_LINES" "$M_SCRAPES" >&2
    else
      printf '  round %d %-9s %8s req/s  cpu %s  %6s µs/req\n' \
        "$round" "$config" "$M_RPS" "$M_CPU" "$M_CPU_US" >&2
    fi
  done
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '
  { v[NR] = $1 }
  END { if (NR % 2) printf "%.2f", v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
json_list() { tr ' ' '\n' <<<"$1" | grep . | paste -sd, -; }
sum() { tr ' ' '\n' <<<"$1" | grep . | awk '{ s += $1 } END { printf "%d", s }'; }

observed=$(median "${RPS[observed]}")
bare=$(median "${RPS[bare]}")
ratio=$(awk -v a="$observed" -v b="$bare" 'BEGIN { printf "%.4f", a / b }')
cost=$(awk -v r="$ratio" 'BEGIN { printf "%.1f", (1 - r) * 100 }')
cpu_observed=$(median "${CPU[observed]}")
cpu_bare=$(median "${CPU[bare]}")
us_observed=$(median "${CPU_US[observed]}")
us_bare=$(median "${CPU_US[bare]}")
cpu_cost=$(awk -v a="$us_observed" -v b="$us_bare" 'BEGIN { printf "%.1f", (a / b - 1) * 100 }')
# The machine's speed drifts over a run (other tenants of a shared host); both
# configurations of a round ran back to back, so the ratio within each round cancels the
# drift, and the median of those ratios is the figure reported.
paired_list() { # observed-list bare-list invert(0: lost = 1 - o/b; 1: added = o/b - 1)
  paste -d' ' <(tr ' ' '\n' <<<"$1" | grep .) <(tr ' ' '\n' <<<"$2" | grep .) |
    awk -v invert="$3" '{ r = $1 / $2; printf "%s%.1f", (NR > 1 ? "," : ""), (invert ? r - 1 : 1 - r) * 100 }'
}
paired_cost() { printf '%.1f' "$(median "$(paired_list "$@" | tr ',' ' ')")"; }
pair_cost=$(paired_cost "${RPS[observed]}" "${RPS[bare]}" 0)
pair_cpu_cost=$(paired_cost "${CPU_US[observed]}" "${CPU_US[bare]}" 1)
logged=$(sum "${LINES[observed]}")
requested=$(sum "${REQS[observed]}")
log_share=$(awk -v l="$logged" -v r="$requested" 'BEGIN { printf "%.4f", (r > 0 ? l / r : 0) }')

printf '\n%-52s %12s\n' "one worker thread on one core, HTTP/1.1 keep-alive" "requests/s"
printf '%-52s %12.0f\n' "bare: --access-log off --metrics false" "$bare"
printf '%-52s %12.0f\n' "observed: --access-log json, metrics, scraped 1/s" "$observed"
printf '%-52s %12s\n' "ratio observed/bare" "$ratio"
printf '%-52s %11s%%\n' "cost of observability: requests/s lost" "$cost"
printf '%-52s %12s\n' "Vestibule CPU µs per request, bare" "$us_bare"
printf '%-52s %12s\n' "Vestibule CPU µs per request, observed" "$us_observed"
printf '%-52s %11s%%\n' "cost of observability: CPU per request added" "$cpu_cost"
printf '(medians of %d rounds of %d s; share of its core Vestibule used: bare %s, observed %s;\n' \
  "$ROUNDS" "$DURATION" "$cpu_bare" "$cpu_observed"
printf ' access log lines per request: %s; /metrics %s bytes)\n' "$log_share" "$METRICS_BYTES"
printf '\n%-52s %11s%%\n' "COST, requests/s lost (median of per-round pairs)" "$pair_cost"
printf '%-52s %11s%%\n' "COST, CPU per request added (median of pairs)" "$pair_cpu_cost"

# Checks that make the figures suspect; they are printed, and recorded in the JSON.
warnings=()
if [ "$NON2XX" -gt 0 ]; then
  warnings+=("$NON2XX responses were not 2xx or 3xx")
fi
if [ "$SCRAPE_FAILED" -gt 0 ]; then
  warnings+=("$SCRAPE_FAILED of $SCRAPE_COUNT scrapes of /metrics failed")
fi
if awk -v c="$cpu_bare" 'BEGIN { exit !(c < 0.9) }'; then
  warnings+=("Vestibule used $cpu_bare of its core without observability: the clients or the backend were the bottleneck, so requests/s understate the cost; trust CPU per request (more CPUs help)")
fi
if awk -v s="$log_share" 'BEGIN { exit !(s < 0.99) }'; then
  warnings+=("only $log_share access log lines per request were written")
fi
for w in "${warnings[@]+"${warnings[@]}"}"; do echo "warning: $w" >&2; done

json_string() { sed 's/\\/\\\\/g; s/"/\\"/g' <<<"$1" | tr -d '\n'; }
{
  printf '{\n'
  printf '  "benchmark": "observability",\n'
  printf '  "date": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf '  "commit": "%s",\n' "$(git rev-parse HEAD 2>/dev/null || echo unknown)"
  printf '  "dirty": %s,\n' "$(git diff --quiet HEAD 2>/dev/null && echo false || echo true)"
  printf '  "cpu": "%s",\n' "$(json_string "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)")"
  printf '  "cpus": %d,\n' "$(nproc)"
  printf '  "kernel": "%s",\n' "$(uname -r)"
  printf '  "rounds": %d,\n' "$ROUNDS"
  printf '  "seconds_per_measurement": %d,\n' "$DURATION"
  printf '  "warmup_seconds": %d,\n' "$WARMUP"
  printf '  "connections": %d,\n' "$CONNECTIONS"
  printf '  "worker_threads": 1,\n'
  printf '  "bare": {\n'
  printf '    "flags": "--access-log off --metrics false",\n'
  printf '    "requests_per_second": [%s],\n' "$(json_list "${RPS[bare]}")"
  printf '    "median_requests_per_second": %s,\n' "$bare"
  printf '    "cpu_used": [%s],\n' "$(json_list "${CPU[bare]}")"
  printf '    "cpu_us_per_request": [%s],\n' "$(json_list "${CPU_US[bare]}")"
  printf '    "median_cpu_us_per_request": %s\n' "$us_bare"
  printf '  },\n'
  printf '  "observed": {\n'
  printf '    "flags": "--access-log json --metrics true, stdout to a file, /metrics scraped every second",\n'
  printf '    "requests_per_second": [%s],\n' "$(json_list "${RPS[observed]}")"
  printf '    "median_requests_per_second": %s,\n' "$observed"
  printf '    "cpu_used": [%s],\n' "$(json_list "${CPU[observed]}")"
  printf '    "cpu_us_per_request": [%s],\n' "$(json_list "${CPU_US[observed]}")"
  printf '    "median_cpu_us_per_request": %s,\n' "$us_observed"
  printf '    "requests": [%s],\n' "$(json_list "${REQS[observed]}")"
  printf '    "access_log_lines": [%s],\n' "$(json_list "${LINES[observed]}")"
  printf '    "scrapes": %d,\n' "$SCRAPE_COUNT"
  printf '    "scrapes_failed": %d,\n' "$SCRAPE_FAILED"
  printf '    "metrics_bytes": %d\n' "$METRICS_BYTES"
  printf '  },\n'
  printf '  "ratio": %s,\n' "$ratio"
  printf '  "cost_percent": %s,\n' "$cost"
  printf '  "cpu_cost_percent": %s,\n' "$cpu_cost"
  printf '  "paired_cost_percent": %s,\n' "$pair_cost"
  printf '  "paired_cpu_cost_percent": %s,\n' "$pair_cpu_cost"
  printf '  "per_round_cost_percent": [%s],\n' "$(paired_list "${RPS[observed]}" "${RPS[bare]}" 0)"
  printf '  "per_round_cpu_cost_percent": [%s],\n' "$(paired_list "${CPU_US[observed]}" "${CPU_US[bare]}" 1)"
  printf '  "warnings": ['
  sep=""
  for w in "${warnings[@]+"${warnings[@]}"}"; do
    printf '%s"%s"' "$sep" "$(json_string "$w")"
    sep=", "
  done
  printf ']\n'
  printf '}\n'
} >"$RESULTS"
echo "results: $RESULTS (a sample access log line: $WORK/access-log.sample)" >&2
