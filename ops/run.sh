#!/usr/bin/env bash
# Set up and run the gateway on embedded defaults: SQLite in ./var, local Redis, the simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
source ops/bootstrap.sh
mkdir -p var
exec .venv/bin/gateway up "$@"
