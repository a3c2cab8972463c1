"""Flower, as an operator runs it (``gateway flower``), against the stack's real worker: the broker's
execution queues, every inspection answered, and a task found by its tenant."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.keys import Keys
from shared.lanes import LANES
from tests.conftest import PREFIX, ROOT, Stack, free_port, spawn, stop, wait_for_status, wait_http

LOGIN = ("ops", "flower-tests")
INSPECTIONS = {"stats", "active_queues", "registered", "scheduled", "active", "reserved", "revoked", "conf"}


@pytest.fixture(scope="module")
def flower(stack: Stack) -> Iterator[str]:
    port = free_port()
    proc = spawn("cli", "flower", "--port", str(port), env={"FLOWER_BASIC_AUTH": ":".join(LOGIN)}, log="flower")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthcheck", proc)
        yield url
    finally:
        stop(proc)


def _get(url: str, **params: Any) -> Any:
    r = httpx.get(url, params=params, auth=LOGIN, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _eventually(probe: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(0.2)
    raise AssertionError(f"{probe.__doc__} within {timeout}s")


def test_the_broker_page_lists_the_three_execution_queues_with_their_lengths(flower: str) -> None:
    queues = _get(f"{flower}/api/queues/length")["active_queues"]
    assert {q["name"] for q in queues} == {Keys(PREFIX).exec_queue(lane) for lane in LANES}
    assert all(isinstance(q["messages"], int) for q in queues)
    assert httpx.get(f"{flower}/broker", auth=LOGIN).status_code == 200


def test_the_worker_answers_every_inspection(flower: str) -> None:
    def answered() -> dict[str, Any] | None:
        """the worker answered Flower"""
        return _get(f"{flower}/api/workers", refresh=1) or None

    name = next(iter(_eventually(answered)))
    info = _get(f"{flower}/api/workers", refresh=1, workername=name)[name]
    assert not INSPECTIONS - set(info), f"unanswered: {INSPECTIONS - set(info)}"
    assert info["stats"]["broker"]["transport"] == "redis"
    assert {q["name"] for q in info["active_queues"]} == {Keys(PREFIX).exec_queue(lane) for lane in LANES}


def test_a_task_is_found_by_tenant_and_says_its_feature_lane_and_deployment(stack: Stack, flower: str) -> None:
    with stack.client("globex") as c:
        job = c.post("/v1/jobs", json={"model": "gpt-4o-mini", "feature": "metrics-batch", "priority": "batch",
                                       "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}).json()
        wait_for_status(c, job["id"], {"succeeded"})

    def found() -> dict[str, Any] | None:
        """Flower found the job's task by its tenant"""
        tasks = _get(f"{flower}/api/tasks", search="kwargs:tenant=globex")
        return next((t for t in tasks.values() if job["id"] in t["args"]), None)

    task = _eventually(found)
    assert task["state"] == "SUCCESS"
    for tag in ("'tenant': 'globex'", "'feature': 'metrics-batch'", "'lane': 'batch'",
                "'deployment': 'gpt-4o-mini@sim'"):
        assert tag in task["kwargs"]
    assert job["id"] not in str(_get(f"{flower}/api/tasks", search="kwargs:tenant=acme"))


def test_flower_asks_for_a_login_and_refuses_to_start_without_one(flower: str) -> None:
    assert httpx.get(f"{flower}/api/workers").status_code == 401
    assert httpx.get(f"{flower}/").status_code == 401
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    refused = subprocess.run([sys.executable, "-m", "cli", "flower", "--port", str(free_port())], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "FLOWER_BASIC_AUTH" in refused.stderr
