"""Operators' view: live budget levels, reservations, queue depth per lane x tenant, breakers; the cache purge.

Guarded by the admin key from the environment (``GATEWAY_ADMIN_KEY`` by default), never a tenant key:
these numbers span every tenant.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.answers import Budgets, CachePurged
from api.deps import AdminDep, GatewayDep
from api.gateway import Gateway
from api.openapi import OPERATORS_KEY, answer, errors
from shared.db.tenants import TENANT_ID_PATTERN
from shared.lanes import LANES

router = APIRouter()


@router.get("/v1/admin/budgets", response_model=None,
            responses={200: answer(Budgets, "Live budgets, queues and breakers"), **errors(*OPERATORS_KEY)})
async def budgets(admin: AdminDep, gw: GatewayDep) -> dict[str, Any]:
    return await run_in_threadpool(budget_snapshot, gw)


def budget_snapshot(gw: Gateway) -> dict[str, Any]:
    store, tree = gw.admitter.store, gw.admitter.tree
    buckets = tree.all_buckets()
    levels = store.levels(buckets)
    reserved = store.reserved_totals()
    return {
        "buckets": [
            {"key": b.key, "level": round(levels.get(b.key, b.capacity), 1), "capacity": b.capacity,
             "rate_per_s": b.rate, "borrowable": b.borrowable,
             "reservations": reserved.get(b.key, (0, 0.0))[0], "reserved": reserved.get(b.key, (0, 0.0))[1]}
            for b in buckets
        ],
        "queues": {lane: {"waiting": gw.queues.waiting_in_lane(lane), "tokens": gw.queues.waiting_tokens(lane),
                          "tenants": {t: gw.queues.depth(lane, t) for t in gw.queues.active_tenants(lane)}}
                   for lane in LANES},
        "breakers": gw.admitter.breakers.states([d.name for d in gw.settings.deployments]),
        "scheduler": {"leader": gw.redis.get(gw.keys.leader)},
    }


@router.delete("/v1/admin/cache", response_model=None,
               responses={200: answer(CachePurged, "What was deleted"), **errors(*OPERATORS_KEY, 400)})
async def purge_cache(
    admin: AdminDep, gw: GatewayDep,
    tenant: Annotated[str, Query(description="the tenant whose entries go", min_length=1, max_length=63,
                                 pattern=TENANT_ID_PATTERN.pattern)],
    feature: Annotated[str | None, Query(description="only the entries this feature of the tenant stored",
                                         min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")] = None,
) -> dict[str, Any]:
    """Delete a tenant's cached answers (exact and semantic), or one feature's: every api replica stops
    serving them at once (the entries are in Redis, which they share)."""
    feature = feature.lower() if feature else None
    purged = await run_in_threadpool(gw.attempts.cache.purge, tenant, feature)
    return {"tenant": tenant, "feature": feature, **purged}
