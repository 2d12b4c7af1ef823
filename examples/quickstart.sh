#!/usr/bin/env bash
# Runs Vestibule for real on the bundled example, with no cluster and nothing to start by
# hand: three echo backends on 127.0.0.1:18081-18083, Vestibule on 127.0.0.1:8080 (admin on
# 127.0.0.1:10254), configured by the manifests in examples/quickstart/. Edit those files
# while it runs: changes apply within a fraction of a second. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

HTTP_ADDR=${VESTIBULE_HTTP_ADDR:-127.0.0.1:8080}
ADMIN_ADDR=${VESTIBULE_ADMIN_ADDR:-127.0.0.1:10254}
PORT=${HTTP_ADDR##*:}

echo "Building (the first build takes a few minutes)..." >&2
cargo build --quiet --bin vestibule --bin vestibule-echo

target/debug/vestibule-echo web-1 127.0.0.1:18081 web-2 127.0.0.1:18082 api-1 127.0.0.1:18083 &
ECHO_PID=$!
trap 'kill "$ECHO_PID" 2>/dev/null || true' EXIT

cat >&2 <<MSG

Vestibule is starting on http://$HTTP_ADDR. In another terminal, try:

  curl http://demo.localhost:$PORT/              # web (web-1 and web-2 take turns)
  curl http://demo.localhost:$PORT/api/orders    # api
  curl http://demo.localhost:$PORT/healthz       # api (Exact match)
  curl http://shop.apps.localhost:$PORT/         # web, through the *.apps.localhost wildcard
  curl http://other.localhost:$PORT/             # 404 from Vestibule: no rule matches
  curl -H 'Host: demo.localhost' http://$HTTP_ADDR/   # if your curl does not resolve *.localhost
  curl http://$ADMIN_ADDR/debug/config           # the compiled routing table

MSG

target/debug/vestibule run \
  --manifests examples/quickstart \
  --http-addr "$HTTP_ADDR" \
  --admin-addr "$ADMIN_ADDR"
