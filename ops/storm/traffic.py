"""The callers: the copilot (Poisson, waits for its answer) and the summarizers' overnight backlog.

Two ways to send the same requests: ``DirectCaller`` is each feature calling the provider itself with
the retry loop most code has (tenacity, exponential backoff with jitter, 5 attempts, Retry-After
ignored); ``GatewayCaller`` goes through the gateway (sync chat completions for the copilot, async
``POST /v1/jobs/batch`` for the backlog, whose outcome is read from the result store afterwards; or,
``via="batches"``, the Batch API: a JSONL file uploaded, a batch created and followed to its end).
A share of the copilot's calls (``Scenario.copilot_stream_share``) asks for ``stream: true`` and is
read as it streams (``ops.storm.streamed``): success is the dialect's last event, not an error event.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from ops.storm.scenario import COPILOT, SUMMARIZER, Scenario
from ops.storm.stack import direct_key
from ops.storm.streamed import stream

ATTEMPTS = 5
COPILOT_TIMEOUT_S = 60.0
BULK_SIZE = 250  # jobs per POST /v1/jobs/batch while a summarizer dumps its backlog
BULK_CONCURRENCY = 2  # each summarizer's parallel batch requests
BATCH_POLL_S = 1.0  # how often a summarizer on the Batch API retrieves its batch
BATCH_ENDED = ("completed", "failed", "expired", "cancelled")


@dataclass
class Call:
    """One request as its caller saw it (copilot), or one backlog job (summarizer)."""

    feature: str
    tenant: str
    sent: float
    charged: int
    done: float | None = None
    ok: bool = False
    status: int = 0
    attempts: int = 0
    accepted: float | None = None  # when the provider accepted the attempt that succeeded
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    job_id: str | None = None  # the gateway's job, to read where its time went from the store
    estimated_in: int | None = None  # the gateway's input estimate when it accepted the job (backlog jobs)
    phases: dict[str, float] | None = None  # seconds in each step of the gateway path
    error: str | None = None  # why it failed: the gateway's error code, or the transport error's name
    dropped: float | None = None  # when its connection dropped mid-call (it was then asked again)
    streamed: bool = False  # asked with ``stream: true``; ``done`` is then when its last event came
    first_content: float | None = None  # a streamed call: when its first content delta came

    @property
    def latency_s(self) -> float | None:
        return None if self.done is None else self.done - self.sent


class Retryable(Exception):
    """A 429 or 5xx from the provider: the naive client backs off and tries again."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _limits(n: int) -> httpx.Limits:
    return httpx.Limits(max_connections=n, max_keepalive_connections=n)


