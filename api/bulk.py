"""Accepting a batch (``POST /v1/jobs/batch``): all or nothing, every job queued for the scheduler.

Everything that can refuse the batch is checked before anything is written: each item, its fit
against every budget, the queue caps and deadlines, idempotency keys. The tokenizer (a few ms for a
long prompt) is not needed for that: a prompt's characters count is an upper bound of its tokens
(no token is shorter than a byte), and only an item whose bound would not fit is counted exactly.
The batch is then written in chunks, growing from ``FIRST_CHUNK``: each chunk's prompts are counted,
its jobs inserted in one transaction and pushed in one pipeline, so the first jobs of a large batch
reach the scheduler while the rest are still being written.

If the store or Redis fails half way, the chunks written before are queued and the answer is an error:
sending the batch again with the same idempotency keys returns those jobs instead of making new ones.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis

from api.accept import REFUSALS
from api.auth import Caller
from shared.admission import QueueState
from shared.budget import prompt_tokens
from shared.cache.plan import plan_for
from shared.db import jobs
from shared.db.session import session_scope
from shared.dialects import chat_view
from shared.envelope import Envelope
from shared.errors import GatewayError, InvalidRequest, Overloaded, PermissionDenied, Unavailable, echo
from shared.lanes import Lane
from shared.privacy.vault import save_in
from shared.schemas import BulkItem

if TYPE_CHECKING:
    from api.gateway import Gateway

log = logging.getLogger("gateway.api")


@dataclass
class BatchSubmitted:
    views: list[dict[str, Any]]  # in the order of the batch's items (those not refused)
    created: int  # how many of them are new (the rest repeat an idempotency key)
    refused: dict[int, GatewayError] = field(default_factory=dict)  # lenient: the items refused, by index


class BulkAcceptor:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def submit_many(self, caller: Caller, items: Sequence[BulkItem],
                    lines: tuple[str, Sequence[str]] | None = None, *, lenient: bool = False) -> BatchSubmitted:
        """Accept a batch all or nothing (see the module docstring). Every new job is queued for the
        scheduler, even an interactive one. ``lines``: the batch (``POST /v1/batches``) these items are
        lines of, and each item's custom_id. ``lenient``: an item that is refused on its own (bad, a model
        the key may not use ...) is left out and named in ``refused``; the others go on."""
        _refuse_repeated_keys(items)
        tenant = caller.tenant
        try:
            envs, refused = self._check_all(caller, items, lenient)
            if refused:
                items = [item for i, item in enumerate(items) if i not in refused]
                if lines is not None:
                    lines = (lines[0], [c for i, c in enumerate(lines[1]) if i not in refused])
            if not envs:
                return BatchSubmitted([], 0, refused)
            self._refuse_over_budget(envs)
            self._shed_batch(tenant, envs, self._queue_states(tenant, {env.lane for env in envs}))
        except REFUSALS as exc:
            self.gw.record_refusal(caller, "(batch)", Lane.BATCH, "(batch)", exc)
            raise
        self._refuse_reused_keys(tenant, envs, items)
        views: list[dict[str, Any]] = []
        created = 0
        for start, end in _chunks(len(envs)):
            labels = (lines[0], lines[1][start:end]) if lines is not None else None
            chunk_views, chunk_created = self._write(caller, envs[start:end], items[start:end], labels)
            views += chunk_views
            created += chunk_created
        return BatchSubmitted(views, created, refused)

    def _check_all(self, caller: Caller, items: Sequence[BulkItem],
                   lenient: bool) -> tuple[list[Envelope], dict[int, GatewayError]]:
        envs: list[Envelope] = []
        refused: dict[int, GatewayError] = {}
        for index, item in enumerate(items):
            try:
                envs.append(self._checked(caller, index, item))
            except _ItemRefused as exc:
                if not lenient:
                    raise exc.named from exc.cause
                refused[index] = exc.cause
        return envs, refused

    def _checked(self, caller: Caller, index: int, item: BulkItem) -> Envelope:
        """The item's envelope, checked without the tokenizer where a bound will do (module docstring);
        its estimate until its chunk is written is by characters. Errors name the item."""
        try:
            tags = item.tags()
            lane = self.gw.lane_for(caller, tags, Lane.STANDARD, item.model)
            env = self.gw.envelope(caller.tenant, tags.feature, lane, item.model, item.payload(), tags.deadline_at,
                                   identity=caller.identity, task=tags.task, count=False,  # bounded by characters
                                   dialect=item.dialect)
            # A batch does not read the cache (it stays one transaction and one pipeline, every job queued),
            # but its answers are stored for the calls after it.
            plan = plan_for(self.gw.settings, caller.tenant, tags.feature, item.model, env.chain, _view(env),
                            tags.cache)
            env.job = replace(env.job, cache=plan.fill())
            try:
                self.gw.admitter.prepare(env)
            except InvalidRequest:  # the bound does not fit: count exactly, which may fit
                env.job = replace(env.job, prompt_tokens=prompt_tokens(_view(env)))
                self.gw.admitter.prepare(env)
            env.job = replace(env.job, prompt_tokens=env.job.prompt_chars)
            self.gw.admitter.prepare(env)
        except (InvalidRequest, Overloaded, PermissionDenied) as exc:
            raise _ItemRefused(exc, _for_item(index, exc)) from exc
        return env

    def _refuse_reused_keys(self, tenant: str, envs: list[Envelope], items: Sequence[BulkItem]) -> None:
        """A key the tenant used in the last 24 h for another request refuses the batch before anything
        is written (the chunks would find it only after writing the ones before)."""
        keyed = {item.idempotency_key: index for index, item in enumerate(items) if item.idempotency_key}
        if not keyed:
            return
        with session_scope(self.gw.engine, readonly=True) as db:
            for key, job in jobs.keys_in_use(db, tenant, list(keyed)).items():
                jobs.repeat_at(keyed[key], job, envs[keyed[key]].request)

    def _write(self, caller: Caller, envs: list[Envelope], items: Sequence[BulkItem],
               lines: tuple[str, Sequence[str]] | None = None) -> tuple[list[Any], int]:
        """One chunk: its prompts counted, its jobs inserted in one transaction and pushed in one pipeline."""
        batch_id, custom_ids = lines if lines is not None else (None, [None] * len(envs))
        for env in envs:
            env.job = replace(env.job, prompt_tokens=prompt_tokens(_view(env)))
            self.gw.admitter.prepare(env)  # the exact estimate: what the queues count
        rows = [jobs.NewJob(env.id, env.feature, env.lane, item.task, env.model, env.request,
                            datetime.fromtimestamp(env.deadline, UTC), item.idempotency_key, env.tokens,
                            caller.key_id, env.job.screening, env.route.to_dict() if env.route is not None else None,
                            cache_status="bypass", dialect=env.job.dialect, batch_id=batch_id, custom_id=custom_id)
                for env, item, custom_id in zip(envs, items, custom_ids, strict=True)]
        with session_scope(self.gw.engine) as db:
            results = jobs.create_jobs(db, caller.tenant, rows)
        created = [env for env, (_, new) in zip(envs, results, strict=True) if new]
        enqueued_at = time.time()
        for env in created:
            env.enqueued_at = enqueued_at
        self._hand_off_many(created)
        return [view for view, _ in results], len(created)

    def _refuse_over_budget(self, envs: list[Envelope]) -> None:
        """A 429 for the batch when a hard dollar budget is too spent for one of its jobs and that job may
        not wait for the reset (``Admitter.check_budgets``); the budgets read once for the whole batch."""
        spent = self.gw.admitter.budget_spent(envs)
        for index, env in enumerate(envs):
            try:
                self.gw.admitter.check_budgets(env, spent)
            except Overloaded as exc:
                raise _for_item(index, exc) from exc

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
        """Push the committed jobs in one pipeline (their vaults first, in one more); if Redis refuses,
        fail them all (one UPDATE)."""
        try:
            self._save_vaults(envs)
            self.gw.queues.push_many(envs)
        except (redis.RedisError, OSError) as exc:
            log.error("could not queue %d jobs of a batch: %s", len(envs), exc)
            with session_scope(self.gw.engine) as db:
                jobs.fail_jobs(db, [env.id for env in envs], {"type": "queue_unavailable", "message": str(exc)})
            raise Unavailable("The gateway's queue (Redis) is unavailable; the jobs were not accepted. "
                              "Retry shortly.") from exc

    def _save_vaults(self, envs: list[Envelope]) -> None:
        """The tokenized values of the jobs that have any (``shared.privacy.vault``), in one round trip."""
        holding = [env for env in envs if env.vault]
        if not holding:
            return
        with self.gw.redis.pipeline(transaction=False) as pipe:
            for env in holding:
                assert env.vault is not None
                save_in(pipe, self.gw.keys.vault(env.id), env.vault, self.gw.vault_ttl_s(env))
            pipe.execute()


def _view(env: Envelope) -> dict[str, Any]:
    """The job's request as the estimator and the cache read it, whatever its dialect (``shared.dialects``)."""
    return chat_view(env.request, env.job.dialect)


