"""Pieces the chat, messages and jobs routes share: tags from headers, submit-and-wait."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio
import anyio.to_thread
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.metrics import SHED, SUBMITTED, SYNC_WAIT
from api.service import Gateway, Submitted
from api.waiter import CompletionWaiter
from shared.errors import InvalidRequest, Overloaded
from shared.schemas import ChatRequest, JobTags

TERMINAL = {"succeeded", "failed", "cancelled", "expired"}

# Submitting takes a thread (SQL write, Redis). Interactive submits get threads of their own, so a
# batch dump of thousands of jobs queues behind its own few threads, never in front of a live call.
_INTERACTIVE = anyio.CapacityLimiter(32)
_BULK = anyio.CapacityLimiter(8)
STORE_CHECK_S = 5.0


def tags_from(*, feature: str | None, priority: str | None, idempotency_key: str | None,
              metadata: dict[str, str] | None, default_priority: str) -> JobTags:
    """Tags for the compatible routes: headers first, then ``metadata``, then the route's default."""
    meta = metadata or {}
    raw = {
        "feature": feature or meta.get("feature") or "default",
        "priority": priority or meta.get("priority") or default_priority,
        "idempotency_key": idempotency_key or meta.get("idempotency_key"),
    }
    try:
        return JobTags(**{k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err.get("loc") else "tags"
        raise InvalidRequest(
            f"Invalid {field} {raw.get(field)!r} (from the X-Gateway-{field.title()} header or "
            f"metadata.{field}): {err['msg']}. Priority is one of interactive, standard, batch.",
            param=field,
        ) from exc


async def submit_and_wait(gw: Gateway, waiter: CompletionWaiter, api_key: str, chat: ChatRequest,
                          tags: JobTags, wait_s: float | None) -> tuple[Submitted, dict[str, Any] | None]:
    """Submit; when ``wait_s`` is given, wait for the job to finish. Returns the final view or None."""
    reply_to = waiter.channel if wait_s else None
    started = time.monotonic()
    limiter = _INTERACTIVE if (tags.priority or "interactive") == "interactive" else _BULK
    try:
        submitted = await anyio.to_thread.run_sync(gw.submit, api_key, chat, tags, reply_to, limiter=limiter)
    except Overloaded as exc:
        SHED.labels(reason=exc.code or "overloaded").inc()
        raise
    view = submitted.view
    SUBMITTED.labels(lane=view.get("priority", ""), admitted_inline=str(view.get("status") == "admitted")).inc()
    try:
        return submitted, await _wait(gw, waiter, submitted, wait_s)
    finally:
        if wait_s:
            SYNC_WAIT.observe(time.monotonic() - started)


async def _wait(gw: Gateway, waiter: CompletionWaiter, submitted: Submitted,
                wait_s: float | None) -> dict[str, Any] | None:
    view = submitted.view
    if not wait_s or view.get("status") in TERMINAL:
        return view if view.get("status") in TERMINAL else None
    if not submitted.created:  # a repeat: its completion is announced to the first caller
        return await _poll_store(gw, view["id"], wait_s)
    deadline = time.monotonic() + wait_s
    while True:
        # Woken by the completion signal; between slices the store has the last word, for a job
        # the reconciler re-queued (its new dispatch knows no waiter) or a signal lost with Redis.
        done = await waiter.wait(view["id"], min(STORE_CHECK_S, max(0.0, deadline - time.monotonic())))
        if done is None:
            done = await _poll_store(gw, view["id"], 0)
        if done is not None or time.monotonic() >= deadline:
            return done


async def _poll_store(gw: Gateway, job_id: str, wait_s: float, every_s: float = 0.25) -> dict[str, Any] | None:
    """Read the job from the store until it is final or ``wait_s`` has passed (at least once)."""
    deadline = time.monotonic() + wait_s
    while True:
        latest = await run_in_threadpool(gw.view_any, job_id)
        if latest and latest.get("status") in TERMINAL:
            return latest
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(every_s)
