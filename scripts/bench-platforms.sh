#!/usr/bin/env bash
# Multi-platform benchmark: a cold build of one image for two platforms
# (NIXERY_PLATFORMS=linux/amd64,linux/arm64, asked for as an OCI index)
# next to the cold build of the same image for one platform, in one run on
# the same machine, alternating, best of ROUNDS each.
#
#   bash scripts/bench-platforms.sh                 # shell/git/htop/bigpkg, 2 rounds
#   IMAGE=hello/git ROUNDS=3 bash scripts/bench-platforms.sh
#
# Cold means cold for Nix too: every run builds from its own copy of the
# offline package set with a fresh salt in every derivation, so each run's
# Nix step really builds, and each run has its own empty storage and local
# manifest tier. An x86-64 host cannot build aarch64 binaries, so the copy
# declares every derivation for the build machine, with the requested
# system as an extra attribute: the arm64 image's store paths (and so its
# layers) differ from the amd64 image's, and each platform has its own
# Nix build and its own packing, as on a host with an aarch64 builder.
# Before the timed request each server builds `hello` for this machine
# from the same salted set (not timed): the tools that assemble images are
# then in the store, as on a registry that has built once, and what is
# timed is the image's own packages for each platform. The default image
# has `bigpkg` (one layer of about 100 MB), so that packing takes seconds
# and the log shows whether the two platforms' packings overlap.
#
# It prints the wall time of each build (request to response), the ratio
# two-platform / one-platform (target: at most 2.2), and, from the
# two-platform run's log timestamps, the interval of each platform's Nix
# step and packing and whether they overlap. It also prints the load
# average, since other work on the machine skews the figures.
#
# Needs curl, python3 and a working nix-build (scripts/setup-host.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-shell/git/htop/bigpkg}
ROUNDS=${ROUNDS:-2}

WORK=$(mktemp -d /tmp/nixery-bench-platforms.XXXXXX)
. scripts/bench-lib.sh
cleanup() {
  [ -n "$NIXERY_PID" ] && kill "$NIXERY_PID" 2>/dev/null && wait "$NIXERY_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
nixery_binary

# One cold build: run name $1, platforms $2, Accept $3. Prints seconds.
cold_build() {
  local run=$1 platforms=$2 accept=$3 salt
  salt=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
  any_system_pkgs "$WORK/$run-pkgs" "$salt"
  start_nixery "$run" NIXERY_PLATFORMS="$platforms" NIXERY_PKGS_PATH="$WORK/$run-pkgs"
  # The registry has built before: the warm-up image `hello` (of the same
  # salted set, for this machine) puts the build machine's tools into the
  # store, as on any registry that has served once. Without it both
  # platforms' Nix steps build those same tools, and the one that finds a
  # tool locked by the other waits for Nix's fixed 5-second lock poll.
  curl -sf -o /dev/null -H "Accept: application/vnd.docker.distribution.manifest.v2+json" \
    "http://$ADDR/v2/hello/manifests/warm-up"
  local seconds
  seconds=$(curl -sf -o "$WORK/$run.json" -w '%{time_total}' \
    -H "Accept: $accept" "http://$ADDR/v2/$IMAGE/manifests/latest")
  stop_nixery
  echo "$seconds"
}

echo "== cold builds of $IMAGE (load average before: $(cut -d' ' -f1-3 /proc/loadavg))"
best_single=
best_double=
last_double=
for round in $(seq "$ROUNDS"); do
  # Alternate the order, so that neither always runs on a warmer machine.
  if [ $((round % 2)) -eq 1 ]; then order="single double"; else order="double single"; fi
  for kind in $order; do
    if [ "$kind" = single ]; then
      t=$(cold_build "single-$round" linux/amd64 application/vnd.docker.distribution.manifest.v2+json)
      best_single=$(python3 -c "print(min(float('$t'), float('${best_single:-inf}')))")
    else
      t=$(cold_build "double-$round" linux/amd64,linux/arm64 application/vnd.oci.image.index.v1+json)
      best_double=$(python3 -c "print(min(float('$t'), float('${best_double:-inf}')))")
      last_double=double-$round
    fi
    echo "  round $round $kind: ${t}s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  done
done

python3 - "$WORK/$last_double.json" <<'EOF'
import json, sys
index = json.load(open(sys.argv[1]))
arches = [m["platform"]["architecture"] for m in index.get("manifests", [])]
if index.get("mediaType") != "application/vnd.oci.image.index.v1+json" or arches != ["amd64", "arm64"]:
    sys.exit(f"bench-platforms: the two-platform build did not give a two-entry index: {index}")
EOF

ratio=$(python3 -c "print(f'{$best_double / $best_single:.2f}')")
echo "one platform: ${best_single}s, two platforms: ${best_double}s, ratio $ratio (target <= 2.2)"

echo "== the last two-platform run, from its log"
python3 - "$WORK/$last_double/log" <<'EOF'
import json, sys
from datetime import datetime

def at(event):
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()

events = []
for line in open(sys.argv[1]):
    try:
        events.append(json.loads(line))
    except ValueError:
        pass
def warm_up(event):
    return event.get("tag") == "warm-up" or event.get("image", "").endswith(":warm-up")

t0 = min(at(e) for e in events if e.get("message") == "building image" and not warm_up(e))
nix, packing = {}, {}
for e in events:
    image = e.get("image", "")
    if warm_up(e):
        continue
    platform = "arm64" if image.split(":")[0].split("/").count("arm64") else "amd64"
    message = e.get("message")
    if message == "nix build started":
        nix.setdefault(platform, [at(e), None])[0] = at(e)
    elif message == "nix build finished":
        nix.setdefault(platform, [None, None])[1] = at(e)
        packing.setdefault(platform, [at(e), None])
    elif message == "image built":
        packing.setdefault(platform, [None, None])[1] = at(e)

def show(name, spans):
    for platform in ("amd64", "arm64"):
        start, end = spans.get(platform, (None, None))
        if start is None or end is None:
            sys.exit(f"bench-platforms: no complete {name} of {platform} in the log")
        print(f"  {name:8} {platform}: {start - t0:6.2f}s .. {end - t0:6.2f}s")
    (a0, a1), (b0, b1) = spans["amd64"], spans["arm64"]
    overlap = min(a1, b1) - max(a0, b0)
    print(f"  {name} of the two platforms overlap: {'yes' if overlap > 0 else 'NO'} ({max(overlap, 0):.2f}s)")

show("nix step", nix)
show("packing", packing)
EOF
