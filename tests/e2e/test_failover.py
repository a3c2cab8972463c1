"""Kill the scheduler leader: a standby takes over, every job still runs, none is admitted twice."""

from __future__ import annotations

import os
import signal
import time

import redis

from shared.keys import Keys
from tests.conftest import PREFIX, REDIS_URL, Stack, spawn, wait_for_status

CHAT = {"model": "gpt-4o-mini", "priority": "standard", "messages": [{"role": "user", "content": "go"}]}


def _leader(r: redis.Redis) -> str | None:
    value = r.get(Keys(PREFIX).leader)
    return value.decode() if value else None


def test_killing_the_leader_hands_over_to_the_standby(stack: Stack) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    standby = spawn("cli", "scheduler", log="scheduler-standby")
    leader = stack.procs["scheduler"]
    deadline = time.monotonic() + 15
    while f"-{leader.pid}-" not in (_leader(r) or "") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"-{leader.pid}-" in (_leader(r) or "")
    with stack.client("globex") as c:
        before = [c.post("/v1/jobs", json=CHAT).json()["id"] for _ in range(10)]
        # Killed between popping a job and sending it, a leader would strand that job until the
        # reconciler (the resilience issue) finds it; here it is killed with nothing in its hands.
        for job_id in before:
            wait_for_status(c, job_id, {"succeeded", "failed"})
        os.kill(leader.pid, signal.SIGKILL)
        leader.wait()
        stack.procs["scheduler"] = standby  # the fixture stops whichever scheduler is left
        after = [c.post("/v1/jobs", json=CHAT).json()["id"] for _ in range(10)]
        done = [wait_for_status(c, job_id, {"succeeded", "failed"}, timeout=60) for job_id in before + after]
    assert f"-{standby.pid}-" in (_leader(r) or "")
    assert all(job["status"] == "succeeded" for job in done)
    assert all(job["attempts"] == 1 for job in done)  # nothing was sent twice
