#!/usr/bin/env bash
# The garbage-collection soak for minutes: tests/gc_soak.rs with a longer
# run (GC_SOAK_SECS, default 300), on the filesystem and on S3 (moto), one
# after the other. Each prints one line of figures: pulls, builds,
# collections, objects deleted, manifest-unknown answers, failed pulls;
# any failed pull fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/nixery-venv/bin:$PATH"
export GC_SOAK_SECS="${GC_SOAK_SECS:-300}"
# cargo test rather than nextest: nextest's slow-test timeout would end a
# run of several minutes.
cargo test --test gc_soak -- --nocapture --test-threads 1
