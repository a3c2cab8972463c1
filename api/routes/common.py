"""Pieces the chat, messages and jobs routes share: tags from headers, submit-and-wait."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
from fastapi import Header, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from api.accept import Submitted
from api.auth import Caller
from api.deps import submitter
from api.gateway import Gateway
from api.metrics import FAST_LANE_SENT, SHED, SUBMITTED, SYNC_WAIT
from api.streaming import StreamHub
from api.waiter import CompletionWaiter
from shared import tracing
from shared.errors import InvalidRequest, Overloaded, echo
from shared.lanes import LANE_NAMES, Lane
from shared.schemas import JobTags, Submittable

log = logging.getLogger("gateway.api")
TERMINAL = {"succeeded", "failed", "cancelled", "expired"}

# Submitting takes a thread (SQL write, Redis). Interactive submits get threads of their own, so a
# batch dump of thousands of jobs queues behind its own few threads, never in front of a live call.
# A fast-lane job the api sends itself keeps its thread for the call: those slots come on top
# (``size_submit_threads``), so slow providers never starve the submits.
SUBMIT_THREADS = 32
_INTERACTIVE = anyio.CapacityLimiter(SUBMIT_THREADS)
_BULK = anyio.CapacityLimiter(8)
STORE_CHECK_S = 5.0
RESPONSE_FIRST_S = 0.1  # the longest an answered submit waits for its response to go out


# The tag headers, as the document shows them; ``tags_from`` checks them (a 400 that names the header).
FeatureHeader = Annotated[str | None, Header(
    description="the feature the call is for (default `default`)",
    json_schema_extra={"pattern": r"^[A-Za-z0-9_.:-]+$", "maxLength": 64})]
PriorityHeader = Annotated[str | None, Header(
    description="the lane: interactive (default here), standard or batch",
    json_schema_extra={"enum": list(LANE_NAMES)})]
TaskHeader = Annotated[str | None, Header(
    description="what the call is for (classify, extract, summarize, chat, code, reason ...): with model `auto`, "
                "the route it takes",
    json_schema_extra={"maxLength": 64})]
CacheControlHeader = Annotated[str | None, Header(
    description="`no-cache`: a fresh answer (then stored); `no-store`: the cache is not used at all",
    json_schema_extra={"maxLength": 256})]
IdempotencyHeader = Annotated[str | None, Header(
    description="returns the job this key made in the last 24 h instead of a new one",
    json_schema_extra={"minLength": 1, "maxLength": 255})]


_HEADERS = {"feature": "X-Gateway-Feature", "priority": "X-Gateway-Priority", "task": "X-Gateway-Task",
            "idempotency_key": "Idempotency-Key"}


def size_submit_threads(gw: Gateway) -> None:
    _INTERACTIVE.total_tokens = SUBMIT_THREADS + gw.settings.api.fast_lane_attempts


def cache_mode(cache_control: str | None) -> Literal["no-store", "no-cache"] | None:
    """What ``Cache-Control`` asks of the cache: ``no-store`` wins over ``no-cache``; other directives
    (``max-age``, ...) are not the gateway's to honour and leave the cache as it is."""
    directives = {part.split("=", 1)[0].strip().lower() for part in (cache_control or "").split(",")}
    if "no-store" in directives:
        return "no-store"
    return "no-cache" if "no-cache" in directives else None


