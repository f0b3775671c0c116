#!/usr/bin/env bash
# Runs the whole test suite (type check, unit and integration tests) after making sure everything is set up.
# Extra arguments go to vitest, e.g. scripts/test.sh --project unit
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --browser
exec npm test -- "$@"
