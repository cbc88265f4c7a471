#!/usr/bin/env bash
# How well each layering strategy shares bytes across related images and
# over updates (benches/layering.rs explains the figures), on two data sets:
#
#   offline     images of the offline package set, built here with Nix: 8
#               related images, and an update of git (its program changes,
#               nothing else does) under a client holding the 3 images that
#               contain git;
#   closures    ../shared/closures: real runtime graphs read from public
#               binary caches (related images of one package set, the same
#               package over years of nixpkgs updates, app-only rebuilds).
#
# Prints, per data set and budget, one row per strategy side by side.
# Usage: scripts/bench-layering.sh [BUDGETS]   (default 94,12,4)
set -euo pipefail

budgets=${1:-94,12,4}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A runtime graph exactly as prepare-image.nix gets it: structured
# attributes carrying exportReferencesGraph for the image's packages.
cp "$root/scripts/runtime-graph.nix" "$work/"
cat > "$work/graph.nix" <<'NIX'
{ offline, packages }:
let
  pkgs = import offline { };
  contents = map (name: pkgs.${name}) (builtins.fromJSON packages);
in
import ./runtime-graph.nix { inherit pkgs contents; name = "bench-layering-graph.json"; }
NIX

# The same package set with git's program changed and nothing else.
cp -r "$root/prepare-image/offline-pkgs" "$work/offline-updated"
chmod -R u+w "$work/offline-updated"
sed -i 's/name = "git"; version = "2.46.0"/name = "git"; version = "2.46.1"/' "$work/offline-updated/default.nix"
grep -q '"git"; version = "2.46.1"' "$work/offline-updated/default.nix" \
  || { echo "bench-layering: could not change git in the offline package set" >&2; exit 1; }

mkdir -p "$work/offline"
entries=()
# graph FILE SET GROUP SERIES STEP PACKAGE... : build one image's graph.
graph() {
  local file=$1 set=$2 group=$3 series=$4 step=$5
  shift 5
  local packages
  packages=$(printf '"%s",' cacert iana-etc "$@")
  packages="[${packages%,}]"
  out=$(nix-build --no-out-link "$work/graph.nix" --arg offline "$set" --argstr packages "$packages" 2> "$work/nix.log") \
    || { cat "$work/nix.log" >&2; exit 1; }
  cp "$out" "$work/offline/$file"
  entries+=("{\"file\":\"$file\",\"group\":$group,\"series\":$series,\"step\":$step}")
}

offline="$root/prepare-image/offline-pkgs"
graph hello.json "$offline" '"offline"' null null hello
graph git.json "$offline" '"offline"' '"git"' 0 git
graph htop.json "$offline" '"offline"' null null htop
graph nano.json "$offline" '"offline"' null null nano
graph curl.json "$offline" '"offline"' null null curl
graph git-htop.json "$offline" '"offline"' '"git"' 0 git htop
graph git-curl.json "$offline" '"offline"' '"git"' 0 git curl
graph shell.json "$offline" '"offline"' null null bashInteractive coreutils moreutils nano
graph git-new.json "$work/offline-updated" null '"git"' 1 git
graph git-htop-new.json "$work/offline-updated" null '"git"' 1 git htop
graph git-curl-new.json "$work/offline-updated" null '"git"' 1 git curl
(IFS=,; echo "[${entries[*]}]") > "$work/offline/index.json"

cd "$root"
NIXERY_BENCH_DATA="$work/offline,$root/../shared/closures" NIXERY_BENCH_BUDGETS="$budgets" \
  cargo test --quiet --bench layering
