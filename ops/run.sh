#!/usr/bin/env bash
# Set up and run the gateway on embedded defaults: SQLite in ./var, local Redis, the simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
source ops/bootstrap.sh
# ./var holds the SQLite store and the local keys: only this user may enter it (it is the
# gateway's own directory, so one an older version left 755 is tightened too).
mkdir -p var && chmod 700 var
exec .venv/bin/gateway up "$@"
