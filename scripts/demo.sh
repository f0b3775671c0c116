#!/usr/bin/env bash
# Sets up, then runs the self-contained demo (it starts its own etcd servers); arguments go to the demo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec node bin/etcd-mirror.js demo "$@"
