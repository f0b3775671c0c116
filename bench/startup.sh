#!/usr/bin/env bash
# Start-up time (issue 18): `etcd-mirror --version` against `node -e 0`, and how long after exec a v2→v2 daemon
# first reaches the source: its first connection, its first request, and its first history request (a recording
# proxy in front of each side). STARTUP_TRACE=1 prints each run's connections and request lines on stderr.
# Usage: bench/startup.sh [runs] [root...]   root: a checkout with bin/ and dist/ (default: this one). With several
# roots the runs alternate between them (run 1 of each, then run 2 of each...), so that a load that comes and goes
# on a shared machine falls on each alike.
# Needs etcd on PATH; starts one throwaway etcd on free loopback ports and kills it by PID.
set -euo pipefail
runs=${1:-10}
roots=("${@:2}")
[ ${#roots[@]} -gt 0 ] || roots=("$(cd "$(dirname "$0")/.." && pwd)")

ms_of() { # runs "$@" once, prints wall milliseconds
  local t0 t1
  t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000000 ))
}
summary() { sort -n | awk '{a[NR]=$1} END {printf "min %d  median %d  max %d ms (n=%d)\n", a[1], a[int((NR+1)/2)], a[NR], NR}'; }

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
dir=$(mktemp -d)
for _ in $(seq "$runs"); do
  ms_of node -e 0 >>"$dir/node"
  for i in "${!roots[@]}"; do ms_of node "${roots[$i]}/bin/etcd-mirror.js" --version >>"$dir/version.$i"; done
done
# One etcd, two client ports: the daemon's source is sport, its destination dport, so connects tell them apart.
sport=$(free_port); dport=$(free_port); pport=$(free_port)
etcd --name startup --data-dir "$dir/etcd" --enable-v2 \
  --listen-client-urls "http://127.0.0.1:$sport,http://127.0.0.1:$dport" --advertise-client-urls "http://127.0.0.1:$sport" \
  --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
  --initial-cluster "startup=http://127.0.0.1:$pport" >"$dir/etcd.log" 2>&1 &
etcd_pid=$!
trap 'kill "$etcd_pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$sport/version" >/dev/null && break; sleep 0.1; done
curl -sf -XPUT "http://127.0.0.1:$sport/v2/keys/__replication/dst" -d value=1 >/dev/null  # the checkpoint the daemon resumes from
psport=$(free_port); pdport=$(free_port)
# A recording proxy in front of each port: prints the epoch-ms of each connection it gets, per side, and of each
# request line it forwards ("src 1765... GET /v2/keys/src?wait=true..."), so that which request came first shows.
node -e '
  const net = require("net");
  const [sport, dport, slisten, dlisten] = process.argv.slice(1).map(Number);
  for (const [side, listen, target] of [["src", slisten, sport], ["dst", dlisten, dport]]) {
    net.createServer((c) => {
      console.log(side, Date.now(), "connect");
      const u = net.connect(target, "127.0.0.1");
      c.on("data", (d) => {
        for (const m of d.toString("latin1").matchAll(/^(GET|PUT|POST|DELETE) (\S+)/gm)) console.log(side, Date.now(), m[1], m[2]);
      });
      c.pipe(u).pipe(c);
      c.on("error", () => u.destroy()); u.on("error", () => c.destroy());
    }).listen(listen, "127.0.0.1");
  }' "$sport" "$dport" "$psport" "$pdport" >>"$dir/proxy.log" &  # appended: the log is emptied before each run while the proxy writes on
proxy_pid=$!
trap 'kill "$etcd_pid" "$proxy_pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$pdport/version" >/dev/null && break; sleep 0.1; done
: >"$dir/proxy.log"
# Prints, in ms after the daemon's exec: the first connection to either side, the first to the source, the
# source's first request (whatever it is), and its first history request (a watch with a waitIndex: the long-poll
# from the stored checkpoint, where a restarted mirror's replication actually resumes).
first_connect() { # $1: the bin to run
  local hport t0 pid idx
  hport=$(free_port)
  # The checkpoint one event behind the store (this write is that event): every run resumes with some history.
  idx=$(curl -sfi "http://127.0.0.1:$sport/v2/keys/" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-etcd-index" { print $2 }')
  curl -sf -XPUT "http://127.0.0.1:$sport/v2/keys/__replication/dst" -d value="$idx" >/dev/null
  : >"$dir/proxy.log"
  t0=$(( $(date +%s%N) / 1000000 ))
  node "$1" --src-prefix /src --dst-prefix /dst --port "$hport" "http://127.0.0.1:$psport" "http://127.0.0.1:$pdport" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 200); do grep -q '^src [0-9]* GET .*waitIndex=' "$dir/proxy.log" && break; sleep 0.05; done
  kill -INT "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  [ -n "${STARTUP_TRACE:-}" ] && awk -v t0="$t0" '{ $2 = $2 - t0; print }' "$dir/proxy.log" >&2
  awk -v t0="$t0" '
    !any { any = $2 }
    /^src [0-9]+ connect/ && !conn { conn = $2 }
    /^src [0-9]+ (GET|PUT|POST|DELETE)/ && !req { req = $2 }
    /^src [0-9]+ GET .*waitIndex=/ && !hist { hist = $2 }
    END { printf "%d %d %d %d\n", any - t0, conn - t0, req - t0, hist - t0 }' "$dir/proxy.log"
}
for _ in $(seq "$runs"); do
  for i in "${!roots[@]}"; do first_connect "${roots[$i]}/bin/etcd-mirror.js" >>"$dir/daemon.$i"; done
done
echo "node -e 0:             $(summary <"$dir/node")"
for i in "${!roots[@]}"; do
  [ ${#roots[@]} -eq 1 ] || echo "${roots[$i]}:"
  echo "etcd-mirror --version: $(summary <"$dir/version.$i")"
  echo "v2→v2 first connect to either side after exec: $(cut -d' ' -f1 "$dir/daemon.$i" | summary)"
  echo "v2→v2 first connect to the source after exec:  $(cut -d' ' -f2 "$dir/daemon.$i" | summary)"
  echo "v2→v2 first source request after exec:         $(cut -d' ' -f3 "$dir/daemon.$i" | summary)"
  echo "v2→v2 first source history request after exec: $(cut -d' ' -f4 "$dir/daemon.$i" | summary)"
done