def tags_from(*, feature: str | None, priority: str | None, idempotency_key: str | None,
              metadata: dict[str, str] | None, task: str | None = None, cache_control: str | None = None) -> JobTags:
    """Tags for the compatible routes: headers first, then ``metadata``. No priority means the
    route's default (``Gateway.lane_for``)."""
    meta = metadata or {}
    raw = {
        "feature": feature or meta.get("feature") or "default",
        "priority": priority or meta.get("priority"),
        "task": task or meta.get("task"),
        "idempotency_key": idempotency_key or meta.get("idempotency_key"),
        "cache": cache_mode(cache_control),
    }
    try:
        return JobTags(**{k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err.get("loc") else "tags"
        raise InvalidRequest(
            f"Invalid {field} {echo(raw.get(field))} (from the {_HEADERS.get(field, field)} header or "
            f"metadata.{field}): {err['msg']}. Priority is one of interactive, standard, batch.",
            param=field,
        ) from exc


Finished = tuple[Submitted, dict[str, Any] | None]


@dataclass(frozen=True)
class Submit:
    """What a compatible submit route (chat, messages, embeddings, completions, responses) needs besides its
    body: the caller, the app's parts and the tag headers (``api.openapi.submit_doc`` documents them)."""

    caller: Caller
    gw: Gateway
    waiter: CompletionWaiter
    streams: StreamHub
    headers: Headers

    def tags(self, metadata: dict[str, str] | None = None) -> JobTags:
        header = self.headers.get
        return tags_from(feature=header("x-gateway-feature"), priority=header("x-gateway-priority"),
                         idempotency_key=header("idempotency-key"), metadata=metadata, task=header("x-gateway-task"),
                         cache_control=header("cache-control"))

    async def and_wait(self, body: Submittable, tags: JobTags) -> Finished:
        """Submit and wait for the job's end, as long as a sync caller may (``api.max_sync_wait_s``)."""
        return await submit_and_wait(self.gw, self.waiter, self.caller, body, tags,
                                     self.gw.settings.api.max_sync_wait_s, default_lane=Lane.INTERACTIVE)

    async def early(self, body: Submittable, tags: JobTags) -> tuple[dict[str, Any], asyncio.Task[Finished]]:
        """``submit_early`` for an answer that streams."""
        return await submit_early(self.gw, self.waiter, self.caller, body, tags,
                                  self.gw.settings.api.max_sync_wait_s, Lane.INTERACTIVE)


async def submit_of(request: Request) -> Submit:
    """The route's ``Submit``, the key checked before the body is read. Read here rather than declared as
    FastAPI dependencies and headers: solving those (a caller, three objects, five headers) took ~1 ms
    of CPU per call, a sixth of what the api spent on a fast-lane call."""
    state = request.app.state
    return Submit(await submitter(request), state.gateway, state.waiter, state.streams, request.headers)


async def submit_and_wait(gw: Gateway, waiter: CompletionWaiter, caller: Caller, chat: Submittable,
                          tags: JobTags, wait_s: float | None, default_lane: Lane,
                          stored: asyncio.Future[dict[str, Any]] | None = None) -> Finished:
    """Submit; when ``wait_s`` is given, wait for the job to finish. Returns the final view or None.
    The lane is decided first, so an interactive job takes the interactive threads and nothing else does.
    ``stored`` is given the job's view as soon as it is in the store (see ``submit_early``)."""
    reply_to = waiter.channel if wait_s else None
    started = time.monotonic()
    try:
        lane = gw.lane_for(caller, tags, default_lane, chat.model)
        limiter = _INTERACTIVE if lane == Lane.INTERACTIVE else _BULK
        submitted = await _submit(gw, limiter, caller, chat, tags, lane, reply_to, stored)
    except Overloaded as exc:
        SHED.labels(reason=exc.code or "overloaded").inc()
        raise
    view = submitted.view
    fast = submitted.sent_by_api or view.get("status") == "admitted"
    SUBMITTED.labels(lane=view.get("priority", ""), admitted_inline=str(fast)).inc()
    if fast:
        FAST_LANE_SENT.labels(by="api" if submitted.sent_by_api else "worker").inc()
    try:
        with tracing.span("delivery", parent=submitted.trace, job=view.get("id"), waited=bool(wait_s)):
            return submitted, await _wait(gw, waiter, submitted, wait_s)
    finally:
        if wait_s:
            SYNC_WAIT.observe(time.monotonic() - started)


_FINISHING: set[asyncio.Future[Any]] = set()  # submits that answered early and still run their last step


async def submit_early(gw: Gateway, waiter: CompletionWaiter, caller: Caller, chat: Submittable, tags: JobTags,
                       wait_s: float, default_lane: Lane) -> tuple[dict[str, Any], asyncio.Task[Finished]]:
    """For an answer that begins before the job ends (a stream, a sync wait on /v1/jobs): returns the job
    as soon as it is stored, so its id goes out in the answer's headers at once (a caller whose
    connection drops can still find its job), with the rest of ``submit_and_wait`` as a task. What
    refuses the job before it is stored (a 4xx, a 429) is raised here, as a plain error answer."""
    stored: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    finish = asyncio.create_task(submit_and_wait(gw, waiter, caller, chat, tags, wait_s, default_lane, stored))
    await asyncio.wait((stored, finish), return_when=asyncio.FIRST_COMPLETED)
    _FINISHING.add(finish)  # kept (and its errors logged) even when the caller goes away
    finish.add_done_callback(_finished)
    if stored.done():
        return stored.result(), finish
    return finish.result()[0].view, finish  # refused before it was stored: raises


async def _submit(gw: Gateway, limiter: anyio.CapacityLimiter, caller: Caller, chat: Submittable, tags: JobTags,
                  lane: Lane, reply_to: str | None, stored: asyncio.Future[dict[str, Any]] | None = None) -> Submitted:
    """``gw.accept.submit`` on a thread. It returns as soon as the submit has answered: a job the api sends
    itself answers once its attempt is recorded, and the thread then ends the attempt (budget,
    breaker, lease) once the response is out. Until then it waits: its Python work would hold the
    GIL while this thread writes the response."""
    loop = asyncio.get_running_loop()
    early: asyncio.Future[Submitted] = loop.create_future()
    responded = threading.Event()

    def answer(submitted: Submitted) -> None:
        loop.call_soon_threadsafe(_resolve, early, submitted)
        responded.wait(RESPONSE_FIRST_S)

    def on_stored(view: dict[str, Any]) -> None:
        if stored is not None:
            loop.call_soon_threadsafe(_resolve, stored, view)

    work = asyncio.ensure_future(anyio.to_thread.run_sync(gw.accept.submit, caller, chat, tags, lane, reply_to, answer,
                                                          on_stored, limiter=limiter))
    try:
        await asyncio.wait((early, work), return_when=asyncio.FIRST_COMPLETED)
    finally:  # answered early, or the caller went away: the thread runs on, watched from here
        if not work.done():
            _FINISHING.add(work)
            work.add_done_callback(_finished)
        # Runs when this task next yields: its response written, or its wait for a retry begun.
        loop.call_soon(responded.set)
    if early.done():
        return early.result()
    early.cancel()
    return work.result()


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _finished(work: asyncio.Future[Any]) -> None:
    _FINISHING.discard(work)
    if not work.cancelled() and work.exception() is not None:  # submit logs its own failures; belt and braces
        log.error("a submit failed after answering: %r", work.exception())


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
        # recovery re-queued (its new dispatch knows no waiter) or a signal lost with Redis.
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
