"""Relaying a streamed job to its caller as it is produced, in the caller's dialect (``shared.job_stream``).

One ``StreamHub`` per api process holds a ``Feed`` per stream its callers wait on. Entries reach it
two ways: from this process's own fast-lane attempt (in memory, ``threadsafe_relay``) or from a
worker, published on the process's reply channel and read by the one subscription that also carries
the completion signals (``api.waiter``). A feed is bounded: a caller reading slowly lets it overflow,
and then catches up from the job's stream in Redis (XRANGE), so no reader holds up another, and a
gap (a message lost with a reconnect) is filled the same way.

A worker killed mid-stream sends nothing more, and the job is only sent again once its attempt's
lease has expired. So the leases of begun streams that went quiet are looked at, all of them in one
round trip every 0.5 s (``StreamHub.watch``): an attempt whose process renews its lease is alive
however slowly the provider answers; one whose lease missed two heartbeats on two looks in a row is
gone, and its caller gets an error event within seconds instead of waiting for the recovery (the
job still runs again, is stored and billed once: ``GET /v1/jobs/{id}``).

``relay`` turns a job's entries into the caller's frames (``shared.stream_translate``): the provider's
own frames in the same dialect, translated across, each with an SSE ``id`` (its position in what
the caller was sent) so that ``GET /v1/jobs/{id}/stream`` with ``Last-Event-ID`` resumes where the
caller left (``replay``). A job that ends without streaming (a cache hit, a failure before its
first event, a recovered job) is answered as before: its stored result as events, or an error event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.delivery import error_event, raise_unless_succeeded
from shared.config import StreamingConfig
from shared.errors import GatewayError, GatewayTimeout, ProviderError
from shared.job_stream import Entry, caller_back, caller_left, entry_of, event_of
from shared.keys import Keys
from shared.responses_api import ChatToResponses
from shared.stream_translate import ChatRelay, ChatToMessages, MessagesToChat, Relay

log = logging.getLogger("gateway.api.streaming")

KEEPALIVE_S = 10.0
FOLLOW_EVERY_S = 0.05  # how often a resumed stream of a job still running looks for new entries
UNCLAIMED_S = 120.0  # a feed nobody opened (its caller went before its headers) is dropped after this
QUIET_S = 1.0  # a begun stream with no entry for this long has its producer looked at ...
PRODUCER_CHECK_S = 0.5  # ... this often, and is ended when two looks in a row find it gone
GONE_AFTER = 2
TERMINAL = ("succeeded", "failed", "cancelled", "expired")
View = dict[str, Any]
Replay = Callable[[View], Iterator[bytes]]


class Feed:
    """One stream's entries as they arrive, at most ``limit`` of them held (see the module docstring)."""

    def __init__(self, limit: int) -> None:
        self.entries: deque[Entry] = deque()
        self.limit = limit
        self.overflowed = False
        self.waiter: asyncio.Future[None] | None = None  # the relay, waiting for the next entry
        self.created = time.monotonic()
        self.claimed = False

    def put(self, entry: Entry) -> None:
        if len(self.entries) >= self.limit:
            self.overflowed = True
        else:
            self.entries.append(entry)
        self.poke()

    def poke(self) -> None:
        """Wake the relay (an entry came, or its job ended)."""
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until an entry comes or ``poke``, at most ``timeout`` (one future per wait: this runs per event)."""
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self.waiter
        except TimeoutError:
            pass
        finally:
            self.waiter = None

    def take(self) -> list[Entry]:
        entries = list(self.entries)
        self.entries.clear()
        return entries


class StreamHub:
    def __init__(self, redis_url: str, keys: Keys, config: StreamingConfig, lease_late_s: float) -> None:
        self.keys = keys
        self.config = config
        self.lease_late_ms = int(lease_late_s * 1000)
        self.watched: dict[str, int] = {}  # quiet begun streams: job id -> looks in a row that found it gone
        self._watcher: asyncio.Task[None] | None = None
        self.redis: aioredis.Redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        self.feeds: dict[str, Feed] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.Task[Any]] = set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        await self.redis.aclose()

    def feed(self, job_id: str) -> Feed:
        feed = self.feeds.get(job_id)
        if feed is None:
            if len(self.feeds) > 256:
                self._drop_unclaimed()
            feed = self.feeds[job_id] = Feed(self.config.buffer_frames)
        return feed

    def deliver(self, job_id: str, entry: Entry) -> None:
        """An entry for a stream of this process (on the event loop)."""
        self.feed(job_id).put(entry)

    def deliver_message(self, message: dict[str, Any]) -> None:
        """An entry a worker published on this process's channel: ``{"stream": job id, "j": entry}``."""
        job_id, entry = message.get("stream"), message.get("j")
        if isinstance(job_id, str) and isinstance(entry, dict):
            self.deliver(job_id, entry)

    def threadsafe_relay(self, job_id: str) -> Callable[[Entry], None]:
        """What this process's own attempt hands its entries to, from its thread."""
        loop = self.loop
        assert loop is not None

        def hand_over(entry: Entry) -> None:
            loop.call_soon_threadsafe(self.deliver, job_id, entry)
        return hand_over

    async def stored(self, job_id: str, after: str = "-") -> list[tuple[str, Entry]]:
        """The job's entries in Redis (after the record id ``after``), with their record ids."""
        start = "-" if after == "-" else "(" + after
        records: Any = await self.redis.xrange(self.keys.job_stream(job_id), min=start)
        return [(record_id, entry_of(fields)) for record_id, fields in records]

    def watch(self, job_id: str) -> bool:
        """Have this quiet begun stream's producer looked at (see the module docstring); True once it
        was found gone on ``GONE_AFTER`` looks in a row. The looks stop when the stream is ``heard``."""
        if job_id not in self.watched:
            self.watched[job_id] = 0
            if self._watcher is None or self._watcher.done():
                self._watcher = asyncio.ensure_future(self._look_while_watched())
        return self.watched[job_id] >= GONE_AFTER

    def heard(self, job_id: str) -> None:
        self.watched.pop(job_id, None)

    async def _look_while_watched(self) -> None:
        """Every ``PRODUCER_CHECK_S``, the leases of every watched stream in one round trip: gone, or with
        less left than a renewed one ever has (``lease_late_s``: its life less two heartbeats), counts."""
        while self.watched:
            await asyncio.sleep(PRODUCER_CHECK_S)
            job_ids = list(self.watched)
            try:
                pipe = self.redis.pipeline(transaction=False)
                for job_id in job_ids:
                    pipe.pttl(self.keys.lease(job_id))
                left = await pipe.execute()
            except Exception as exc:  # noqa: BLE001 - Redis away: nothing is concluded, the looks go on
                log.warning("could not look at %d streams' leases: %r", len(job_ids), exc)
                continue
            for job_id, left_ms in zip(job_ids, left, strict=True):
                if job_id in self.watched:
                    gone = left_ms == -2 or 0 <= left_ms < self.lease_late_ms
                    self.watched[job_id] = self.watched[job_id] + 1 if gone else 0
                    if self.watched[job_id] >= GONE_AFTER and job_id in self.feeds:
                        self.feeds[job_id].poke()

    def left(self, job_id: str) -> None:
        """The caller of a stream still running went away: its call ends after the grace unless it resumes."""
        self._later(self._pipe(lambda pipe: caller_left(pipe, self.keys, job_id, self.config.resume_grace_s)))

    async def back(self, job_id: str) -> None:
        await self._pipe(lambda pipe: caller_back(pipe, self.keys, job_id))

    def release(self, job_id: str) -> None:
        self.feeds.pop(job_id, None)
        self.watched.pop(job_id, None)

    async def _pipe(self, add: Callable[[Any], None]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        add(pipe)
        await pipe.execute()

    def _later(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not mark a stream's caller as gone: %r", task.exception())

    def _drop_unclaimed(self) -> None:
        now = time.monotonic()
        for job_id in [j for j, f in self.feeds.items() if not f.claimed and now - f.created > UNCLAIMED_S]:
            del self.feeds[job_id]


class Translation:
    """A job's entries as the caller's frames: the translator its start entry calls for (the caller's
    dialect is the job's, ``JobSpec.stream``), the frames numbered (the SSE ``id``), those the caller
    already has (up to ``after``) left out."""

    def __init__(self, dialect: str, after: int = -1, request: View | None = None) -> None:
        self.dialect = dialect
        self.after = after
        self.request = request  # a Responses call's request: its error before any event is ``response.failed``
        self.translator: Relay | None = None
        self.sent = -1  # the id of the last frame made
        self.next_seq = 0
        self.attempt: Any = None  # the attempt whose stream this is
        self.ended = False

    @property
    def began(self) -> bool:
        return self.next_seq > 0

    def frames(self, entry: Entry) -> list[bytes]:
        """The frames of one entry (none for one seen already)."""
        if self.ended:
            return []
        if self.began and writer_of(entry) != self.attempt:  # sent again after its process died
            self.ended = True
            return [self.error(ProviderError(
                "The call was interrupted and sent again; this stream cannot go on. The job's answer will be at "
                "GET /v1/jobs/{id}.", code="stream_interrupted"))]
        if entry.get("s", -1) != self.next_seq:
            return []
        self.next_seq += 1
        kind = entry.get("t")
        if kind == "start":
            self.attempt = writer_of(entry)
            self.dialect = (entry.get("relay") or {}).get("dialect") or self.dialect
            self.translator = translator_for(entry, self.dialect)
            return []
        if self.translator is None:
            return []
        if kind == "event":
            return self._numbered(self.translator.feed(event_of(entry)))
        self.ended = True
        if entry.get("status") == "done":
            return self._numbered(self.translator.close())
        error = entry.get("error") or {}
        return [self.error(ProviderError(
            f"The stream broke off: {error.get('message') or 'the provider failed'}; the answer is incomplete "
            "and was not retried.", code=f"provider_{error.get('type', 'error')}"))]

    def gap(self, entry: Entry) -> bool:
        return int(entry.get("s", -1)) > self.next_seq

    def error(self, exc: GatewayError) -> bytes:
        """An error event in the caller's dialect: the translator's own end when it has one (the Responses
        API's ``response.failed``), else the gateway's error event."""
        if self.translator is None and self.request is not None:
            self.translator = ChatToResponses(ChatRelay(False), self.request)
        failed = self.translator.fail(exc.code or exc.type, exc.message) if self.translator is not None else None
        if failed is not None:
            return b"".join(failed)
        return error_event("/v1/messages" if self.dialect == "anthropic" else "/v1/chat/completions", exc)

    def _numbered(self, frames: list[bytes]) -> list[bytes]:
        out = []
        for frame in frames:
            self.sent += 1
            if self.sent > self.after:
                out.append(b"id: %d\n" % self.sent + frame)
        return out


def writer_of(entry: Entry) -> tuple[Any, Any]:
    """Which attempt wrote an entry: its number, and its writer (recovery may send one again under the
    same number)."""
    return entry.get("a"), entry.get("w")


def translator_for(start: Entry, dialect: str) -> Relay:
    """The provider's events in the caller's dialect (``shared.stream_translate``; the Responses API's
    through chat, ``shared.responses_api.ChatToResponses``)."""
    relay = start.get("relay") or {}
    usage = bool(relay.get("usage"))
    from_anthropic = start.get("provider") == "anthropic"
    if dialect == "anthropic":
        return Relay() if from_anthropic else ChatToMessages(int(start.get("prompt_tokens") or 0))
    chat = MessagesToChat(usage) if from_anthropic else ChatRelay(usage)
    return ChatToResponses(chat, relay.get("response") or {}) if dialect == "responses" else chat


def dialect_of(path: str) -> str:
    if path.startswith("/v1/responses"):
        return "responses"
    return "anthropic" if path.startswith("/v1/messages") else "openai"


async def relay(hub: StreamHub, job_id: str, path: str, finish: asyncio.Task[tuple[Any, View | None]],
                replay: Replay, request: View | None = None) -> AsyncIterator[bytes]:
    """The caller's frames while its job runs (see the module docstring). A caller that goes away
    before the end is reported (``StreamHub.left``). ``request``: a Responses call's, so that one
    failing before its first event still ends as the Responses stream ends (``response.failed``)."""
    feed = hub.feed(job_id)
    feed.claimed = True
    finish.add_done_callback(lambda _: feed.poke())
    out = Translation(dialect_of(path), request=request)
    heard = spoke = time.monotonic()  # the last entry; the last thing sent to the caller
    try:
        while not out.ended:
            if feed.entries or feed.overflowed:
                for frame in await _take(hub, job_id, feed, out):
                    yield frame
                heard = spoke = time.monotonic()
                hub.heard(job_id)
                continue
            if finish.done():
                async for frame in _finished(hub, job_id, out, finish, replay):
                    yield frame
                return
            await feed.wait(PRODUCER_CHECK_S if out.began else KEEPALIVE_S)
            if feed.entries or feed.overflowed or finish.done():
                continue
            now = time.monotonic()
            if out.began and now - heard >= QUIET_S and hub.watch(job_id):
                for frame in await _interrupted(hub, job_id, out):
                    yield frame
                return
            if now - spoke >= KEEPALIVE_S or not out.began:
                spoke = now
                yield b": waiting for the answer\n\n"
    finally:
        hub.release(job_id)
        if not out.ended and not finish.done():
            hub.left(job_id)


async def _take(hub: StreamHub, job_id: str, feed: Feed, out: Translation) -> list[bytes]:
    entries = feed.take()
    if feed.overflowed or (entries and out.gap(entries[0])):
        feed.overflowed = False
        entries = [entry for _, entry in await hub.stored(job_id)]
    return [frame for entry in entries for frame in out.frames(entry)]


async def _interrupted(hub: StreamHub, job_id: str, out: Translation) -> list[bytes]:
    """The producer of a begun stream is gone: what it stored that the caller has not had, then (unless
    that was the end) an error event. The job is left to the recovery, which sends it again. Redis
    failing here (many streams ended at once) costs the stored tail, never the error event."""
    try:
        frames = [frame for _, entry in await hub.stored(job_id) for frame in out.frames(entry)]
    except (RedisError, OSError) as exc:
        log.warning("could not read the stream of job %s before ending it: %r", job_id, exc)
        frames = []
    if not out.ended:
        out.ended = True  # the caller was told: not a caller that left (the job goes on without one)
        frames.append(out.error(ProviderError(
            f"The call streaming this answer stopped (its worker is gone); the answer is incomplete. The job is "
            f"sent again and its answer will be at GET /v1/jobs/{job_id}.", code="stream_interrupted")))
    return frames


async def _finished(hub: StreamHub, job_id: str, out: Translation, finish: asyncio.Task[tuple[Any, View | None]],
                    replay: Replay) -> AsyncIterator[bytes]:
    """The job ended: the rest of its stream from Redis, or, when it never streamed, its stored answer."""
    if out.began:
        for _, entry in await hub.stored(job_id):
            for frame in out.frames(entry):
                yield frame
        if not out.ended:
            yield out.error(ProviderError(f"The stream broke off before its end; the stored job says how it ended "
                                          f"(GET /v1/jobs/{job_id}).", code="stream_incomplete"))
        return
    try:
        _, view = finish.result()
        result = raise_unless_succeeded(view, job_id)
    except GatewayError as exc:
        yield out.error(exc)
        return
    for frame in replay(result):
        yield frame


async def replay(hub: StreamHub, job_id: str, dialect: str, after: int, view_of: Callable[[], Any],
                 stored_replay: Callable[[str, View], Iterator[bytes]], wait_s: float) -> AsyncIterator[bytes]:
    """``GET /v1/jobs/{id}/stream``: the job's stream from after frame ``after``, followed while the job
    runs; once it is gone from Redis (or never was), the stored answer. ``view_of`` reads the job;
    ``stored_replay`` renders a stored result as the events of a dialect. A resumed reader that goes
    away before the end is reported like the first caller (``StreamHub.left``): the call goes on
    only while someone may come back for it."""
    await hub.back(job_id)
    finished = False
    try:
        async with contextlib.aclosing(_follow(hub, job_id, Translation(dialect, after), view_of, stored_replay,
                                               wait_s)) as frames:
            async for frame in frames:
                yield frame
        finished = True
    finally:
        if not finished:
            hub.left(job_id)


async def _follow(hub: StreamHub, job_id: str, out: Translation, view_of: Callable[[], Any],
                  stored_replay: Callable[[str, View], Iterator[bytes]], wait_s: float) -> AsyncGenerator[bytes]:
    last, deadline = "-", time.monotonic() + wait_s
    idle, ticks = 0.0, 0
    while not out.ended:
        records = await hub.stored(job_id, last)
        for record_id, entry in records:
            last = record_id
            for frame in out.frames(entry):
                yield frame
        if out.ended:
            return
        ticks += 1  # the store is read now and then: the stream says when it ends, a dead producer does not
        view = await view_of() if not records and (not out.began or ticks % 20 == 0) else None
        if view is not None and view.get("status") in TERMINAL:
            if not out.began:
                for frame in _stored(out, job_id, view, stored_replay):
                    yield frame
                return
            if not await hub.stored(job_id, last):
                yield out.error(ProviderError(f"The stream is no longer complete in the gateway; read the stored "
                                              f"job with GET /v1/jobs/{job_id}.", code="stream_incomplete"))
                return
        if time.monotonic() > deadline:
            yield out.error(GatewayTimeout(f"Job {job_id} did not finish within the wait limit; resume again later."))
            return
        idle = 0.0 if records else idle + FOLLOW_EVERY_S
        if idle >= KEEPALIVE_S:
            idle = 0.0
            yield b": waiting for the answer\n\n"
        await asyncio.sleep(FOLLOW_EVERY_S)


def _stored(out: Translation, job_id: str, view: View,
            stored_replay: Callable[[str, View], Iterator[bytes]]) -> Iterator[bytes]:
    try:
        result = raise_unless_succeeded(view, job_id)
    except GatewayError as exc:
        yield out.error(exc)
        return
    for n, frame in enumerate(stored_replay(out.dialect, result)):
        if n > out.after:
            yield b"id: %d\n" % n + frame
