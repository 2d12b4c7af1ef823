#!/usr/bin/env bash
# Builds Vestibule with profile-guided optimisation (PGO), in three steps:
#
#   1. an instrumented release build (in target/pgo/instrumented), which counts the branches
#      and calls it takes;
#   2. a short training run: bench/compare.py's HTTP/1.1, HTTPS, HTTP/2 and handshake
#      scenarios through that build alone, with the access log and metrics on as always.
#      Each Vestibule process writes its counts when it exits;
#   3. a release build with those counts, in target/pgo/optimized: the compiler inlines and
#      lays out code by what the request path really does, and keeps cold paths out of its
#      way. On this path much of the time lost is instruction-cache misses, which this
#      layout reduces.
#
# Then measure that binary with
#   bench/compare.py --vestibule target/pgo/optimized/release/vestibule
# target/release is left alone: a plain release build stays what it is.
#
# The profile goes stale as the code changes (a changed function loses its counts, nothing
# worse): run this again before measuring.
#
# Needs rustup's llvm-tools component (llvm-profdata matching rustc's LLVM; added if missing)
# and what bench/compare.py needs. Takes about two release builds and a minute of training.
#
# Usage: bench/pgo.sh [training seconds per scenario, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TRAIN=${1:-3}
case "$TRAIN" in
  '' | *[!0-9]*) echo "usage: bench/pgo.sh [training seconds per scenario]" >&2; exit 2 ;;
esac
WORK=$ROOT/target/pgo
PROFILES=$WORK/profiles

sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA=$sysroot/lib/rustlib/$host/bin/llvm-profdata
if [ ! -x "$PROFDATA" ]; then
  echo "adding rustup's llvm-tools component (llvm-profdata)..." >&2
  rustup component add llvm-tools >&2
fi
[ -x "$PROFDATA" ] || { echo "no llvm-profdata at $PROFDATA" >&2; exit 2; }

rm -rf "$PROFILES"
mkdir -p "$PROFILES"

echo "1/3 instrumented build (target/pgo/instrumented)..." >&2
# Build scripts and proc macros are instrumented too, and write their counts where
# -Cprofile-generate says: away from the training's.
RUSTFLAGS="-Cprofile-generate=$WORK/build-counts" CARGO_TARGET_DIR=$WORK/instrumented \
  cargo build --release --locked --quiet -p vestibule

echo "2/3 training: bench/compare.py through the instrumented build..." >&2
LLVM_PROFILE_FILE="$PROFILES/vestibule-%p.profraw" python3 bench/compare.py \
  --vestibule "$WORK/instrumented/release/vestibule" --proxies vestibule \
  --scenarios h1,https,h2,handshakes --rounds 1 --duration "$TRAIN" --warmup 1 \
  --out "$WORK/training" >&2
shopt -s nullglob
counts=("$PROFILES"/*.profraw)
if [ "${#counts[@]}" -eq 0 ]; then
  echo "the training wrote no counts (did Vestibule exit cleanly? see $WORK/training/work)" >&2
  exit 1
fi
"$PROFDATA" merge -o "$WORK/merged.profdata" "${counts[@]}"
# Named by its content: cargo rebuilds what a changed RUSTFLAGS touches, and the path is
# how a new profile reaches the dependencies too, not only the crates that changed.
MERGED=$WORK/vestibule-$(sha256sum "$WORK/merged.profdata" | cut -c1-16).profdata
mv "$WORK/merged.profdata" "$MERGED"
find "$WORK" -maxdepth 1 -name 'vestibule-*.profdata' ! -path "$MERGED" -delete

echo "3/3 release build with the profile (target/pgo/optimized)..." >&2
RUSTFLAGS="-Cprofile-use=$MERGED" CARGO_TARGET_DIR=$WORK/optimized \
  cargo build --release --locked --quiet -p vestibule

echo "built target/pgo/optimized/release/vestibule; measure it with" >&2
echo "  bench/compare.py --vestibule target/pgo/optimized/release/vestibule" >&2
