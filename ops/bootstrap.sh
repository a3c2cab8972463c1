#!/usr/bin/env bash
# Shared set-up for ops/run.sh and ops/test.sh: a virtualenv with the gateway installed, and the
# local services it needs (Redis; PostgreSQL for the tests) started when they are down.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e ".[dev]"
  rm -f .venv/.installed-* && touch "$stamp"
fi

redis_up() { .venv/bin/python -c "import redis,sys; redis.Redis(socket_connect_timeout=1).ping()" 2>/dev/null; }
start_redis() {
  if redis_up; then return 0; fi
  if ! command -v redis-server >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    else
      echo "No Redis on 127.0.0.1:6379 and no redis-server: install it (apt-get install redis-server," \
           "brew install redis) or set GATEWAY_REDIS_URL." >&2
      return 1
    fi
  fi
  redis-server --daemonize yes --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 50); do redis_up && return 0; sleep 0.1; done
  echo "redis-server did not start" >&2; return 1
}

# The console's browser test (tests/e2e/test_console.py) drives the system's chromium; it skips without one.
ensure_chromium() {
  if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || echo "could not install chromium; the console's browser test will be skipped" >&2
  else
    echo "no chromium: the console's browser test will be skipped (apt-get install chromium)" >&2
  fi
}

start_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p 5432 && return 0; sleep 0.1; done
  fi
  echo "PostgreSQL is not running on 127.0.0.1:5432; PostgreSQL tests will be skipped." >&2
}
