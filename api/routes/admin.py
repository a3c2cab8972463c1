"""Operators' view: live budget levels, reservations, queue depth per lane x tenant, breakers.

Guarded by the admin key from the environment (``GATEWAY_ADMIN_KEY`` by default), never a tenant key:
these numbers span every tenant.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.answers import Budgets
from api.deps import AdminDep, GatewayDep
from api.gateway import Gateway
from api.openapi import OPERATORS_KEY, answer, errors
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
