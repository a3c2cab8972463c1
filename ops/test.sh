#!/usr/bin/env bash
# Set up and run the whole test suite (lint, types, then pytest against real Redis, PostgreSQL, Celery, HTTP).
set -euo pipefail
cd "$(dirname "$0")/.."
source ops/bootstrap.sh
start_redis
start_postgres
ensure_chromium

.venv/bin/ruff check .
.venv/bin/mypy   # the packages and settings in pyproject.toml ([tool.mypy]), with the pydantic plugin
set +e
.venv/bin/pytest "$@"
code=$?
set -e
if [ "$code" = 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$code"
