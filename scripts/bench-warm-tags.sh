#!/usr/bin/env bash
# Benchmark: warm manifest pulls by tag, one package source at a time.
#
# For each source kind (the embedded set, a local path, a pinned commit, a
# git branch within NIXERY_SOURCE_TTL) a release server is started on fresh
# storage, the image is pulled once (cold: runs Nix), then `wrk -t2 -c8`
# pulls it by tag for DURATION seconds. Printed per source: requests per
# second, p50 and p99 latency; the same for a reference run on the same
# server and machine (`GET /v2/`, which does no work: the floor set by HTTP,
# logging and the machine), the ratio of the two rates, and the number of
# Nix builds the server logged during the run (must be 0).
#
# RUST_LOG is passed to the server (default info: one `response` event per
# request); `RUST_LOG=warn,nixery::server=info` measures without it.
#
# Usage: bash scripts/bench-warm-tags.sh [DURATION_SECONDS]   (default 10)
# Needs wrk (apt-get install wrk), git, curl, nix-build; builds
# target/release/nixery unless NIXERY_BIN names a binary.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-10}
threads=${WRK_THREADS:-2}
connections=${WRK_CONNECTIONS:-8}
image=${BENCH_IMAGE:-hello/git}

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

WORK=$(mktemp -d)
work=$WORK
. scripts/bench-lib.sh
cleanup() {
  if [ -n "$NIXERY_PID" ]; then kill "$NIXERY_PID" 2>/dev/null || true; wait "$NIXERY_PID" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
nixery_binary

# A git repository holding the offline package set, for the git sources.
repo=$work/repo
cp -r prepare-image/offline-pkgs "$repo"
git -C "$repo" init -q -b main
git -C "$repo" add -A
git -C "$repo" -c user.name=bench -c user.email=bench@localhost commit -q -m bench
commit=$(git -C "$repo" rev-parse HEAD)
pkgs=$work/pkgs
cp -r prepare-image/offline-pkgs "$pkgs"

# start NAME VAR=VALUE...: run the server with those settings; sets $addr.
start() {
  start_nixery "$1" NIX_TIMEOUT=300 RUST_LOG="${RUST_LOG:-info}" "${@:2}"
  addr=$ADDR
  log=$LOG
}

# wrk_run URL: prints "<req/s> <p50 ms> <p99 ms>".
wrk_run() {
  wrk -t"$threads" -c"$connections" -d"${duration}s" --latency \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "$1" >"$work/wrk.out"
  local rps p50 p99
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.out")
  p50=$(awk '$1 == "50%" {print $2}' "$work/wrk.out")
  p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.out")
  if grep -q "Non-2xx" "$work/wrk.out"; then
    echo "wrk saw error responses:" >&2; cat "$work/wrk.out" >&2; exit 1
  fi
  echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}

# to_ms 1.23ms|456.00us|1.2s -> milliseconds
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else print v }'
}

builds() { grep -c '"message":"building image"' "$log" || true; }

printf '%-12s %10s %8s %8s | %12s %8s %7s | %10s\n' source "req/s" "p50 ms" "p99 ms" "GET /v2/ r/s" "p99 ms" ratio "nix builds"
bench() {
  local name=$1 tag=$2; shift 2
  start "$name" "$@"
  local url="http://$addr/v2/$image/manifests/$tag"
  curl -fsS -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "$url" \
    || { echo "cold pull of $name failed:" >&2; tail -20 "$log" >&2; exit 1; }
  local before; before=$(builds)
  read -r ref_rps _ ref_p99 < <(wrk_run "http://$addr/v2/")
  read -r rps p50 p99 < <(wrk_run "$url")
  local during=$(( $(builds) - before ))
  local ratio; ratio=$(awk -v a="$rps" -v b="$ref_rps" 'BEGIN { printf "%.2f", a / b }')
  printf '%-12s %10s %8s %8s | %12s %8s %7s | %10s\n' "$name" "$rps" "$p50" "$p99" "$ref_rps" "$ref_p99" "$ratio" "$during"
  stop_nixery
}

bench embedded latest
bench path latest NIXERY_PKGS_PATH="$pkgs"
bench pinned "$commit" NIXERY_PKGS_REPO="file://$repo"
bench git-branch main NIXERY_PKGS_REPO="file://$repo" NIXERY_SOURCE_TTL=3600
