#!/usr/bin/env bash
# Start-up time, two figures (issue 18): `etcd-mirror --version` against `node -e 0`, and how long after exec a
# v2→v2 daemon opens its first connection to the source (a recording proxy in front of each side).
# Usage: bench/startup.sh [runs] [root]   root: a checkout with bin/ and dist/ (default: this one).
# Needs etcd on PATH; starts one throwaway etcd on free loopback ports and kills it by PID.
set -euo pipefail
runs=${1:-10}
root=${2:-$(cd "$(dirname "$0")/.." && pwd)}
bin="$root/bin/etcd-mirror.js"

ms_of() { # runs "$@" once, prints wall milliseconds
  local t0 t1
  t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000000 ))
}
summary() { sort -n | awk '{a[NR]=$1} END {printf "min %d  median %d  max %d ms (n=%d)\n", a[1], a[int((NR+1)/2)], a[NR], NR}'; }

echo "node -e 0:             $(for _ in $(seq "$runs"); do ms_of node -e 0; done | summary)"
echo "etcd-mirror --version: $(for _ in $(seq "$runs"); do ms_of node "$bin" --version; done | summary)"

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
dir=$(mktemp -d)
# One etcd, two client ports: the daemon's source is sport, its destination dport, so connects tell them apart.
sport=$(free_port); dport=$(free_port); pport=$(free_port)
etcd --name startup --data-dir "$dir/etcd" --enable-v2 \
  --listen-client-urls "http://127.0.0.1:$sport,http://127.0.0.1:$dport" --advertise-client-urls "http://127.0.0.1:$sport" \
  --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
  --initial-cluster "startup=http://127.0.0.1:$pport" >"$dir/etcd.log" 2>&1 &
etcd_pid=$!
trap 'kill "$etcd_pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$sport/version" >/dev/null && break; sleep 0.1; done
curl -sf -XPUT "http://127.0.0.1:$sport/v2/keys/dst/__replication" -d value=1 >/dev/null
psport=$(free_port); pdport=$(free_port)
# A recording proxy in front of each port: prints the epoch-ms of the first connection it gets, per side.
node -e '
  const net = require("net");
  const [sport, dport, slisten, dlisten] = process.argv.slice(1).map(Number);
  for (const [side, listen, target] of [["src", slisten, sport], ["dst", dlisten, dport]]) {
    net.createServer((c) => {
      console.log(side, Date.now());
      const u = net.connect(target, "127.0.0.1"); c.pipe(u).pipe(c);
      c.on("error", () => u.destroy()); u.on("error", () => c.destroy());
    }).listen(listen, "127.0.0.1");
  }' "$sport" "$dport" "$psport" "$pdport" >"$dir/proxy.log" &
proxy_pid=$!
trap 'kill "$etcd_pid" "$proxy_pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$pdport/version" >/dev/null && break; sleep 0.1; done
: >"$dir/proxy.log"
# Prints "first-connect-any first-connect-source", ms after the daemon's exec.
first_connect() {
  local hport t0 pid
  hport=$(free_port)
  : >"$dir/proxy.log"
  t0=$(( $(date +%s%N) / 1000000 ))
  node "$bin" --src-prefix /src --dst-prefix /dst --port "$hport" "http://127.0.0.1:$psport" "http://127.0.0.1:$pdport" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 200); do grep -q '^src' "$dir/proxy.log" && break; sleep 0.05; done
  kill -INT "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  awk -v t0="$t0" '!any { any = $2 } /^src/ { printf "%d %d\n", any - t0, $2 - t0; exit }' "$dir/proxy.log"
}
results=$(for _ in $(seq "$runs"); do first_connect; done)
echo "v2→v2 first connect to either side after exec: $(cut -d' ' -f1 <<<"$results" | summary)"
echo "v2→v2 first connect to the source after exec:  $(cut -d' ' -f2 <<<"$results" | summary)"
