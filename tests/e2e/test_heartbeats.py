"""Workers and schedulers beat into Redis: a container's healthcheck (``python -m cli.health``, ``gateway
health``) asks about its own host's process, and /metrics counts them (``gateway_processes_alive``)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, Stack


def _health(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_the_healthcheck_finds_this_hosts_worker_and_scheduler(stack: Stack) -> None:
    for kind in ("worker", "scheduler"):
        done = _health("cli.health", kind)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{kind} alive: ")
    assert _health("cli", "health", "worker").returncode == 0


def test_the_healthcheck_fails_without_a_beating_process(stack: Stack) -> None:
    import os

    lonely = subprocess.run([sys.executable, "-m", "cli.health", "worker"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={**os.environ, "GATEWAY_KEY_PREFIX": "gw-nobody-here"})
    assert lonely.returncode == 1 and "no worker on" in lonely.stderr
    wrong = _health("cli.health", "flower")
    assert wrong.returncode == 1 and "kind must be one of worker, scheduler" in wrong.stderr
