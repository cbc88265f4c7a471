#!/usr/bin/env bash
# Start the registry on port ${PORT:-8080} with its built-in defaults:
# filesystem storage and the offline package set embedded in the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
exec cargo run --release --bin nixery -- serve "$@"
