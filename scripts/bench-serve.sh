#!/usr/bin/env bash
# Serving benchmark: how fast the registry answers the warm path, measured
# side by side with nginx's sendfile on the same machine in the same run.
#
#   bash scripts/bench-serve.sh            # full run (about 3 minutes)
#   DURATION=5 bash scripts/bench-serve.sh # shorter wrk runs
#   SLOWLORIS=0 bash scripts/bench-serve.sh # skip the 30 s cut-off check
#   IMAGE=git bash scripts/bench-serve.sh   # another image of the offline set
#   INDEX=0 bash scripts/bench-serve.sh     # skip the image index part
#   REDIRECT=0 bash scripts/bench-serve.sh  # skip the s3 redirect path
#   AUTH=0 bash scripts/bench-serve.sh      # skip the pull authentication part
#
# It builds the release binary, starts it on 127.0.0.1 with filesystem
# storage in a temporary directory, pulls the offline package set's
# `bigpkg` image (one layer of about 100 MB) so that a real build fills
# storage, restarts the server (so its peak memory covers serving only),
# and then runs wrk against:
#
# - the largest blob, wrk -t2 -c4, next to nginx (sendfile on) serving the
#   very same file from the storage directory: MB/s and the ratio;
# - the same blob with 8 clients: the server's peak RSS (VmHWM);
# - manifest by digest, manifest by tag (warm; also with an OCI-only
#   Accept), the manifest's referrers list and the config blob, wrk
#   -t2 -c8 --latency: requests/s and p99; and nginx serving the config
#   blob's file, the machine's reference for small answers;
# - a raw socket that sends `GET /v2/ HTTP/1.1\r\nHost: x\r\n` and nothing
#   more: seconds until the server closes it (default header timeout);
# - a second server with NIXERY_PLATFORMS=linux/amd64,linux/arm64 (on a
#   copy of the offline set whose derivations build here for any system):
#   the image index of INDEX_IMAGE (default hello) by tag, warm, with an
#   OCI Accept header, next to the same server's single manifest by tag,
#   wrk -t2 -c8 --latency: requests/s and p99;
# - pull authentication: a second server on the same storage with an
#   htpasswd file (bcrypt cost 10, `htpasswd -B -C 10`) and a signing key:
#   manifest by tag (warm) with Basic credentials and with a token from
#   /token, alternating with the first server's anonymous run, wrk -t2
#   -c8 --latency, best of 2 each: requests/s, p99 and each ratio to the
#   anonymous run;
# - the redirect path: a server on the s3 backend against moto
#   (S3_IMAGE, default hello, built there), whose blob requests are
#   answered `303` to a presigned URL: wrk -t2 -c8 --latency on a layer
#   blob, beside the filesystem server's config blob and `/v2/` of this
#   same run (wrk does not follow the redirect: this is the registry's
#   share of a download).
#
# Needs wrk, nginx, python3, moto (for the redirect path), htpasswd and
# openssl (for the authentication part) and a working
# nix-build (scripts/setup-host.sh);
# installs wrk and nginx-light with apt-get when missing and run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
SLOWLORIS=${SLOWLORIS:-1}
IMAGE=${IMAGE:-bigpkg}
INDEX=${INDEX:-1}
INDEX_IMAGE=${INDEX_IMAGE:-hello}
REDIRECT=${REDIRECT:-1}
AUTH=${AUTH:-1}
S3_IMAGE=${S3_IMAGE:-hello}
MOTO=${MOTO_SERVER:-/opt/nixery-venv/bin/moto_server}

have_tools() {
  command -v wrk >/dev/null && { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; }
}
if ! have_tools; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk nginx-light >/dev/null
  else
    echo "bench-serve: needs wrk and nginx (apt-get install wrk nginx-light)" >&2
    exit 1
  fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

