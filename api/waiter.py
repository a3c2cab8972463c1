"""Sync waits: one Redis subscription per api process wakes every waiting request.

Each api process listens on its own channel; a job submitted by a waiting caller carries that
channel as ``reply_to`` and the worker publishes the finished job there. A completion that arrives
before its waiter registered (a fast provider) is kept briefly, so no wake-up is ever missed.

The same subscription carries the entries of jobs a worker streams to a caller here (``api.streaming``).

Callers long-polling jobs they did not submit here (``GET /v1/jobs/{id}?wait=``, ``GET /v1/jobs?ids=
&wait=``) are woken by their tenant's end announcements (``shared.signals.announce_end``): the same
subscription listens to a tenant's channel while someone here waits on that tenant's jobs. The caller
reads the store again when woken, and every few seconds in any case (an announcement is not kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis

from shared.redis_conn import async_redis

log = logging.getLogger("gateway.api.waiter")

EARLY_KEEP_S = 120.0


class CompletionWaiter:
    def __init__(self, redis_url: str, channel_for: Any, tenant_channel: Any = None) -> None:
        self.instance = uuid.uuid4().hex[:12]
        self.channel = channel_for(self.instance)
        self._url = redis_url
        self._futures: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._early: dict[str, tuple[float, dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._tenant_channel = tenant_channel
        self._watchers: dict[str, set[asyncio.Future[None]]] = {}  # job id -> long-polls waiting on it
        self._tenants: Counter[str] = Counter()  # tenant channels subscribed, by how many long-polls
        self._pubsub: Any = None
        self.on_stream: Callable[[dict[str, Any]], None] | None = None  # a streamed job's entries (``api.streaming``)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="completion-waiter")
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def wait(self, job_id: str, timeout: float) -> dict[str, Any] | None:
        """The finished job's view, or None if it did not finish within ``timeout`` seconds."""
        early = self._early.pop(job_id, None)
        if early:
            return early[1]
        fut = self._futures.get(job_id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._futures[job_id] = fut
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return None
        finally:
            if fut.done() or fut.cancelled() or self._futures.get(job_id) is not fut:
                self._futures.pop(job_id, None)

    async def any_ended(self, tenant: str, job_ids: set[str], timeout: float) -> bool:
        """True as soon as one of the tenant's ``job_ids`` announces its end, False after ``timeout``."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for job_id in job_ids:
            self._watchers.setdefault(job_id, set()).add(fut)
        channel = self._tenant_channel(tenant)
        self._tenants[channel] += 1
        try:
            if self._tenants[channel] == 1 and self._pubsub is not None:
                await self._pubsub.subscribe(channel)
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            for job_id in job_ids:
                watching = self._watchers.get(job_id)
                if watching is not None:
                    watching.discard(fut)
                    if not watching:
                        del self._watchers[job_id]
            self._tenants[channel] -= 1
            if self._tenants[channel] <= 0:
                del self._tenants[channel]
                if self._pubsub is not None:
                    with contextlib.suppress(Exception):  # reconnects subscribe only what is still wanted
                        await self._pubsub.unsubscribe(channel)

    def _ended(self, job_id: Any) -> None:
        for fut in self._watchers.pop(job_id, set()) if isinstance(job_id, str) else ():
            if not fut.done():
                fut.set_result(None)

    @property
    def waiting(self) -> int:
        return len(self._futures)

    def _deliver(self, view: dict[str, Any]) -> None:
        job_id = view.get("id")
        if not isinstance(job_id, str):
            return
        fut = self._futures.pop(job_id, None)
        if fut is not None and not fut.done():
            fut.set_result(view)
            return
        now = time.monotonic()
        self._early[job_id] = (now, view)
        if len(self._early) > 1000:
            self._early = {k: v for k, v in self._early.items() if now - v[0] < EARLY_KEEP_S}

    def _on_own_channel(self, data: dict[str, Any]) -> None:
        """A finished job's view, or an entry of a job streamed to a caller here (``{"stream": id, ...}``)."""
        if "stream" not in data:
            self._deliver(data)
        elif self.on_stream is not None:
            self.on_stream(data)

    async def _listen_forever(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection loss: resubscribe with backoff
                self._ready.clear()
                log.warning("completion subscription lost (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _listen(self) -> None:
        client: aioredis.Redis = async_redis(self._url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel, *self._tenants)
            self._pubsub = pubsub
            self._ready.set()
            while True:
                msg = await pubsub.get_message(timeout=30.0)
                if not msg or msg.get("type") != "message":
                    continue
                if msg.get("channel") == self.channel:
                    self._on_own_channel(orjson.loads(msg["data"]))
                else:
                    self._ended(orjson.loads(msg["data"]).get("id"))
        finally:
            self._pubsub = None
            await pubsub.aclose()
            await client.aclose()
