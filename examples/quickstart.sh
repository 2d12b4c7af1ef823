#!/usr/bin/env bash
# Runs Vestibule for real on the bundled example, with no cluster and nothing to start by
# hand: three echo backends on 127.0.0.1:18081-18083, Vestibule on 127.0.0.1:8080 (HTTPS on
# 127.0.0.1:8443, admin on 127.0.0.1:10254), configured by the manifests in
# examples/quickstart/. Edit those files while it runs: changes apply within a fraction of a
# second. Ctrl-C stops everything.
#
# `examples/quickstart.sh --dashboard` also serves the read-only dashboard on the admin
# address (http://127.0.0.1:10254/dashboard/).
#
# With openssl on the machine, it also makes a certificate for secure.localhost and an
# Ingress serving that host over HTTPS (in target/quickstart-tls/, generated, not committed).
set -euo pipefail
cd "$(dirname "$0")/.."

HTTP_ADDR=${VESTIBULE_HTTP_ADDR:-127.0.0.1:8080}
HTTPS_ADDR=${VESTIBULE_HTTPS_ADDR:-127.0.0.1:8443}
ADMIN_ADDR=${VESTIBULE_ADMIN_ADDR:-127.0.0.1:10254}
PORT=${HTTP_ADDR##*:}
TLS_PORT=${HTTPS_ADDR##*:}
ECHO_ADDRS=(127.0.0.1:18081 127.0.0.1:18082 127.0.0.1:18083)

DASHBOARD=()
for arg in "$@"; do
  case "$arg" in
    --dashboard) DASHBOARD=(--dashboard) ;;
    *) echo "usage: $0 [--dashboard]" >&2; exit 2 ;;
  esac
done

# Whether something accepts connections on ADDR (host:port).
listening() {
  (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

# Every address this script needs must be free before anything starts: a backend that
# cannot bind would leave Vestibule answering 502 from a dead port.
busy=()
for addr in "${ECHO_ADDRS[@]}" "$HTTP_ADDR" "$HTTPS_ADDR" "$ADMIN_ADDR"; do
  if listening "$addr"; then busy+=("$addr"); fi
done
if [ "${#busy[@]}" -gt 0 ]; then
  echo "error: already in use: ${busy[*]}" >&2
  pattern=$(IFS='|'; echo "${busy[*]}")
  echo "Stop what listens there (an earlier quickstart? see: ss -ltnp | grep -E '$pattern')," >&2
  echo "Vestibule's own addresses move with VESTIBULE_HTTP_ADDR, VESTIBULE_HTTPS_ADDR and" >&2
  echo "VESTIBULE_ADMIN_ADDR; the backends' are the ones examples/quickstart/services.yaml names." >&2
  exit 1
fi

echo "Building (the first build takes a few minutes)..." >&2
cargo build --quiet --bin vestibule --bin vestibule-echo

target/debug/vestibule-echo web-1 "${ECHO_ADDRS[0]}" web-2 "${ECHO_ADDRS[1]}" \
  api-1 "${ECHO_ADDRS[2]}" &
ECHO_PID=$!
trap 'kill "$ECHO_PID" 2>/dev/null || true' EXIT
# The backends are up when all three accept; if the process died instead, say so and stop.
for _ in $(seq 100); do
  up=0
  for addr in "${ECHO_ADDRS[@]}"; do listening "$addr" && up=$((up + 1)); done
  [ "$up" -eq "${#ECHO_ADDRS[@]}" ] && break
  if ! kill -0 "$ECHO_PID" 2>/dev/null; then
    echo "error: the echo backends did not start (see the message above); stopping." >&2
    exit 1
  fi
  sleep 0.05
done
if [ "$up" -ne "${#ECHO_ADDRS[@]}" ]; then
  echo "error: the echo backends did not listen on ${ECHO_ADDRS[*]} within 5 s; stopping." >&2
  exit 1
fi

MANIFESTS=(--manifests examples/quickstart)
TLS_DIR=target/quickstart-tls
TLS_HINTS=""
if command -v openssl >/dev/null 2>&1; then
  mkdir -p "$TLS_DIR"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=secure.localhost" -addext "subjectAltName=DNS:secure.localhost" \
    -keyout "$TLS_DIR/tls.key" -out "$TLS_DIR/tls.crt" 2>/dev/null
  {
    cat <<'YAML'
apiVersion: v1
kind: Secret
metadata:
  name: secure-tls
  namespace: demo
type: kubernetes.io/tls
stringData:
YAML
    echo "  tls.crt: |"
    sed 's/^/    /' "$TLS_DIR/tls.crt"
    echo "  tls.key: |"
    sed 's/^/    /' "$TLS_DIR/tls.key"
    cat <<'YAML'
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: secure
  namespace: demo
spec:
  ingressClassName: vestibule
  tls:
    - hosts: [secure.localhost]
      secretName: secure-tls
  rules:
    - host: secure.localhost
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: web
                port:
                  number: 80
YAML
  } > "$TLS_DIR/secure.yaml"
  rm -f "$TLS_DIR/tls.key"
  MANIFESTS+=(--manifests "$TLS_DIR")
  TLS_HINTS="
  curl -i http://secure.localhost:$PORT/shop?id=1  # 308 to HTTPS: secure.localhost has TLS
  curl --cacert $TLS_DIR/tls.crt https://secure.localhost:$TLS_PORT/   # web, over TLS, by SNI
  curl -kv https://127.0.0.1:$TLS_PORT/ 2>&1 | grep subject:   # no SNI: the default certificate"
fi

if [ "${#DASHBOARD[@]}" -gt 0 ]; then
  DASHBOARD_HINT="
Dashboard: open http://$ADMIN_ADDR/dashboard/ in a browser (read-only; routes, Services,
certificates, diagnostics, live traffic).
"
else
  DASHBOARD_HINT="
Run with --dashboard to also get the dashboard at http://$ADMIN_ADDR/dashboard/.
"
fi

cat >&2 <<MSG

Vestibule is starting on http://$HTTP_ADDR. In another terminal, try:

  curl http://demo.localhost:$PORT/              # web (web-1 and web-2 take turns)
  curl http://demo.localhost:$PORT/api/orders    # api
  curl http://demo.localhost:$PORT/healthz       # api (Exact match)
  curl http://shop.apps.localhost:$PORT/         # web, through the *.apps.localhost wildcard
  curl http://other.localhost:$PORT/             # 404 from Vestibule: no rule matches
  curl -H 'Host: demo.localhost' http://$HTTP_ADDR/   # if your curl does not resolve *.localhost
  curl http://$ADMIN_ADDR/debug/config           # the compiled routing table$TLS_HINTS
$DASHBOARD_HINT
MSG

target/debug/vestibule run \
  "${MANIFESTS[@]}" \
  --http-addr "$HTTP_ADDR" \
  --https-addr "$HTTPS_ADDR" \
  --https-port-for-redirects "$TLS_PORT" \
  --admin-addr "$ADMIN_ADDR" \
  "${DASHBOARD[@]}"