WORK=$(mktemp -d /tmp/nixery-bench.XXXXXX)
chmod 755 "$WORK"
STORAGE=$WORK/storage
. scripts/bench-lib.sh
NGINX_PID=
MOTO_PID=
AUTH_PID=
cleanup() {
  [ -n "$AUTH_PID" ] && kill "$AUTH_PID" 2>/dev/null && wait "$AUTH_PID" 2>/dev/null
  [ -n "$NIXERY_PID" ] && kill "$NIXERY_PID" 2>/dev/null && wait "$NIXERY_PID" 2>/dev/null
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
  [ -n "$MOTO_PID" ] && kill "$MOTO_PID" 2>/dev/null && wait "$MOTO_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
# NIXERY_BIN runs another binary instead (to try the script itself).
nixery_binary

echo "== building the $IMAGE image (cold build, not timed)"
start_nixery build STORAGE_PATH="$STORAGE"
curl -sf "http://$ADDR/v2/$IMAGE/manifests/latest" -o "$WORK/manifest.json"
stop_nixery

read -r MANIFEST_DIGEST CONFIG_DIGEST LAYER_DIGEST LAYER_SIZE < <(python3 - "$WORK/manifest.json" <<'EOF'
import hashlib, json, sys
raw = open(sys.argv[1], "rb").read()
m = json.loads(raw)
big = max(m["layers"], key=lambda l: l["size"])
print("sha256:" + hashlib.sha256(raw).hexdigest(), m["config"]["digest"], big["digest"], big["size"])
EOF
)
LAYER_HEX=${LAYER_DIGEST#sha256:}
echo "largest layer: $LAYER_DIGEST ($LAYER_SIZE bytes)"

cat >"$WORK/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
$( [ "$(id -u)" -eq 0 ] && echo "user root;" )
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $WORK/nginx-body;
  proxy_temp_path $WORK/nginx-proxy;
  fastcgi_temp_path $WORK/nginx-fastcgi;
  uwsgi_temp_path $WORK/nginx-uwsgi;
  scgi_temp_path $WORK/nginx-scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:0;
    root $STORAGE;
  }
}
EOF
# nginx cannot listen on port 0 and report it; pick a free port.
NGINX_PORT=$(free_port)
sed -i "s/listen 127.0.0.1:0;/listen 127.0.0.1:$NGINX_PORT;/" "$WORK/nginx.conf"
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK" &
NGINX_PID=$!
sleep 0.5
curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/layers/$LAYER_HEX"

start_nixery bench STORAGE_PATH="$STORAGE"
BLOB_URL="http://$ADDR/v2/$IMAGE/blobs/$LAYER_DIGEST"
curl -sf -o /dev/null "$BLOB_URL"

# Transfer/sec of a wrk run, in MB/s (10^6 bytes).
wrk_mbps() {
  wrk "$@" | python3 -c '
import re, sys
out = sys.stdin.read()
m = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", out)
scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[m.group(2)]
print(f"{float(m.group(1)) * scale / 1e6:.0f}")'
}

# Requests/s and p99 latency (ms) of a wrk --latency run.
wrk_rps_p99() {
  wrk --latency "$@" | python3 -c '
import re, sys
out = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
v, unit = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out).groups()
ms = float(v) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
errors = f"  NON-2XX: {non2xx.group(1)}" if non2xx else ""
print(f"{rps:.0f} req/s  p99 {ms:.2f} ms{errors}")'
}

echo "== largest blob, wrk -t2 -c4 -d${DURATION}s (best of 2, alternating)"
best_nginx=0
best_nixery=0
for _ in 1 2; do
  n=$(wrk_mbps -t2 -c4 -d"${DURATION}s" "http://127.0.0.1:$NGINX_PORT/layers/$LAYER_HEX")
  r=$(wrk_mbps -t2 -c4 -d"${DURATION}s" "$BLOB_URL")
  echo "  nginx sendfile: $n MB/s   nixery: $r MB/s"
  [ "$n" -gt "$best_nginx" ] && best_nginx=$n
  [ "$r" -gt "$best_nixery" ] && best_nixery=$r
done
ratio=$(python3 -c "print(f'{$best_nixery / $best_nginx:.2f}')")
echo "blob download: nixery $best_nixery MB/s, nginx sendfile $best_nginx MB/s, ratio $ratio"

echo "== largest blob, 8 clients (wrk -t2 -c8 -d${DURATION}s): peak RSS"
r=$(wrk_mbps -t2 -c8 -d"${DURATION}s" "$BLOB_URL")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$NIXERY_PID/status")
echo "blob with 8 clients: $r MB/s, nixery peak RSS $((hwm / 1024)) MB"

