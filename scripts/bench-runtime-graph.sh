#!/usr/bin/env bash
# Measures two ways of getting an image's runtime graph from Nix, on cold
# images of the offline package set (a fresh salted package per run):
#
#   builder  what prepare-image.nix does: one more derivation whose
#            structured attributes carry exportReferencesGraph, built
#            together with the packages;
#   query    realise the packages only, then ask the store:
#            `nix path-info --json --closure-size --recursive`.
#
# Prints the median wall time of each over RUNS runs and their ratio.
# Usage: scripts/bench-runtime-graph.sh [RUNS]   (default 10)
set -euo pipefail

runs=${1:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cp "$root/scripts/runtime-graph.nix" "$work/"
cat > "$work/graph.nix" <<'NIX'
{ salt, mode, offline }:
let
  pkgs = import offline { };
  saltPkg = pkgs.runCommand "bench-salt-${salt}" { } ''
    mkdir -p "$out/share"
    echo ${salt} > "$out/share/salt"
  '';
  contents = [ pkgs.hello pkgs.git pkgs.htop saltPkg ];
  graph = import ./runtime-graph.nix { inherit pkgs contents; name = "bench-runtime-graph-${salt}.json"; };
in
if mode == "builder" then graph else contents
NIX

now() { date +%s.%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# Warm the packages themselves once: only the salted part is cold.
nix-build --no-out-link "$work/graph.nix" --arg offline "$root/prepare-image/offline-pkgs" --argstr salt warm --argstr mode query > /dev/null 2>&1

builder_times=() query_times=()
for i in $(seq "$runs"); do
  salt="$$-$i-$(date +%s%N)"
  start=$(now)
  nix-build --no-out-link "$work/graph.nix" --arg offline "$root/prepare-image/offline-pkgs" --argstr salt "b$salt" --argstr mode builder > /dev/null 2>&1
  builder_times+=("$(echo "$(now) - $start" | bc)")

  start=$(now)
  outs=$(nix-build --no-out-link "$work/graph.nix" --arg offline "$root/prepare-image/offline-pkgs" --argstr salt "q$salt" --argstr mode query 2> /dev/null)
  # shellcheck disable=SC2086
  nix --extra-experimental-features nix-command path-info --json --closure-size --recursive $outs > /dev/null
  query_times+=("$(echo "$(now) - $start" | bc)")
done

b=$(printf '%s\n' "${builder_times[@]}" | median)
q=$(printf '%s\n' "${query_times[@]}" | median)
printf 'runs: %s\nbuilder (exportReferencesGraph derivation): median %.3f s\nquery (realise, then nix path-info): median %.3f s\nquery / builder: %.2f\n' \
  "$runs" "$b" "$q" "$(echo "$q / $b" | bc -l)"
