# What the benchmark scripts share: sourced, not run. Source it from the
# repository root after setting WORK (the run's scratch directory):
#
#   . scripts/bench-lib.sh
#
# nixery_binary                 sets BIN: $NIXERY_BIN, else a fresh release
#                               build of target/release/nixery
# start_nixery NAME [VAR=value...]
#                               runs `nixery serve` on a free port of
#                               127.0.0.1, with storage and a local manifest
#                               tier of its own under $WORK/NAME/ (unless a
#                               setting names others) and its log in
#                               $WORK/NAME/log; no package source is
#                               inherited from the caller's environment.
#                               Sets NIXERY_PID, ADDR and LOG.
# stop_nixery                   stops that server
# free_port                     prints a free TCP port of 127.0.0.1
# any_system_pkgs DIR [SALT]    copies the offline package set to DIR with
#                               every derivation built for this machine,
#                               keeping the requested system as the extra
#                               attribute `targetSystem` (so each platform
#                               still has store paths of its own); SALT, if
#                               given, is one more attribute, so that
#                               nothing of the copy is in the Nix store yet

BENCH_NAME=${0##*/}
BENCH_NAME=${BENCH_NAME%.sh}
NIXERY_PID=

nixery_binary() {
  if [ -n "${NIXERY_BIN:-}" ]; then
    BIN=$NIXERY_BIN
  else
    cargo build --release --quiet --bin nixery
    BIN=$PWD/target/release/nixery
  fi
}

start_nixery() {
  local dir=$WORK/$1
  shift
  mkdir -p "$dir/storage" "$dir/cache"
  LOG=$dir/log
  env -u NIXERY_CHANNEL -u NIXERY_PKGS_REPO -u NIXERY_PKGS_PATH \
    PORT=0 NIXERY_HOST=127.0.0.1 STORAGE_PATH="$dir/storage" NIXERY_CACHE_DIR="$dir/cache" \
    NIX_TIMEOUT=600 RUST_LOG=info "$@" \
    "$BIN" serve >"$LOG" 2>&1 &
  NIXERY_PID=$!
  for _ in $(seq 600); do
    ADDR=$(sed -n 's/.*"message":"listening","addr":"\([^"]*\)".*/\1/p' "$LOG" | head -1)
    [ -n "$ADDR" ] && return 0
    sleep 0.1
  done
  echo "$BENCH_NAME: nixery did not start:" >&2
  cat "$LOG" >&2
  exit 1
}

stop_nixery() {
  kill "$NIXERY_PID"
  wait "$NIXERY_PID" || true
  NIXERY_PID=
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

any_system_pkgs() {
  local dir=$1 salt=${2:-}
  cp -r prepare-image/offline-pkgs "$dir"
  python3 - "$dir/builders.nix" "$salt" "$BENCH_NAME" <<'EOF'
import sys
path, salt, name = sys.argv[1:]
text = open(path).read()
old = "      inherit name system;\n"
if old not in text:
    sys.exit(f"{name}: offline-pkgs/builders.nix changed shape")
new = (
    "      inherit name;\n"
    "      system = builtins.currentSystem;\n"
    "      targetSystem = system;\n"
)
if salt:
    new += f"      benchSalt = \"{salt}\";\n"
open(path, "w").write(text.replace(old, new))
EOF
}
