#!/usr/bin/env bash
# Prepares a container for running Nix without a daemon, then starts
# Nixery in its place (exec, so it gets the signals).
#
# Nix running as root builds as the members of the `nixbld` group, and
# cannot sandbox inside an unprivileged container, so this script makes
# sure that group, its users and `sandbox = false` exist. It is
# idempotent: restarting the container does not duplicate entries, and
# settings already present in nix.conf (e.g. baked into a derived image)
# are left alone.
#
# Environment:
#   NIXERY_BIN            program to exec (required; set by default.nix)
#   NIXERY_PREPARE_IMAGE  prepare-image program (required; set by default.nix)
#   NIXERY_BUILD_USERS    number of build users to create (default 8)
#   NIXERY_LAUNCH_ROOT    directory standing for / (default /; for tests)
# Arguments are passed on to NIXERY_BIN.
set -euo pipefail

root=${NIXERY_LAUNCH_ROOT:-/}
root=${root%/}
build_users=${NIXERY_BUILD_USERS:-8}
first_uid=30001
nixbld_gid=30000

fail() {
  echo "nixery-launch: $*" >&2
  exit 1
}

[ -n "${NIXERY_BIN:-}" ] || fail "NIXERY_BIN must name the nixery program"
[ -n "${NIXERY_PREPARE_IMAGE:-}" ] || fail "NIXERY_PREPARE_IMAGE must name the prepare-image program"
case $build_users in
  '' | *[!0-9]* | 0) fail "NIXERY_BUILD_USERS must be a positive number, not '$build_users'" ;;
esac

# Appends `entry` to the passwd/group-style `file` unless an entry with the
# same name (first field) is already there.
ensure_entry() {
  local file=$1 entry=$2
  touch "$file"
  grep -q "^${entry%%:*}:" "$file" || printf '%s\n' "$entry" >>"$file"
}

# Appends `key = value` to nix.conf unless `key` is already set.
ensure_setting() {
  local file=$1 key=$2 value=$3
  touch "$file"
  grep -Eq "^[[:space:]]*${key}[[:space:]]*=" "$file" || printf '%s = %s\n' "$key" "$value" >>"$file"
}

mkdir -p "$root/etc/nix" "$root/tmp" "$root/var/empty"
chmod 1777 "$root/tmp"

ensure_entry "$root/etc/passwd" "root:x:0:0:root:/root:/bin/sh"
ensure_entry "$root/etc/group" "root:x:0:"
members=()
for i in $(seq 1 "$build_users"); do
  ensure_entry "$root/etc/passwd" \
    "nixbld$i:x:$((first_uid + i - 1)):$nixbld_gid:Nix build user $i:/var/empty:/bin/false"
  members+=("nixbld$i")
done
ensure_entry "$root/etc/group" "nixbld:x:$nixbld_gid:$(IFS=,; echo "${members[*]}")"

ensure_setting "$root/etc/nix/nix.conf" sandbox false
ensure_setting "$root/etc/nix/nix.conf" build-users-group nixbld

export NIXERY_PREPARE_IMAGE
exec "$NIXERY_BIN" "$@"