class DirectCaller:
    """The world before the gateway: every feature holds the provider key and retries on its own."""

    def __init__(self, scenario: Scenario, sim_url: str) -> None:
        self.scenario = scenario
        pool = scenario.direct_concurrency * (1 + scenario.rival_tenants) + 200
        self.client = httpx.AsyncClient(base_url=f"{sim_url}/v1", timeout=COPILOT_TIMEOUT_S, limits=_limits(pool))
        self.pending_batch = 0

    async def copilot(self, call: Call, body: dict[str, Any]) -> None:
        await self._call(call, body)

    async def backlog(self, tenant: str, jobs: list[tuple[Call, dict[str, Any]]]) -> None:
        """Send the whole backlog through the feature's own pool of connections, each job retried."""
        self.pending_batch += len(jobs)
        sem = asyncio.Semaphore(self.scenario.direct_concurrency)

        async def one(call: Call, body: dict[str, Any]) -> None:
            async with sem:
                await self._call(call, body)
                self.pending_batch -= 1

        await asyncio.gather(*(one(c, b) for c, b in jobs))

    async def _call(self, call: Call, body: dict[str, Any]) -> None:
        headers = {"Authorization": f"Bearer {direct_key(call.tenant)}"}
        retrying = AsyncRetrying(stop=stop_after_attempt(ATTEMPTS), wait=wait_random_exponential(multiplier=1, max=60),
                                 retry=retry_if_exception_type((Retryable, httpx.TransportError)))
        try:
            async for attempt in retrying:
                with attempt:
                    call.attempts += 1
                    started = time.time()
                    call.status, usage = await self._once(call, body, headers)
                    if call.status == 429 or call.status >= 500:
                        raise Retryable(call.status)
        except RetryError:
            call.done = time.time()
            return
        call.done, call.accepted = time.time(), started
        call.ok = call.status == 200
        call.tokens_in, call.tokens_out = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)

    async def _once(self, call: Call, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """One try: the status (a stream that broke off counts as a 502) and the usage."""
        if call.streamed:
            got = await stream(self.client, "/chat/completions", body, headers)
            call.first_content = got.first_content
            return (502 if got.status == 200 and got.ended != "done" else got.status), got.usage or {}
        response = await self.client.post("/chat/completions", json=body, headers=headers)
        return response.status_code, response.json().get("usage", {}) if response.status_code == 200 else {}

    async def close(self) -> None:
        await self.client.aclose()


class GatewayCaller:
    """The same features through the gateway: one API key per tenant, tags say feature and priority."""

    def __init__(self, api_url: str, keys: dict[str, str], via: str = "jobs") -> None:
        self.keys = keys
        self.via = via  # the backlog's way in: "jobs" (POST /v1/jobs/batch) or "batches" (the Batch API)
        self.client = httpx.AsyncClient(base_url=api_url, timeout=COPILOT_TIMEOUT_S + 5, limits=_limits(400))
        self.submitted: list[str] = []  # job ids of the backlog the gateway accepted
        self.refused = 0  # backlog jobs the gateway shed at submit (429)

    def _auth(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    async def copilot(self, call: Call, body: dict[str, Any]) -> None:
        call.attempts = 1
        headers = {**self._auth(call.tenant), "x-gateway-feature": COPILOT}
        if call.streamed:
            await self._streamed(call, body, headers)
            return
        try:
            response = await self.client.post("/v1/chat/completions", json=body, headers=headers)
        except httpx.HTTPError:
            call.done = time.time()
            return
        call.done, call.status = time.time(), response.status_code
        call.ok = response.status_code == 200
        call.job_id = response.headers.get("x-gateway-job-id")
        if call.ok:
            usage = response.json().get("usage", {})
            call.tokens_in, call.tokens_out = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)

    async def _streamed(self, call: Call, body: dict[str, Any], headers: dict[str, str]) -> None:
        try:
            got = await stream(self.client, "/v1/chat/completions", body, headers)
        except httpx.HTTPError as exc:
            call.done, call.error = time.time(), type(exc).__name__
            return
        call.done, call.status, call.job_id, call.first_content = time.time(), got.status, got.job_id, got.first_content
        call.ok = got.ended == "done"
        usage = got.usage or {}
        call.tokens_in, call.tokens_out = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        if not call.ok:
            call.error = str((got.error or {}).get("code") or (got.error or {}).get("type") or got.ended or "cut off")

    async def backlog(self, tenant: str, jobs: list[tuple[Call, dict[str, Any]]]) -> None:
        """Dump the backlog as async jobs in bulk (POST /v1/jobs/batch, as a batch caller would), or
        as one Batch API file; what happened to each is read from the store afterwards."""
        if self.via == "batches":
            await self._batch_file(tenant, [body for _, body in jobs])
            return
        sem = asyncio.Semaphore(BULK_CONCURRENCY)
        bodies = [{**body, "feature": SUMMARIZER, "priority": "batch"} for _, body in jobs]

        async def chunk(part: list[dict[str, Any]]) -> None:
            async with sem:
                response = await self.client.post("/v1/jobs/batch", json={"jobs": part}, headers=self._auth(tenant))
                if response.status_code == 202:
                    self.submitted.extend(view["id"] for view in response.json()["data"])
                else:
                    self.refused += len(part)

        await asyncio.gather(*(chunk(bodies[i:i + BULK_SIZE]) for i in range(0, len(bodies), BULK_SIZE)))

    async def _batch_file(self, tenant: str, bodies: list[dict[str, Any]]) -> None:
        """The official flow over plain HTTP: upload the JSONL, create the batch, retrieve it until it
        ends, read its output file; the job ids in the output are the lines that ran."""
        lines = b"".join(orjson.dumps({"custom_id": f"{tenant}-{i}", "method": "POST", "url": "/v1/chat/completions",
                                       "body": {**body, "metadata": {"feature": SUMMARIZER}}}) + b"\n"
                         for i, body in enumerate(bodies))
        upload = await self.client.post("/v1/files", headers=self._auth(tenant), data={"purpose": "batch"},
                                        files={"file": (f"{tenant}.jsonl", lines, "application/jsonl")})
        upload.raise_for_status()
        created = await self.client.post("/v1/batches", headers=self._auth(tenant), json={
            "input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"})
        created.raise_for_status()
        batch = created.json()
        while batch["status"] not in BATCH_ENDED:
            await asyncio.sleep(BATCH_POLL_S)
            polled = await self.client.get(f"/v1/batches/{batch['id']}", headers=self._auth(tenant))
            polled.raise_for_status()
            batch = polled.json()
        for file_id in (batch["output_file_id"], batch["error_file_id"]):
            records = [orjson.loads(line) for line in await self._content(tenant, file_id)]
            self.submitted += [r["response"]["request_id"] for r in records if r["response"]["request_id"]]
            self.refused += sum(1 for r in records if not r["response"]["request_id"])  # refused at submit

    async def _content(self, tenant: str, file_id: str | None) -> list[bytes]:
        if not file_id:
            return []
        response = await self.client.get(f"/v1/files/{file_id}/content", headers=self._auth(tenant))
        response.raise_for_status()
        return response.content.splitlines()

    async def close(self) -> None:
        await self.client.aclose()


Caller = DirectCaller | GatewayCaller


async def copilot_traffic(scenario: Scenario, caller: Caller, calls: list[Call], stop: asyncio.Event) -> None:
    """Poisson arrivals over all tenants until ``stop``; each call waits for its answer. Which calls stream
    is drawn apart, so the arrivals and requests are the same whatever the share."""
    rng, streams = random.Random(scenario.seed), random.Random(f"{scenario.seed}:stream")
    tasks: set[asyncio.Task[None]] = set()
    i = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=rng.expovariate(scenario.copilot_rate))
        if stop.is_set():
            break
        tenant = rng.choice(scenario.tenant_ids)
        body = scenario.copilot_request(tenant, i)
        call = Call(COPILOT, tenant, time.time(), scenario.charged(body),
                    streamed=streams.random() < scenario.copilot_stream_share)
        if call.streamed:
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        calls.append(call)
        task = asyncio.create_task(caller.copilot(call, body))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=COPILOT_TIMEOUT_S)
        for task in late:
            task.cancel()


def backlog_jobs(scenario: Scenario, tenant: str, n: int, sent: float) -> list[tuple[Call, dict[str, Any]]]:
    out = []
    for i in range(n):
        body = scenario.summary_request(tenant, i)
        out.append((Call(SUMMARIZER, tenant, sent, scenario.charged(body)), body))
    return out
