"""What operators see at a glance, read live: the same numbers for the console, ``/v1/admin/*`` and /metrics.

From Redis (the shared truth every api replica reads the same): the waiting queues per lane x tenant
with the age of their oldest job, every budget bucket labelled by its scope (deployment, lane, tenant,
feature; never by its raw key), the breakers, the scheduler's leader, the processes that beat lately
and this minute's failures. From the store: recent jobs and today's cost (``shared.db.overview``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from api.gateway import Gateway
from shared import attempt_metrics
from shared.db import overview as store_overview
from shared.db.session import session_scope
from shared.envelope import Unreadable, read_entry
from shared.heartbeats import Heartbeats
from shared.lanes import LANES


def budget_snapshot(gw: Gateway) -> dict[str, Any]:
    """``GET /v1/admin/budgets``: buckets with their scope, queues per lane, breakers, the leader."""
    return {"buckets": bucket_levels(gw), "queues": _lane_totals(gw, queue_depths(gw)),
            "breakers": gw.admitter.breakers.states([d.name for d in gw.settings.deployments]),
            "scheduler": {"leader": gw.redis.get(gw.keys.leader)}}


def bucket_levels(gw: Gateway) -> list[dict[str, Any]]:
    """Every bucket of the budget tree: level (refilled to now), capacity, rate and open reservations; a
    deployment bucket also the headroom it has adapted to (capacity and rate are at the configured one)."""
    store, tree = gw.admitter.store, gw.admitter.tree
    buckets = tree.all_buckets()
    levels = store.levels(buckets)
    reserved = store.reserved_totals()
    headrooms = store.headrooms([b.key for b in buckets if b.headroom])
    rows = []
    for b in buckets:
        count, total = reserved.get(b.key, (0, 0.0))
        rows.append({"key": b.key, "scope": b.scope.labels() if b.scope else {},
                     "level": round(levels.get(b.key, b.capacity), 1), "capacity": b.capacity, "rate_per_s": b.rate,
                     "headroom": headrooms.get(b.key, b.headroom), "borrowable": b.borrowable,
                     "reservations": count, "reserved": total})
    return rows


def queue_depths(gw: Gateway, now: float | None = None) -> list[dict[str, Any]]:
    """Each lane x tenant queue that holds jobs: how many, and how long its oldest has waited (two round trips)."""
    now = now or time.time()
    with gw.redis.pipeline(transaction=False) as pipe:
        for lane in LANES:
            pipe.smembers(gw.keys.active_tenants(lane))
        tenants = [sorted(str(t) for t in members) for members in pipe.execute()]
    pairs = [(lane, tenant) for lane, names in zip(LANES, tenants, strict=True) for tenant in names]
    with gw.redis.pipeline(transaction=False) as pipe:
        for lane, tenant in pairs:
            pipe.llen(gw.keys.waiting(lane, tenant))
            pipe.lindex(gw.keys.waiting(lane, tenant), 0)
        replies = pipe.execute()
    rows = []
    for (lane, tenant), depth, head in zip(pairs, replies[::2], replies[1::2], strict=True):
        oldest = read_entry(head) if head else None
        age = None if oldest is None or isinstance(oldest, Unreadable) else max(0.0, now - oldest.enqueued_at)
        rows.append({"lane": str(lane), "tenant": tenant, "waiting": int(depth), "oldest_age_s": age})
    return rows


def _lane_totals(gw: Gateway, depths: list[dict[str, Any]]) -> dict[str, Any]:
    with gw.redis.pipeline(transaction=False) as pipe:
        for lane in LANES:
            pipe.get(gw.keys.waiting_count(lane))
            pipe.get(gw.keys.waiting_tokens(lane))
        replies = pipe.execute()
    return {str(lane): {"waiting": int(replies[2 * i] or 0), "tokens": int(replies[2 * i + 1] or 0),
                        "tenants": {row["tenant"]: row["waiting"] for row in depths if row["lane"] == lane}}
            for i, lane in enumerate(LANES)}


def live(gw: Gateway) -> dict[str, Any]:
    """Everything the console shows that lives in Redis."""
    depths = queue_depths(gw)
    return {
        "at": time.time(),
        "queues": depths,
        "lanes": {lane: {**totals, "deadline_s": gw.settings.lanes[lane].deadline_s}  # type: ignore[index]
                  for lane, totals in _lane_totals(gw, depths).items()},
        "buckets": bucket_levels(gw),
        "breakers": gw.admitter.breakers.states([d.name for d in gw.settings.deployments]),
        "scheduler": {"leader": gw.redis.get(gw.keys.leader)},
        "processes": Heartbeats(gw.redis, gw.keys).alive(),
        "failures_per_minute": attempt_metrics.recent(gw.redis, gw.keys),
    }


def overview(gw: Gateway) -> dict[str, Any]:
    """``GET /v1/admin/overview``: ``live`` plus today's cost and cache hits from the store."""
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with session_scope(gw.engine, readonly=True) as db:
        cost = store_overview.cost_since(db, midnight)
    jobs = sum(row["jobs"] for row in cost)
    hits = sum(row["cache_hits"] for row in cost)
    return {**live(gw), "cost_today": cost, "cache_hit_rate": hits / jobs if jobs else None}
