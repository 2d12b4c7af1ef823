#!/usr/bin/env bash
# `vestibule check` end to end on a 5,000-Ingress dump: the time from start to exit of the
# command a user runs (reading a `kubectl get -o json` List, compiling, classifying,
# writing the report), for each output format. Target: under 5 seconds.
#
# The dump: one IngressClass `nginx`, 5,000 Ingresses over 2,500 hosts with five paths each,
# one Service per Ingress; one Ingress in ten each with CORS origins, buffering keys, a
# snippet the safe subset covers, one it does not, an unsupported annotation, and affinity
# with a rate limit (as crates/translate/benches/check.rs).
#
# Usage: bench/check.sh [INGRESSES, default 5000]
# VESTIBULE=path/to/vestibule uses that binary instead of building the release one.
set -euo pipefail
cd "$(dirname "$0")/.."

INGRESSES=${1:-5000}
command -v python3 >/dev/null || { echo "bench/check.sh needs python3" >&2; exit 2; }

if [ -z "${VESTIBULE:-}" ]; then
  echo "building vestibule (release)..." >&2
  cargo build --release --quiet --bin vestibule
  VESTIBULE=target/release/vestibule
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

python3 - "$INGRESSES" > "$WORK/dump.json" <<'EOF'
import json, sys

count = int(sys.argv[1])
hosts = max(count // 2, 1)
annotations = {
    1: {"enable-cors": "true", "cors-allow-origin": "https://app.example.com"},
    2: {"proxy-buffering": "on", "proxy-body-size": "16m"},
    3: {"configuration-snippet": 'more_set_headers "X-Frame-Options: DENY";'},
    4: {"configuration-snippet": "rewrite ^/old/(.*) /new/$1 break;"},
    5: {"mirror-target": "https://mirror.example/$request_uri"},
    6: {"affinity": "cookie", "limit-rps": "10"},
}
items = [{
    "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
    "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"},
}]
for i in range(count):
    ns, name = f"team{i % 50}", f"app{i}"
    base = f"/s{i // hosts}"
    backend = {"service": {"name": name, "port": {"number": 80}}}
    paths = [(base, "Prefix"), (f"{base}/api", "Prefix"), (f"{base}/api/v1/items", "Prefix"),
             (f"{base}/healthz", "Exact"), (f"{base}/static", "ImplementationSpecific")]
    items.append({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {
            "name": name, "namespace": ns, "uid": f"uid-{i}",
            "creationTimestamp": f"2025-01-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "annotations": {f"nginx.ingress.kubernetes.io/{k}": v
                            for k, v in annotations.get(i % 10, {}).items()},
        },
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{"host": f"app{i % hosts}.example.com", "http": {"paths": [
                {"path": p, "pathType": t, "backend": backend} for p, t in paths]}}],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}},
    })
    items.append({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    })
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout)
EOF

echo "dump: $INGRESSES Ingresses, $(du -h "$WORK/dump.json" | cut -f1)" >&2
for output in table markdown json; do
  start=$(date +%s%N)
  status=0
  "$VESTIBULE" check "$WORK/dump.json" --output "$output" > "$WORK/out.$output" || status=$?
  ms=$((($(date +%s%N) - start) / 1000000))
  printf '%-8s %5d ms  exit %d, %s of output\n' "$output" "$ms" "$status" \
    "$(du -h "$WORK/out.$output" | cut -f1)"
done
