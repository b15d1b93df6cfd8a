#!/usr/bin/env bash
# Installs what the tests need: Redis (Debian), nginx (Debian, for the benchmarks),
# chromium (Debian, for the web console's browser test),
# ffmpeg, libjpeg-turbo-progs and fonts-dejavu-core (Debian, the router's built-ins),
# and Nomad v1.6.2 / Consul v1.15.4 / SeaweedFS (the S3-compatible store the S3
# object backend is tested against) built from the Go module proxy into a cache
# directory that later runs reuse. Idempotent: safe to run before every test run.
#
# Prints the directory holding nomad and consul on its last line of output, and
# writes it to .deps-bin for the Makefile.
set -euo pipefail

NOMAD_VERSION=v1.6.2
NOMAD_API_VERSION=v0.0.0-20230913164725-73e372ad9403
CONSUL_VERSION=v1.15.4
CONSUL_API_VERSION=v1.25.1
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6
CACHE=${DORA_DEPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dora-deps}
BIN=$CACHE/bin
mkdir -p "$BIN"

log() { echo "install-deps: $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

# build_from_proxy NAME MODULE VERSION EDIT...
# Downloads MODULE@VERSION from the module proxy, applies go.mod edits, builds
# the main package at the module root (or at $BUILD_PKG, e.g. ./weed, when the
# main package lives in a subdirectory) into $BIN/NAME.
build_from_proxy() {
  local name=$1 module=$2 version=$3; shift 3
  local pkg=${BUILD_PKG:-.}
  local marker=$BIN/.$name-$version
  if [ -x "$BIN/$name" ] && [ -f "$marker" ]; then
    log "$name $version cached in $BIN"
    return 0
  fi
  log "building $name $version from the Go module proxy (several minutes)"
  local work
  work=$(mktemp -d)
  local gopath
  gopath=$(go env GOMODCACHE)
  (cd "$work" && GOFLAGS=-mod=mod go mod download -json "$module@$version" >dl.json)
  local dir
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$work/dl.json")
  [ -n "$dir" ] || { log "download of $module@$version failed"; cat "$work/dl.json" >&2; exit 1; }
  cp -r "$dir" "$work/src"
  chmod -R u+w "$work/src"
  (
    cd "$work/src"
    for edit in "$@"; do go mod edit "$edit"; done
    GOFLAGS=-mod=mod GOTOOLCHAIN=local go build -ldflags=-checklinkname=0 -o "$BIN/$name.tmp" "$pkg"
  )
  mv "$BIN/$name.tmp" "$BIN/$name"
  touch "$marker"
  rm -rf "$work"
  log "$name $version built"
}

apt_install redis-server nginx
# chromium: the web console's browser test (cli/e2e TestConsoleInBrowser).
apt_install chromium
# The router's built-ins: avinfo runs ffprobe, interlaced JPEG runs jpegtran,
# text watermarks draw with the DejaVu fonts.
apt_install ffmpeg libjpeg-turbo-progs fonts-dejavu-core
# Containers: the embedded runtime runs OCI images with podman (daemonless)
# on runc (crun refuses hybrid cgroup hosts) and slirp4netns networking.
apt_install podman runc slirp4netns
# Nomad's bridge networking (packages listening on the fixed port 9100 on
# Nomad) runs the CNI plugins from /usr/lib/cni (the real-agent tests point
# the Nomad agent's cni_path there).
apt_install containernetworking-plugins

build_from_proxy nomad github.com/hashicorp/nomad "$NOMAD_VERSION" \
  -dropreplace=github.com/hashicorp/nomad/api \
  "-require=github.com/hashicorp/nomad/api@$NOMAD_API_VERSION"

consul_edits=()
for r in api envoyextensions proto-public sdk troubleshoot; do
  consul_edits+=("-dropreplace=github.com/hashicorp/consul/$r")
done
build_from_proxy consul github.com/hashicorp/consul "$CONSUL_VERSION" \
  "${consul_edits[@]}" "-require=github.com/hashicorp/consul/api@$CONSUL_API_VERSION"

# SeaweedFS's only replace directive swaps a module deleted from GitHub for its
# maintained fork (module to module, valid in the main module), so it is kept.
BUILD_PKG=./weed build_from_proxy weed github.com/seaweedfs/seaweedfs "$SEAWEEDFS_VERSION"

"$BIN/nomad" version >&2
"$BIN/consul" version >&2
"$BIN/weed" version >&2
command -v redis-server >/dev/null
command -v chromium >/dev/null
command -v ffprobe >/dev/null
command -v jpegtran >/dev/null
echo "$BIN"
