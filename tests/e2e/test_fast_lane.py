"""The fast lane: an interactive call with nobody ahead of it is sent by the api itself, on the
caller's request, with the same bookkeeping a worker does (record, cost, lease, retry budget); a
retry, a full api or an api killed mid-call hands the job to the scheduler and the Celery workers."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select

from shared.breaker import Breakers
from shared.config import get_settings
from shared.db.models import Attempt
from shared.db.session import session_scope
from shared.keys import Keys
from shared.retry import RetryPolicy
from tests.conftest import ADMIN, PREFIX, REDIS_URL, Stack, free_port, spawn, stop, wait_for_status, wait_http

CHAT = {"max_tokens": 16, "messages": [{"role": "user", "content": "What is the capital of France?"}]}


def _sent(api_url: str, by: str) -> float:
    """``gateway_fast_lane_sent_total{by=...}`` as the api at ``api_url`` reports it."""
    text = httpx.get(f"{api_url}/metrics", headers=ADMIN).text
    found = re.search(rf'^gateway_fast_lane_sent_total{{by="{by}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _attempts(job_id: str) -> list[Attempt]:
    with session_scope(readonly=True) as db:
        return list(db.scalars(select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number)))


def _chat(url: str, key: str, model: str, feature: str = "fast-lane-tests", max_tokens: int = 16,
          **kw: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "model": model, "max_tokens": max_tokens},
                      headers={"Authorization": f"Bearer {key}", "X-Gateway-Feature": feature}, timeout=60, **kw)


@pytest.fixture
def other_api(stack: Stack) -> Iterator[Callable[..., tuple[str, Any]]]:
    """Start another api process on the stack's Redis and store, with extra environment."""
    started: list[Any] = []

    def start(**env: str) -> tuple[str, Any]:
        port = free_port()
        proc = spawn("cli", "api", "--port", str(port), env=env, log=f"api-{port}")
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", proc)
        return url, proc

    yield start
    for proc in started:
        stop(proc)


