#!/usr/bin/env bash
# Produces the figures of docs/reliability.md: runs the ignored tests of
# tests/reliability_figures.rs one at a time and prints their FIGURE lines.
# Needs what scripts/test.sh installs (Nix, skopeo, fake-gcs-server).
# Takes a few minutes; run it on an otherwise idle machine, since the load
# figure measures throughput.
set -euo pipefail
cd "$(dirname "$0")/.."
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo nextest run --test reliability_figures --run-ignored only --no-capture \
    --test-threads 1 2>&1 | tee "$log" | grep -E '^(FIGURE|kill [0-9]|random seed)' || true
if grep -qE '^\s+FAIL ' "$log"; then
    echo "a figure's promise failed; full output:" >&2
    cat "$log" >&2
    exit 1
fi
