#!/usr/bin/env bash
# Cold-build benchmark: how long the first pull of a new image takes, for
# this tree and for a reference commit, side by side in one run.
#
#   bash scripts/bench-cold.sh                 # BASE = merge-base with main
#   BASE=<rev> bash scripts/bench-cold.sh      # another reference commit
#   ROUNDS=5 IMAGES="hello bigpkg" bash scripts/bench-cold.sh
#
# The reference is checked out into a temporary `git worktree` and built
# with the same CARGO_TARGET_DIR as this tree (only the workspace crate
# compiles again); both release binaries are copied aside.
#
# "Cold" means a new image: fresh storage and manifest tier, and store
# paths the Nix store has not seen, but with the packages themselves
# already realised, so that both sides measure the registry's own work
# (its Nix step, grouping, packing, upload, manifests) and not the
# packages' builds. Each round therefore copies the offline package set
# with a new salt (every store path changes), realises the image's
# packages with nix-build, and then runs each side once on that copy, the
# order of the sides alternating between rounds. The time is the client's:
# curl's total for the manifest request that triggers the build.
#
# Printed: per image, each round's times, the medians, and the ratio
# reference / this tree (above 1: this tree is faster); for this tree the
# median of each phase from its "image built" log line (a reference
# without phase logging shows only its total). Other work on the machine
# slows both sides alike only on average: compare the ratio, and rerun on
# a quiet machine for absolute figures.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

ROUNDS=${ROUNDS:-3}
IMAGES=${IMAGES:-"hello bigpkg"}
if [ -z "${BASE:-}" ]; then
  BASE=$(git merge-base HEAD main)
  if [ "$BASE" = "$(git rev-parse HEAD)" ]; then
    echo "bench-cold: HEAD is on main; name the reference with BASE=<rev>" >&2
    exit 1
  fi
fi
base_rev=$(git rev-parse --short "$BASE")
head_rev=$(git rev-parse --short HEAD)

WORK=$(mktemp -d)
base_tree=$WORK/base-tree
cleanup() {
  [ -n "${NIXERY_PID:-}" ] && kill "$NIXERY_PID" 2>/dev/null && wait "$NIXERY_PID" 2>/dev/null
  git worktree remove --force "$base_tree" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
. scripts/bench-lib.sh

target=${CARGO_TARGET_DIR:-$root/target}
echo "bench-cold: building the reference $base_rev and this tree $head_rev (CARGO_TARGET_DIR=$target)" >&2
git worktree add --detach --quiet "$base_tree" "$BASE"
(cd "$base_tree" && CARGO_TARGET_DIR=$target cargo build --release --quiet --bin nixery)
cp "$target/release/nixery" "$WORK/nixery-base"
CARGO_TARGET_DIR=$target cargo build --release --quiet --bin nixery
cp "$target/release/nixery" "$WORK/nixery-head"

# The packages of image NAME as the server requests them (ALWAYS_ADDED
# included).
packages_of() {
  echo "$1" | tr '/' '\n'
  echo cacert
  echo iana-etc
}

# One cold build of IMAGE by SIDE on the package set PKGS: prints the
# seconds and, for a server that logs them, the phases.
cold_build() {
  local side=$1 image=$2 pkgs=$3 run=$4
  BIN=$WORK/nixery-$side
  start_nixery "$run-$side" NIXERY_PKGS_PATH="$pkgs"
  local took
  took=$(curl -sf -o /dev/null -w '%{time_total}' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$ADDR/v2/$image/manifests/latest")
  local phases
  phases=$(sed -n 's/.*"message":"image built".*"phases":"\([^"]*\)".*/\1/p' "$LOG" | head -1)
  stop_nixery
  rm -rf "${WORK:?}/$run-$side"
  echo "$took $phases"
}

median() { sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

declare -A times phase_values
for round in $(seq "$ROUNDS"); do
  for image in $IMAGES; do
    run="r$round-${image//\//-}"
    pkgs=$WORK/$run-pkgs
    any_system_pkgs "$pkgs" "cold-$$-$round-${image//\//-}"
    attrs=()
    for p in $(packages_of "$image"); do attrs+=(-A "$p"); done
    nix-build --no-out-link "$pkgs" "${attrs[@]}" >/dev/null 2>&1
    if [ $((round % 2)) -eq 1 ]; then sides="base head"; else sides="head base"; fi
    for side in $sides; do
      read -r took phases < <(cold_build "$side" "$image" "$pkgs" "$run")
      times[$image,$side]+="$took "
      echo "round $round $image $side: ${took}s${phases:+ ($phases)}" >&2
      for kv in $phases; do
        phase_values[$image,${kv%%=*}]+="${kv#*=} "
      done
    done
    rm -rf "$pkgs"
  done
done

echo
echo "cold builds, $ROUNDS rounds, reference $base_rev vs this tree $head_rev (seconds, median)"
printf '%-10s %10s %10s %8s\n' image reference this ratio
for image in $IMAGES; do
  b=$(echo "${times[$image,base]}" | tr ' ' '\n' | grep . | median)
  h=$(echo "${times[$image,head]}" | tr ' ' '\n' | grep . | median)
  ratio=$(awk -v b="$b" -v h="$h" 'BEGIN { printf "%.2f", b / h }')
  printf '%-10s %10.3f %10.3f %7sx\n' "$image" "$b" "$h" "$ratio"
done
echo
echo "this tree's phases (seconds, median of $ROUNDS)"
for image in $IMAGES; do
  line="$image:"
  for phase in realise graph symlink_layer grouping layers manifest; do
    v=$(echo "${phase_values[$image,$phase]:-}" | tr ' ' '\n' | sed 's/s$//' | grep . | median)
    line+=" $phase=$v"
  done
  echo "$line"
done
