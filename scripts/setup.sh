#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh Debian machine: etcd (v2 API capable), npm dependencies,
# the compiled dist/ and, with --browser (the tests), Chromium. Idempotent and quiet: one progress line per step
# on stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

step "checking Node.js"
command -v node >/dev/null 2>&1 || die "node not found; install Node.js >= 20.18"
node_version=$(node -p 'process.versions.node')
IFS=. read -r major minor _ <<<"$node_version"
if (( major < 20 || (major == 20 && minor < 18) )); then
  die "Node.js >= 20.18 required, found $node_version"
fi

# apt_install PACKAGE WHAT: installs a Debian package as root, or through sudo.
apt_updated=false
apt_install() {
  local sudo
  if [[ $(id -u) -eq 0 ]]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    die "$2 is missing and we are not root (no sudo either); install the Debian package $1"
  fi
  if [[ $apt_updated == false ]]; then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=true
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >&2
}

if command -v etcd >/dev/null 2>&1 || [[ -x /usr/bin/etcd ]]; then
  step "etcd present"
else
  step "installing etcd-server with apt-get"
  # The package also enables a systemd unit on the default ports; we never use it (our etcds run on free
  # ports with their own data dirs), so it is left alone.
  apt_install etcd-server etcd
fi

# The clock-skew test runs the mirror under libfaketime (LD_PRELOAD) to shift its wall clock against the etcds'.
# (Debian's faketime depends on libfaketime, which holds /usr/lib/<arch>/faketime/libfaketime.so.1.)
if command -v faketime >/dev/null 2>&1; then
  step "faketime present"
else
  step "installing faketime with apt-get"
  apt_install faketime faketime
fi

# etcdctl (Debian's etcd-client, 3.4): the v3 tests enable v3 auth with it, and the v3 bench runs its make-mirror
# as the peer to compare with.
if command -v etcdctl >/dev/null 2>&1; then
  step "etcdctl present"
else
  step "installing etcd-client with apt-get"
  apt_install etcd-client etcdctl
fi

# The /ui browser test drives Debian's Chromium through playwright-core, which downloads no browser.
if [[ ${1:-} == --browser ]]; then
  if [[ -x /usr/bin/chromium ]]; then
    step "chromium present"
  else
    step "installing chromium with apt-get"
    apt_install chromium chromium
  fi
fi

if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  step "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >&2
else
  step "npm dependencies up to date"
fi

step "building (tsc)"
npm run --silent build >&2
