#!/usr/bin/env bash
# HTTPS side by side: Vestibule and nginx, each on one core, the same RSA-2048 certificate,
# the same backend, the same clients, in one run.
#
#   keep-alive throughput   wrk, 50 connections kept open, GET / proxied to the backend;
#                           also over plain HTTP, to tell TLS's cost from the proxy's
#   full-handshake rate     openssl s_time -new: a new connection and full TLS 1.3
#                           handshake each time, no resumption, no request
#
# Needs nginx, wrk, openssl and taskset (Debian: apt-get install nginx-light wrk openssl
# util-linux). The proxy under test runs on CPU 0; clients and the backend on the others.
# Run on an otherwise idle machine; on shared VMs compare only figures from one run.
#
# Usage: bench/tls.sh [seconds per measurement, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-10}
CONNECTIONS=50
HANDSHAKE_CLIENTS=4
PROXY_CPU=0
CLIENT_CPUS=1-$(($(nproc) - 1))
BACKEND=127.0.0.1:19000
NGINX_ADDR=127.0.0.1:19443
VESTIBULE_ADDR=127.0.0.1:19444
NGINX_HTTP=127.0.0.1:19080
VESTIBULE_HTTP=127.0.0.1:19081

for tool in nginx wrk openssl taskset curl; do
  command -v "$tool" >/dev/null || { echo "bench/tls.sh needs $tool" >&2; exit 2; }
done
[ "$(nproc)" -ge 2 ] || { echo "bench/tls.sh needs at least 2 CPUs" >&2; exit 2; }

echo "building vestibule (release)..." >&2
cargo build --release --quiet --bin vestibule

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bench.example" \
  -addext "subjectAltName=DNS:bench.example" \
  -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null

# The backend: nginx answering a fixed body, on the client CPUs.
mkdir -p "$WORK/backend" "$WORK/nginx"
cat >"$WORK/backend/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $WORK/backend/error.log warn;
pid $WORK/backend/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen $BACKEND reuseport backlog=4096;
    location / { return 200 "ok\n"; }
  }
}
CONF
taskset -c "$CLIENT_CPUS" nginx -e stderr -p "$WORK/backend" -c "$WORK/backend/nginx.conf" &
PIDS+=($!)

# nginx as the proxy under test: one worker, TLS with a shared session cache and tickets,
# HTTP/2 offered, keep-alive to the backend.
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server $BACKEND; keepalive 64; }
  server {
    listen $NGINX_ADDR ssl http2 default_server;
    listen $NGINX_HTTP default_server;
    ssl_certificate $WORK/tls.crt;
    ssl_certificate_key $WORK/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
CONF
taskset -c "$PROXY_CPU" nginx -e stderr -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
PIDS+=($!)

# Vestibule: the same certificate as its default (clients connect by IP, without SNI), a
# catch-all rule to the same backend.
mkdir -p "$WORK/manifests"
{
  cat <<YAML
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: { name: vestibule }
spec: { controller: vestibule.dev/ingress-controller }
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: bench, namespace: bench }
spec:
  ingressClassName: vestibule
  defaultBackend: { service: { name: backend, port: { number: 80 } } }
---
apiVersion: v1
kind: Service
metadata: { name: backend, namespace: bench }
spec: { ports: [ { name: http, port: 80, targetPort: ${BACKEND##*:} } ] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: backend-1
  namespace: bench
  labels: { kubernetes.io/service-name: backend }
addressType: IPv4
ports: [ { name: http, port: ${BACKEND##*:} } ]
endpoints: [ { addresses: [ "${BACKEND%:*}" ], conditions: { ready: true } } ]
---
apiVersion: v1
kind: Secret
metadata: { name: bench-tls, namespace: bench }
type: kubernetes.io/tls
stringData:
YAML
  echo "  tls.crt: |"
  sed 's/^/    /' "$WORK/tls.crt"
  echo "  tls.key: |"
  sed 's/^/    /' "$WORK/tls.key"
} >"$WORK/manifests/bench.yaml"
taskset -c "$PROXY_CPU" target/release/vestibule run --manifests "$WORK/manifests" \
  --worker-threads 1 --log-level warn \
  --default-ssl-certificate bench/bench-tls \
  --http-addr "$VESTIBULE_HTTP" --https-addr "$VESTIBULE_ADDR" --admin-addr 127.0.0.1:0 &
PIDS+=($!)

wait_up() {
  for _ in $(seq 1 200); do
    if curl -sk -o /dev/null "https://$1/"; then return 0; fi
    sleep 0.05
  done
  echo "$1 did not come up" >&2
  exit 1
}
wait_up "$NGINX_ADDR"
wait_up "$VESTIBULE_ADDR"
for addr in "$NGINX_ADDR" "$VESTIBULE_ADDR"; do
  subject=$(openssl s_client -connect "$addr" </dev/null 2>/dev/null | grep -m1 '^subject=' || true)
  [ "$subject" = "subject=CN = bench.example" ] || { echo "$addr serves '$subject'" >&2; exit 1; }
done

keepalive() {
  # Warm up, then measure.
  taskset -c "$CLIENT_CPUS" wrk -t1 -c"$CONNECTIONS" -d2s "$1" >/dev/null
  taskset -c "$CLIENT_CPUS" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "$1" |
    awk '/^Requests\/sec/ { printf "%.0f", $2 }'
}

handshakes() {
  local out="$WORK/s_time.$2" started finished
  started=$(date +%s.%N)
  for i in $(seq 1 "$HANDSHAKE_CLIENTS"); do
    taskset -c "$CLIENT_CPUS" openssl s_time -connect "$1" -new -time "$DURATION" \
      >"$out.$i" 2>&1 &
  done
  wait
  finished=$(date +%s.%N)
  # Each client prints "N connections in Xs; ..."; s_time's own "real seconds" are whole
  # seconds, too coarse, so the rate is the sum over the wall time measured here.
  cat "$out".* | awk -v started="$started" -v finished="$finished" '
    /connections in [0-9.]+s;/ { n += $1 }
    END { printf "%.0f", n / (finished - started) }'
}

nginx_rps=$(keepalive "https://$NGINX_ADDR/")
vestibule_rps=$(keepalive "https://$VESTIBULE_ADDR/")
nginx_plain=$(keepalive "http://$NGINX_HTTP/")
vestibule_plain=$(keepalive "http://$VESTIBULE_HTTP/")
nginx_hs=$(handshakes "$NGINX_ADDR" nginx)
vestibule_hs=$(handshakes "$VESTIBULE_ADDR" vestibule)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
printf '\n%-36s %12s %12s %10s\n' "one core, RSA-2048, TLS 1.3" nginx vestibule "ratio"
printf '%-36s %12s %12s %10s\n' "keep-alive HTTPS requests/s" "$nginx_rps" "$vestibule_rps" \
  "$(ratio "$vestibule_rps" "$nginx_rps")"
printf '%-36s %12s %12s %10s\n' "keep-alive plain HTTP requests/s" "$nginx_plain" \
  "$vestibule_plain" "$(ratio "$vestibule_plain" "$nginx_plain")"
printf '%-36s %12s %12s %10s\n' "full handshakes/s" "$nginx_hs" "$vestibule_hs" \
  "$(ratio "$vestibule_hs" "$nginx_hs")"
