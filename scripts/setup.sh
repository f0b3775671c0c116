#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh Debian machine: etcd (v2 API capable), npm
# dependencies, and the compiled dist/. Idempotent and quiet: one progress line per step on stderr.
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

if command -v etcd >/dev/null 2>&1 || [[ -x /usr/bin/etcd ]]; then
  step "etcd present"
else
  step "installing etcd-server with apt-get"
  if [[ $(id -u) -eq 0 ]]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    die "etcd is missing and we are not root (no sudo either); install the Debian package etcd-server"
  fi
  # The package also enables a systemd unit on the default ports; we never use it (our etcds run on free
  # ports with their own data dirs), so it is left alone.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >&2
fi

if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  step "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >&2
else
  step "npm dependencies up to date"
fi

step "building (tsc)"
npm run --silent build >&2
