#!/usr/bin/env bash
# A bounded soak of Vestibule (issue 28): steady keep-alive and new-connection traffic, a
# configuration change every second (routes, endpoints, certificates), WebSockets held open,
# hostile requests; fails on any failed well-formed request, a dropped WebSocket, RSS past its
# bound after the warm-up, or leaked file descriptors. The logic is bench/soak.py (its
# docstring says what it does); bench/README.md has the pass criteria and figures.
#
# Usage: bench/soak.sh [--duration SECONDS] [soak.py options...]
#   default 1800 s; SOAK_SECONDS=120 bench/soak.sh is the CI length.
# VESTIBULE=path/to/vestibule soaks that binary; otherwise the release build is built first.
# Needs python3 and openssl; uses wrk and h2load when present (Debian: apt-get install
# openssl wrk nghttp2-client), Python clients instead of wrk otherwise.
# Exit status: 0 passed, 1 failed, 2 setup error.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v python3 >/dev/null || { echo "bench/soak.sh needs python3" >&2; exit 2; }

for arg in "$@"; do
  case "$arg" in -h|--help) exec python3 bench/soak.py --help ;; esac
done

if [ -z "${VESTIBULE:-}" ]; then
  echo "building vestibule (release)..." >&2
  cargo build --release --locked --quiet -p vestibule --bin vestibule || exit 2
  VESTIBULE=target/release/vestibule
fi

exec python3 bench/soak.py --vestibule "$VESTIBULE" "$@"
