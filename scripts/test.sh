#!/usr/bin/env bash
# Run the whole test suite: installs what the tests need (scripts/setup-host.sh),
# then every unit, integration and end-to-end test with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
export PATH="/opt/nixery-venv/bin:$PATH"
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
cargo nextest run --profile ci "$@"