def test_the_api_sends_a_fast_lane_call_itself_with_the_full_bookkeeping(stack: Stack) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    counter = RetryPolicy(r, Keys(PREFIX), get_settings().retries).attempt_counter("gpt-4o@sim")[0]
    counted_before = int(r.get(counter) or 0)
    sent_before = _sent(stack.url, "api")

    reply = _chat(stack.url, stack.keys["acme"], "gpt-4o")

    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"]
    job_id = reply.headers["x-gateway-job-id"]
    assert reply.headers["x-gateway-deployment"] == "gpt-4o@sim"
    assert float(reply.headers["x-gateway-cost-usd"]) > 0
    assert _sent(stack.url, "api") == sent_before + 1
    [attempt] = _attempts(job_id)
    assert attempt.status == "succeeded" and attempt.cost_usd and attempt.cost_usd > 0
    with stack.client() as c:
        job = c.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["usage"]["total_tokens"] > 0
    # The attempt's last round trip runs as the response goes out: the lease is dropped and the
    # attempt counted for the retry budget moments later.
    deadline = time.monotonic() + 5
    while r.exists(Keys(PREFIX).lease(job_id)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not r.exists(Keys(PREFIX).lease(job_id))
    assert int(r.get(counter) or 0) >= counted_before + 1


def test_a_first_attempt_that_fails_in_the_api_is_retried_by_a_worker(stack: Stack, faults: Any) -> None:
    # 429s for 1.9 s: the first attempt meets one if it comes within them (a loaded machine may take a
    # second), and the retry, at least the 2 s Retry-After later, comes after them whenever that was.
    faults(kind="storm", model="gpt-storm", retry_after_s=2, duration_s=1.9)

    reply = _chat(stack.url, stack.keys["acme"], "storm")

    assert reply.status_code == 200, reply.text  # the caller waited through the retry
    attempts = _attempts(reply.headers["x-gateway-job-id"])
    assert [a.http_status for a in attempts] == [429, 200]
    assert attempts[1].started_at is not None and attempts[0].finished_at is not None
    assert (attempts[1].started_at - attempts[0].finished_at).total_seconds() >= 1.95  # Retry-After: 2


def test_with_no_free_slot_the_workers_send_the_fast_lane(stack: Stack, other_api: Any) -> None:
    url, _ = other_api(GATEWAY_API__FAST_LANE_ATTEMPTS="0")

    reply = _chat(url, stack.keys["globex"], "gpt-4o-mini")

    assert reply.status_code == 200, reply.text
    assert _sent(url, "worker") == 1 and _sent(url, "api") == 0
    assert [a.status for a in _attempts(reply.headers["x-gateway-job-id"])] == ["succeeded"]


def test_calls_beyond_the_api_slots_go_to_the_workers(stack: Stack, other_api: Any) -> None:
    url, _ = other_api(GATEWAY_API__FAST_LANE_ATTEMPTS="1")
    with ThreadPoolExecutor(3) as pool:  # three slow calls at once, one slot: two overflow
        replies = list(pool.map(lambda _: _chat(url, stack.keys["globex"], "slow"), range(3)))

    assert [r.status_code for r in replies] == [200, 200, 200]
    assert _sent(url, "api") + _sent(url, "worker") == 3 and _sent(url, "api") >= 1 and _sent(url, "worker") >= 1
    for reply in replies:
        assert [a.status for a in _attempts(reply.headers["x-gateway-job-id"])] == ["succeeded"]


def test_an_api_killed_mid_call_leaves_the_job_to_the_reconciler(stack: Stack, other_api: Any) -> None:
    url, proc = other_api()
    feature = f"killed-{uuid.uuid4().hex[:8]}"
    caller = threading.Thread(target=lambda: _swallow(lambda: _chat(url, stack.keys["globex"], "slow", feature)))
    caller.start()
    with stack.client("globex") as c:
        deadline = time.monotonic() + 20
        while not (listed := c.get("/v1/jobs", params={"feature": feature}).json()["data"]):
            assert time.monotonic() < deadline, "the call never reached the gateway"
            time.sleep(0.05)
        _wait_in_flight(stack.sim_url)
        os.kill(proc.pid, signal.SIGKILL)  # mid-call: the job is admitted, its lease held, no result
        proc.wait()
        caller.join()
        done = wait_for_status(c, listed[0]["id"], {"succeeded", "failed", "expired"}, timeout=60)
    assert done["status"] == "succeeded"  # its lease expired and a worker sent it again
    assert [a.status for a in _attempts(done["id"])] == ["succeeded"]


def _wait_in_flight(sim_url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not httpx.get(f"{sim_url}/sim/stats", params={"series": 0}).json().get("in_flight"):
        assert time.monotonic() < deadline, "no call reached the provider"
        time.sleep(0.02)


def _swallow(call: Callable[[], object]) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the api it talks to is killed mid-call
        call()


def test_a_reservation_sent_ahead_to_a_breaker_found_open_is_refunded_and_the_fallback_answers(
        stack: Stack, other_api: Any) -> None:
    """The api sends a fast-lane job's reservation with its read-ahead, on the deployment the last
    read-ahead found closed; this one finds its breaker open: the guess is refunded in full and the
    call is reserved on, and sent to, the chain's fallback (600 TPM each: a refill too slow to hide a
    reservation kept or missing; the fallback answers in 1.5 s, so the budgets are read mid-call)."""
    url, _ = other_api()
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    guessed, fallback = (Keys(PREFIX).budget_bucket("deployment", name, "tpm")
                         for name in ("guess@sim", "guess-slow@sim"))
    first = _chat(url, stack.keys["globex"], "guess-fallback", max_tokens=5)  # the api sees guess@sim closed
    assert first.status_code == 200 and first.headers["x-gateway-deployment"] == "guess@sim"
    breakers = Breakers.from_settings(r, Keys(PREFIX), get_settings())
    for _ in range(3):
        breakers.record("guess@sim", ok=False, kind="server_error")
    assert breakers.state("guess@sim")["state"] == "open"
    before = float(r.hget(guessed, "level") or 0)

    with ThreadPoolExecutor(1) as pool:
        sent = time.monotonic()
        call = pool.submit(_chat, url, stack.keys["globex"], "guess-fallback", max_tokens=5)
        # The fallback's reservation is made after the guess was looked at, well before the answer (1.5 s):
        # a reservation of the fallback first seen later is the attempt's settlement, not its admission.
        while (fallback_level := r.hget(fallback, "level")) is None and time.monotonic() - sent < 1.0:
            time.sleep(0.01)
        guessed_level = float(r.hget(guessed, "level") or 0)
        second = call.result()

    assert second.status_code == 200 and second.headers["x-gateway-deployment"] == "guess-slow@sim"
    assert fallback_level is not None and float(fallback_level) < 600  # the call is reserved on the fallback
    assert guessed_level >= before  # and the guess refunded: only its refill since, nothing held
    assert _settled_soon(r, second.headers["x-gateway-job-id"])
    breakers.reset("guess@sim")


def _settled_soon(r: redis.Redis, job_id: str, timeout: float = 5) -> bool:
    """The fallback's own reservation is settled by the attempt's last round trip, moments after the answer."""
    deadline = time.monotonic() + timeout
    while r.hexists(Keys(PREFIX).budget_reservations, f"{job_id}:1"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