echo "== small objects, wrk -t2 -c8 -d${DURATION}s --latency"
echo "manifest by digest: $(wrk_rps_p99 -t2 -c8 -d"${DURATION}s" "http://$ADDR/v2/$IMAGE/manifests/$MANIFEST_DIGEST")"
echo "manifest by tag (warm): $(wrk_rps_p99 -t2 -c8 -d"${DURATION}s" "http://$ADDR/v2/$IMAGE/manifests/latest")"
echo "manifest by tag (warm, OCI Accept): $(wrk_rps_p99 -t2 -c8 -d"${DURATION}s" -H "Accept: application/vnd.oci.image.manifest.v1+json" "http://$ADDR/v2/$IMAGE/manifests/latest")"
echo "referrers of the manifest: $(wrk_rps_p99 -t2 -c8 -d"${DURATION}s" "http://$ADDR/v2/$IMAGE/referrers/$MANIFEST_DIGEST")"
echo "config blob: $(wrk_rps_p99 -t2 -c8 -d"${DURATION}s" "http://$ADDR/v2/$IMAGE/blobs/$CONFIG_DIGEST")"
echo "config blob from nginx (reference for this machine): $(wrk_rps_p99 -t2 -c8 -d"${DURATION}s" "http://127.0.0.1:$NGINX_PORT/layers/${CONFIG_DIGEST#sha256:}")"
echo "/v2/: $(wrk_rps_p99 -t2 -c8 -d"${DURATION}s" "http://$ADDR/v2/")"

if [ "$AUTH" = 1 ]; then
  echo "== pull authentication: manifest by tag (warm), wrk -t2 -c8 -d${DURATION}s --latency, best of 2, alternating"
  htpasswd -B -C 10 -b -c "$WORK/htpasswd" bench bench-password 2>/dev/null
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/token-key.pem" 2>/dev/null
  ANON_ADDR=$ADDR
  ANON_PID=$NIXERY_PID
  start_nixery auth STORAGE_PATH="$STORAGE" NIXERY_AUTH_HTPASSWD="$WORK/htpasswd" \
    NIXERY_AUTH_TOKEN_KEY="$WORK/token-key.pem" NIXERY_AUTH_TOKEN_TTL=3600
  AUTH_ADDR=$ADDR
  AUTH_PID=$NIXERY_PID
  ADDR=$ANON_ADDR
  NIXERY_PID=$ANON_PID
  BASIC="Authorization: Basic $(printf 'bench:bench-password' | base64)"
  TOKEN=$(curl -sf -u bench:bench-password "http://$AUTH_ADDR/token?service=nixery&scope=repository:$IMAGE:pull" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
  BEARER="Authorization: Bearer $TOKEN"
  TAG_PATH="/v2/$IMAGE/manifests/latest"
  # Without credentials: 401 (the check is on); with each: 200, warm.
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$AUTH_ADDR$TAG_PATH")" = 401 ]
  curl -sf -o /dev/null -H "$BASIC" "http://$AUTH_ADDR$TAG_PATH"
  curl -sf -o /dev/null -H "$BEARER" "http://$AUTH_ADDR$TAG_PATH"
  best_anon=0 best_basic=0 best_token=0
  for _ in 1 2; do
    a=$(wrk_rps_p99 -t2 -c8 -d"${DURATION}s" "http://$ANON_ADDR$TAG_PATH")
    b=$(wrk_rps_p99 -t2 -c8 -d"${DURATION}s" -H "$BASIC" "http://$AUTH_ADDR$TAG_PATH")
    t=$(wrk_rps_p99 -t2 -c8 -d"${DURATION}s" -H "$BEARER" "http://$AUTH_ADDR$TAG_PATH")
    echo "  anonymous (no auth configured): $a"
    echo "  Basic credentials:              $b"
    echo "  Bearer token:                   $t"
    a=${a%% *} b=${b%% *} t=${t%% *}
    [ "$a" -gt "$best_anon" ] && best_anon=$a
    [ "$b" -gt "$best_basic" ] && best_basic=$b
    [ "$t" -gt "$best_token" ] && best_token=$t
  done
  echo "manifest by tag with credentials: Basic $best_basic req/s ($(python3 -c "print(f'{$best_basic / $best_anon:.2f}')")x), token $best_token req/s ($(python3 -c "print(f'{$best_token / $best_anon:.2f}')")x), without auth $best_anon req/s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  kill "$AUTH_PID"
  wait "$AUTH_PID" || true
  AUTH_PID=