FIRST_CHUNK, LAST_CHUNK = 16, 256  # jobs per transaction: small first (the first jobs flow at once), then growing


def _chunks(total: int) -> Iterator[tuple[int, int]]:
    start, size = 0, FIRST_CHUNK
    while start < total:
        yield start, min(total, start + size)
        start, size = start + size, min(LAST_CHUNK, size * 4)


def _refuse_repeated_keys(items: Sequence[BulkItem]) -> None:
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


class _ItemRefused(Exception):
    """One item refused: its own error (``cause``), and the batch's error naming it (``named``)."""

    def __init__(self, cause: GatewayError, named: GatewayError) -> None:
        super().__init__(named.message)
        self.cause, self.named = cause, named


def _for_item(index: int, exc: InvalidRequest | Overloaded | PermissionDenied) -> GatewayError:
    """The error of one item, naming it (``jobs.<i>``): what refuses one job refuses its batch. A bad
    item is a 400 whatever its single-job status (an unknown model is a 404 on ``POST /v1/jobs``)."""
    param = f"jobs.{index}.{exc.param}" if exc.param else f"jobs.{index}"
    message = f"{param}: {exc.message} Nothing of this batch was accepted."
    if isinstance(exc, Overloaded):  # a QuotaExceeded stays one (its type says insufficient_quota)
        return type(exc)(message, retry_after=exc.retry_after, code=exc.code, param=param)
    if isinstance(exc, PermissionDenied):
        return PermissionDenied(message, param=param, code=exc.code)
    return InvalidRequest(message, param=param, code=exc.code)
