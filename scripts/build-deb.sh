#!/usr/bin/env bash
# Builds the Debian package etcd-mirror_<version>_all.deb (version from package.json) into DIR (default:
# ./dist-deb). It carries everything the daemon runs on — the compiled code and the production npm dependencies,
# all plain JavaScript, hence Architecture: all — so installing it needs no network; only this build uses the
# npm registry (npm ci --omit=dev). Needs the dev dependencies here (npm ci) for the TypeScript compiler.
# Maintainer: $DEBFULLNAME <$DEBEMAIL> (as Debian's tools), else git's user.name/user.email, else user@host.
# Usage: scripts/build-deb.sh [DIR]
set -euo pipefail
out=$(realpath -m "${1:-dist-deb}")
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf 'build-deb: %s\n' "$*" >&2; }
die() { printf 'build-deb: error: %s\n' "$*" >&2; exit 1; }

command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found (it comes with dpkg)"
[[ -x node_modules/.bin/tsc ]] || die "node_modules/.bin/tsc is missing: run npm ci first"
version=$(node -p 'require("./package.json").version')
[[ $version =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "package.json version '$version' is not a valid Debian version"
name=${DEBFULLNAME:-$(git config user.name 2>/dev/null || id -un)}
email=${DEBEMAIL:-$(git config user.email 2>/dev/null || echo "$(id -un)@$(hostname)")}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg=$stage/root
app=$pkg/usr/lib/etcd-mirror

step "compiling into the package tree"
# Straight into the package, so a build never rewrites the dist/ that tests or a demo here are running.
node_modules/.bin/tsc -p tsconfig.json --outDir "$app/dist" --sourceMap false
node_modules/.bin/tsc -p src/ui/tsconfig.json --outDir "$app/dist/src/ui" --sourceMap false
install -D -m 0755 bin/etcd-mirror.js "$app/bin/etcd-mirror.js"
install -m 0644 package.json package-lock.json "$app/"
# The v3 client loads etcd's protos at run time, from src/etcd/v3/proto next to dist/.
install -D -m 0644 -t "$app/src/etcd/v3/proto" src/etcd/v3/proto/*.proto

step "installing the production dependencies (npm ci --omit=dev)"
# --ignore-scripts: the root package's `prepare` runs tsc, which --omit=dev leaves out; of the runtime
# dependencies only protobufjs has an install script, and it only checks versions.
(cd "$app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
# The bundle bin/etcd-mirror.js runs (scripts/bundle.mjs), of the packages just installed.
node scripts/bundle.mjs "$app/dist"

# /usr/bin/etcd-mirror: always the node of the nodejs package this one depends on, whatever is first on PATH.
install -d "$pkg/usr/bin"
cat >"$pkg/usr/bin/etcd-mirror" <<'EOF'
#!/bin/sh
exec /usr/bin/node /usr/lib/etcd-mirror/bin/etcd-mirror.js "$@"
EOF
chmod 0755 "$pkg/usr/bin/etcd-mirror"
install -D -m 0644 contrib/etcd-mirror.service "$pkg/lib/systemd/system/etcd-mirror.service"
install -D -m 0644 -t "$pkg/usr/share/etcd-mirror" contrib/prometheus-alerts.yml contrib/grafana-dashboard.json
install -D -m 0644 -t "$pkg/usr/share/doc/etcd-mirror" README.md contrib/debian/copyright
# The settings file names clusters and users: root only, like the password files next to it.
install -D -m 0600 contrib/etcd-mirror.env "$pkg/etc/etcd-mirror/etcd-mirror.env"
# npm unpacks with the builder's umask; installed files are writable by root only.
chmod -R go-w "$pkg"

install -d "$pkg/DEBIAN"
install -m 0755 -t "$pkg/DEBIAN" contrib/debian/postinst contrib/debian/prerm contrib/debian/postrm
echo /etc/etcd-mirror/etcd-mirror.env >"$pkg/DEBIAN/conffiles"
cat >"$pkg/DEBIAN/control" <<EOF
Package: etcd-mirror
Version: $version
Architecture: all
Maintainer: $name <$email>
Installed-Size: $(du -sk "$pkg" | cut -f1)
Depends: nodejs (>= 20.18)
Section: admin
Priority: optional
Description: live mirror of an etcd key prefix into another etcd cluster
 A daemon that mirrors a key prefix of a source etcd cluster into a prefix of
 a destination cluster: v2 to v2 (a drop-in replacement for Wikimedia's
 etcdmirror, same flags, index key and metrics), v3 to v3, and v2 to v3 as a
 live bridge. It resumes from the stored index, recovers from a lost history
 window by itself and never empties the replica.
 .
 Ships a disabled systemd unit, Prometheus alert rules and a Grafana
 dashboard (/usr/share/etcd-mirror).
EOF

mkdir -p "$out"
deb=$out/etcd-mirror_${version}_all.deb
step "packing $deb"
dpkg-deb --build --root-owner-group "$pkg" "$deb" >/dev/null
printf '%s\n' "$deb"
