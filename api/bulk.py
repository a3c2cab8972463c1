"""Accepting a batch (``POST /v1/jobs/batch``): all or nothing, every job queued for the scheduler.

A bulk submit pays per batch what a submit pays per job: two Redis round trips before, one SQL
transaction (one SELECT of the idempotency keys, one executemany INSERT) and one Redis pipeline
after; per item only the token estimate and the envelope are built.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis

from api.auth import Caller
from shared.admission import QueueState
from shared.cache.plan import plan_for
from shared.db import jobs
from shared.db.session import session_scope
from shared.envelope import Envelope
from shared.errors import GatewayError, InvalidRequest, Overloaded, PermissionDenied, Unavailable, echo
from shared.lanes import Lane
from shared.routing import chain_for
from shared.schemas import JobRequest

if TYPE_CHECKING:
    from api.gateway import Gateway

log = logging.getLogger("gateway.api")


@dataclass
class BatchSubmitted:
    views: list[dict[str, Any]]  # in the order of the batch's items
    created: int  # how many of them are new (the rest repeat an idempotency key)


class BulkAcceptor:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def submit_many(self, caller: Caller, items: Sequence[JobRequest]) -> BatchSubmitted:
        """Accept a batch all or nothing: every item is checked, and the batch shed as a whole, before
        anything is written. Every new job is queued for the scheduler, even an interactive one."""
        _refuse_repeated_keys(items)
        tenant = caller.tenant
        envs = [self._bulk_envelope(caller, index, item) for index, item in enumerate(items)]
        self._shed_batch(tenant, envs, self._queue_states(tenant, {env.lane for env in envs}))
        key_id = caller.identity.key_id if caller.identity else None
        rows = [jobs.NewJob(env.id, env.feature, env.lane, item.task, env.model, env.request,
                            datetime.fromtimestamp(env.deadline, UTC), item.idempotency_key, env.tokens, key_id,
                            cache_status="bypass")
                for env, item in zip(envs, items, strict=True)]
        with session_scope(self.gw.engine) as db:
            results = jobs.create_jobs(db, tenant, rows)
        created = [env for env, (_, new) in zip(envs, results, strict=True) if new]
        enqueued_at = time.time()
        for env in created:
            env.enqueued_at = enqueued_at
        self._hand_off_many(created)
        return BatchSubmitted([view for view, _ in results], len(created))

    def _bulk_envelope(self, caller: Caller, index: int, item: JobRequest) -> Envelope:
        """The item's envelope with its estimate (``prepare``, once); errors name the item. A batch does not
        read the cache (it stays one SQL transaction and one pipeline, every job queued), but the
        answers its jobs get are stored for the calls after it (``cache`` in the envelope)."""
        try:
            tags = item.tags()
            lane = self.gw.lane_for(caller, tags, Lane.STANDARD)
            payload = item.payload()
            plan = plan_for(self.gw.settings, caller.tenant, tags.feature, item.model,
                            chain_for(self.gw.settings, item.model), payload, tags.cache)
            env = self.gw.envelope(caller.tenant, tags.feature, lane, item.model, payload, tags.deadline_at,
                                   cache=plan.fill())
            self.gw.admitter.prepare(env)
        except (InvalidRequest, Overloaded, PermissionDenied) as exc:
            raise _for_item(index, exc) from exc
        return env

    def _queue_states(self, tenant: str, lanes: Iterable[str]) -> dict[str, QueueState]:
        """The tenant's queues in each of ``lanes``, read in one round trip."""
        spans = []
        try:
            with self.gw.redis.pipeline(transaction=False) as pipe:
                for lane in lanes:
                    start = len(pipe)
                    QueueState.queue_reads(pipe, self.gw.keys, lane, tenant)
                    spans.append((lane, start, len(pipe)))
                replies = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise Unavailable("The gateway's queue (Redis) is unavailable; the jobs were not accepted. "
                              "Retry shortly.") from exc
        return {lane: QueueState.parse(replies[start:end]) for lane, start, end in spans}

    def _shed_batch(self, tenant: str, envs: list[Envelope], queues: dict[str, QueueState]) -> None:
        """429 for the whole batch unless all of it fits: the tenant's queue cap counts every job of
        the batch, and each job must start before its deadline behind the work ahead of it there,
        the batch's own jobs included (its earlier jobs in the lane, all of it in lanes above)."""
        if not self.gw.settings.admission.enabled:
            return
        per_lane = Counter(env.lane for env in envs)
        for lane, count in per_lane.items():
            self._check_room(tenant, lane, count, queues[lane], next(e for e in envs if e.lane == lane))
        batch_tokens: Counter[str] = Counter()
        for env in envs:
            batch_tokens[env.lane] += env.tokens
        earlier: Counter[str] = Counter()
        for index, env in enumerate(envs):
            above = sum(batch_tokens[lane] for lane in Lane(env.lane).and_above() if lane != env.lane)
            state = queues[env.lane]
            ahead = QueueState(state.interactive_waiting, state.depth, state.tokens_ahead + above + earlier[env.lane])
            try:
                self.gw.admitter.check_queue(env, ahead)
            except Overloaded as exc:
                raise _for_item(index, exc) from exc
            earlier[env.lane] += env.tokens

    def _check_room(self, tenant: str, lane: str, count: int, state: QueueState, sample: Envelope) -> None:
        """``check_queue``'s queue cap for ``count`` jobs at once (its Retry-After, too)."""
        cap = self.gw.settings.lanes[lane].max_queue_per_tenant  # type: ignore[index]
        if state.depth + count <= cap:
            return
        rate = self.gw.admitter.token_rate(sample)
        retry_after = max(1.0, state.tokens_ahead / rate) if rate else 60.0
        raise Overloaded(
            f"Tenant {tenant!r} has {state.depth} jobs waiting in the {lane} lane and this batch adds {count}, "
            f"over the limit of {cap}; nothing was queued. Retry after {retry_after:.0f}s, or send at most "
            f"{max(0, cap - state.depth)} jobs for this lane.", retry_after=retry_after, code="queue_full",
            param="jobs")

    def _hand_off_many(self, envs: list[Envelope]) -> None:
        """Push the committed jobs in one pipeline; if Redis refuses, fail them all (one UPDATE)."""
        try:
            self.gw.queues.push_many(envs)
        except (redis.RedisError, OSError) as exc:
            log.error("could not queue %d jobs of a batch: %s", len(envs), exc)
            with session_scope(self.gw.engine) as db:
                jobs.fail_jobs(db, [env.id for env in envs], {"type": "queue_unavailable", "message": str(exc)})
            raise Unavailable("The gateway's queue (Redis) is unavailable; the jobs were not accepted. "
                              "Retry shortly.") from exc


def _refuse_repeated_keys(items: Sequence[JobRequest]) -> None:
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        key = item.idempotency_key
        if key is None:
            continue
        if key in first:
            raise InvalidRequest(
                f"jobs.{index}.idempotency_key: {echo(key)} is also the key of jobs.{first[key]}; every job of "
                "a batch needs its own key. Nothing of this batch was accepted.",
                param=f"jobs.{index}.idempotency_key")
        first[key] = index


def _for_item(index: int, exc: InvalidRequest | Overloaded | PermissionDenied) -> GatewayError:
    """The error of one item, naming it (``jobs.<i>``): what refuses one job refuses its batch. A bad
    item is a 400 whatever its single-job status (an unknown model is a 404 on ``POST /v1/jobs``)."""
    param = f"jobs.{index}.{exc.param}" if exc.param else f"jobs.{index}"
    message = f"{param}: {exc.message} Nothing of this batch was accepted."
    if isinstance(exc, Overloaded):
        return Overloaded(message, retry_after=exc.retry_after, code=exc.code, param=param)
    if isinstance(exc, PermissionDenied):
        return PermissionDenied(message, param=param, code=exc.code)
    return InvalidRequest(message, param=param, code=exc.code)