fi

if [ "$REDIRECT" = 1 ] && [ -x "$MOTO" ]; then
  echo "== the redirect path: $S3_IMAGE on the s3 backend (moto), wrk -t2 -c8 -d${DURATION}s --latency"
  FS_CONFIG=$(wrk_rps_p99 -t2 -c8 -d"${DURATION}s" "http://$ADDR/v2/$IMAGE/blobs/$CONFIG_DIGEST")
  FS_V2=$(wrk_rps_p99 -t2 -c8 -d"${DURATION}s" "http://$ADDR/v2/")
  FS_ADDR=$ADDR
  FS_PID=$NIXERY_PID
  MOTO_PORT=$(free_port)
  "$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/" && break
    sleep 0.1
  done
  curl -sf -o /dev/null -X PUT "http://127.0.0.1:$MOTO_PORT/bench"
  start_nixery s3 NIXERY_STORAGE_BACKEND=s3 S3_BUCKET=bench \
    AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" AWS_ACCESS_KEY_ID=testing \
    AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
  curl -sf "http://$ADDR/v2/$S3_IMAGE/manifests/latest" -o "$WORK/manifest-s3.json"
  S3_LAYER=$(python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(max(m["layers"], key=lambda l: l["size"])["digest"])' "$WORK/manifest-s3.json")
  S3_BLOB_URL="http://$ADDR/v2/$S3_IMAGE/blobs/$S3_LAYER"
  status=$(curl -s -o /dev/null -w '%{http_code}' "$S3_BLOB_URL")
  [ "$status" = 303 ] || { echo "bench-serve: the s3 blob answered $status, not 303" >&2; exit 1; }
  # The redirect target really serves the blob.
  curl -sfL -o "$WORK/s3-blob" "$S3_BLOB_URL"
  [ "sha256:$(sha256sum "$WORK/s3-blob" | cut -d' ' -f1)" = "$S3_LAYER" ]
  echo "blob redirect (s3, presigned): $(wrk_rps_p99 -t2 -c8 -d"${DURATION}s" "$S3_BLOB_URL")"
  echo "config blob (filesystem, same run): $FS_CONFIG"
  echo "/v2/ (filesystem, same run): $FS_V2"
  stop_nixery
  ADDR=$FS_ADDR
  NIXERY_PID=$FS_PID
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
fi

if [ "$SLOWLORIS" = 1 ]; then
  echo "== unfinished request head (default NIXERY_HEADER_TIMEOUT)"
  python3 - "$ADDR" <<'EOF'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
start = time.monotonic()
s.settimeout(120)
try:
    while s.recv(4096):
        pass
except (ConnectionResetError, socket.timeout):
    pass
print(f"unfinished request head closed after {time.monotonic() - start:.1f} s")
EOF
fi

if [ "$INDEX" = 1 ]; then
  stop_nixery
  OCI_INDEX=application/vnd.oci.image.index.v1+json
  # The offline set with every derivation declared for this machine, so
  # that its arm64 images build here (as tests/support's any_system_pkgs).
  any_system_pkgs "$WORK/any-system-pkgs"
  start_nixery index NIXERY_PLATFORMS=linux/amd64,linux/arm64 \
    NIXERY_PKGS_PATH="$WORK/any-system-pkgs"
  INDEX_URL="http://$ADDR/v2/$INDEX_IMAGE/manifests/latest"
  curl -sf -H "Accept: $OCI_INDEX" "$INDEX_URL" -o "$WORK/index.json"
  python3 - "$WORK/index.json" <<'EOF'
import json, sys
index = json.load(open(sys.argv[1]))
if len(index.get("manifests", [])) != 2:
    sys.exit(f"bench-serve: expected a two-platform index, got {index}")
EOF
  echo "== two platforms, $INDEX_IMAGE, wrk -t2 -c8 -d${DURATION}s --latency (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  echo "index by tag (warm): $(wrk_rps_p99 -t2 -c8 -d"${DURATION}s" -H "Accept: $OCI_INDEX" "$INDEX_URL")"
  echo "single manifest by tag (warm, same server): $(wrk_rps_p99 -t2 -c8 -d"${DURATION}s" "$INDEX_URL")"
fi
