"""One mode, start to end: copilot alone, the storm, the drain, a short tail; raw observations out.

Observations come from three places, each the one that knows: the callers (copilot latency, and in
the direct mode every job), the simulator's ``/sim/stats`` (what the provider accepted and refused,
sampled every half second) and, through the gateway, its Redis queue counters and its result store
(each backlog job's outcome, tokens, cost and when the provider took it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import redis

from ops.storm.scenario import COPILOT, SUMMARIZER, Scenario
from ops.storm.stack import StormStack
from ops.storm.traffic import (
    Call,
    DirectCaller,
    GatewayCaller,
    backlog_jobs,
    copilot_traffic,
)
from shared.keys import Keys
from shared.lanes import LANES

SAMPLE_S = 0.5
FINAL = ("succeeded", "failed", "expired", "cancelled")
MODES = {"direct": "(a) direct + tenacity", "no-admission": "(b) gateway, admission off",
         "gateway": "(c) gateway"}


@dataclass
class Observed:
    """Everything one mode produced, in wall-clock seconds (``time.time()``)."""

    mode: str
    t0: float
    storm_at: float
    ended_at: float = 0.0
    calls: list[Call] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)  # queue depths over time
    sim: dict[str, Any] = field(default_factory=dict)
    sim_t0: float = 0.0  # wall time of the simulator's stats t=0
    refused_at_submit: int = 0
    costs: list[dict[str, Any]] = field(default_factory=list)  # tenant, feature, jobs, usd


def run_mode(mode: str, scenario: Scenario, via: str = "jobs") -> Observed:
    """Start this mode's processes, play the traffic, collect, stop. ``via``: how the gateway modes'
    summarizers submit (``GatewayCaller``)."""
    stack = StormStack(scenario, gateway=mode != "direct", admission=mode == "gateway")
    try:
        keys = stack.start()
        return asyncio.run(_play(mode, scenario, stack, keys, via))
    finally:
        stack.stop()


async def _play(mode: str, scenario: Scenario, stack: StormStack, keys: dict[str, str], via: str) -> Observed:
    caller: DirectCaller | GatewayCaller = (
        DirectCaller(scenario, stack.sim_url) if mode == "direct" else GatewayCaller(stack.api_url, keys, via))
    await _warm_up(scenario, caller)
    sim_t0 = await _reset_sim(stack.sim_url)
    t0 = time.time()
    obs = Observed(mode, t0, t0 + scenario.before_s, sim_t0=sim_t0)
    stop, sampling = asyncio.Event(), asyncio.Event()
    sampler = asyncio.create_task(_sample(stack, caller, obs, sampling))
    copilot = asyncio.create_task(copilot_traffic(scenario, caller, obs.calls, stop))
    await asyncio.sleep(scenario.before_s)
    obs.storm_at = time.time()
    batch = [backlog_jobs(scenario, t, n, obs.storm_at) for t, n in scenario.batch_plan.items()]
    storm = asyncio.gather(*(caller.backlog(jobs[0][0].tenant, jobs) for jobs in batch))
    await _until_drained(scenario, stack, caller, obs, storm)
    obs.ended_at = time.time()
    await asyncio.sleep(scenario.tail_s)
    stop.set()
    await copilot
    sampling.set()
    await sampler
    obs.sim = httpx.get(f"{stack.sim_url}/sim/stats", timeout=30).json()
    if isinstance(caller, DirectCaller):
        obs.calls += [c for jobs in batch for c, _ in jobs]
    else:
        obs.refused_at_submit = caller.refused
        _copilot_phases(stack.database_url, obs.calls)
        obs.calls += _jobs_from_store(stack.database_url, scenario, obs.storm_at)
        obs.costs = _costs_from_store(stack.database_url, t0)
    await caller.close()
    return obs


async def _warm_up(scenario: Scenario, caller: DirectCaller | GatewayCaller) -> None:
    """One copilot call per tenant: connections, tokenizer and caches warm before anything counts."""
    calls = [Call(COPILOT, t, time.time(), 0) for t in scenario.tenant_ids]
    await asyncio.gather(*(caller.copilot(c, scenario.copilot_request(c.tenant, -1)) for c in calls))
    failed = [c.status for c in calls if not c.ok]
    if failed:
        raise SystemExit(f"warm-up calls failed with statuses {failed}")


async def _reset_sim(sim_url: str) -> float:
    async with httpx.AsyncClient() as client:
        (await client.post(f"{sim_url}/sim/reset", json={"meters": True, "stats": True})).raise_for_status()
    return time.time()


async def _until_drained(scenario: Scenario, stack: StormStack, caller: DirectCaller | GatewayCaller,
                         obs: Observed, storm: asyncio.Future[Any]) -> None:
    """Wait until every backlog job has ended, or the cap (a multiple of the physical minimum)."""
    cap = obs.storm_at + scenario.cap_factor * scenario.min_drain_s + 10
    if isinstance(caller, DirectCaller):
        with contextlib.suppress(TimeoutError):  # what did not finish by the cap counts as unfinished
            await asyncio.wait_for(storm, timeout=max(1.0, cap - time.time()))
        return
    await storm  # all submitted
    while time.time() < cap:
        if _final_count(stack.database_url) >= len(caller.submitted):
            return
        await asyncio.sleep(SAMPLE_S)


async def _sample(stack: StormStack, caller: DirectCaller | GatewayCaller, obs: Observed,
                  done: asyncio.Event) -> None:
    """Queue depth per lane every half second: the gateway's waiting counters, or the callers' own."""
    keys = Keys(stack.redis_prefix)
    client = redis.Redis.from_url(stack.env.get("GATEWAY_REDIS_URL", "redis://127.0.0.1:6379/0"))
    celery_prefix = f"{stack.redis_prefix}:celery:"
    while not done.is_set():
        cpu = {**stack.cpu_seconds(), "load generator": time.process_time()}
        point: dict[str, Any] = {"t": time.time(), "cpu": cpu}
        if isinstance(caller, DirectCaller):
            point["pending"] = {"batch": caller.pending_batch}
        else:
            counts = client.mget([keys.waiting_count(lane) for lane in LANES])
            point["waiting"] = {lane: int(v or 0) for lane, v in zip(LANES, counts, strict=True)}
            sent = [client.llen(celery_prefix + keys.exec_queue(lane)) for lane in LANES]
            point["sent"] = dict(zip(LANES, sent, strict=True))
        obs.samples.append(point)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=SAMPLE_S)
    client.close()


# -- the result store ------------------------------------------------------------------------------

def _unix(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _final_count(database_url: str) -> int:
    from sqlalchemy import func, select

    from shared.db.models import Job
    from shared.db.session import get_engine, session_scope

    query = select(func.count()).where(Job.feature == SUMMARIZER, Job.status.in_(FINAL))
    with session_scope(get_engine(database_url), readonly=True) as db:
        return int(db.scalar(query) or 0)


def _jobs_from_store(database_url: str, scenario: Scenario, storm_at: float) -> list[Call]:
    """Each backlog job as a ``Call``: outcome, tokens, cost; accepted = finished - provider latency."""
    from sqlalchemy import select

    from shared.db.models import Attempt, Job
    from shared.db.session import get_engine, session_scope

    latency = {}
    out = []
    with session_scope(get_engine(database_url), readonly=True) as db:
        for job_id, ms in db.execute(select(Attempt.job_id, Attempt.latency_ms).where(Attempt.status == "succeeded")):
            latency[job_id] = (ms or 0) / 1000
        for job in db.scalars(select(Job).where(Job.feature == SUMMARIZER)):
            done = _unix(job.finished_at) if job.status in FINAL else None
            call = Call(SUMMARIZER, job.tenant_id, storm_at, scenario.charged(job.request or {}), done=done,
                        ok=job.status == "succeeded", status=200 if job.status == "succeeded" else 0,
                        attempts=job.attempts, tokens_in=job.tokens_in, tokens_out=job.tokens_out,
                        cost_usd=float(job.cost_usd or 0),
                        estimated_in=(job.estimate_tokens or 0) - int((job.request or {}).get("max_tokens") or 0))
            if call.ok and done is not None:
                call.accepted = done - latency.get(job.id, 0.0)
            out.append(call)
    return out


def _copilot_phases(database_url: str, calls: list[Call]) -> None:
    """Where each successful copilot call's time went on the gateway path, from the store's timestamps.

    ingress: request sent -> job row written (api event loop, thread pool, auth, estimate);
    admission: row -> admitted; to_provider: admitted -> provider call started (Celery, worker thread);
    provider: the attempt's own latency; egress: provider answered -> caller got the answer.
    """
    from sqlalchemy import select

    from shared.db.models import Attempt, Job
    from shared.db.session import get_engine, session_scope

    by_id = {c.job_id: c for c in calls if c.ok and c.job_id and c.done is not None}
    with session_scope(get_engine(database_url), readonly=True) as db:
        query = (select(Job.id, Job.created_at, Job.admitted_at, Job.finished_at, Attempt.latency_ms)
                 .join(Attempt, Attempt.job_id == Job.id).where(Job.feature == COPILOT, Attempt.status == "succeeded"))
        for job_id, created, admitted, finished, ms in db.execute(query):
            call = by_id.get(job_id)
            times = [_unix(created), _unix(admitted), _unix(finished)]
            if call is None or call.done is None or None in times:
                continue
            created_t, admitted_t, finished_t = (float(t) for t in times)  # type: ignore[arg-type]
            provider = (ms or 0) / 1000
            call.phases = {"ingress": created_t - call.sent, "admission": admitted_t - created_t,
                           "to_provider": finished_t - provider - admitted_t, "provider": provider,
                           "egress": call.done - finished_t}


def _costs_from_store(database_url: str, since: float) -> list[dict[str, Any]]:
    """USD per tenant and feature, summed over the run's jobs in the store (what a bill would say)."""
    from sqlalchemy import func, select

    from shared.db.models import Job
    from shared.db.session import get_engine, session_scope

    query = (select(Job.tenant_id, Job.feature, func.count(), func.sum(Job.cost_usd))
             .where(Job.status == "succeeded", Job.created_at >= datetime.fromtimestamp(since, UTC))
             .group_by(Job.tenant_id, Job.feature))
    with session_scope(get_engine(database_url), readonly=True) as db:
        return [{"tenant": t, "feature": f, "jobs": int(n), "usd": float(usd or 0)}
                for t, f, n, usd in db.execute(query)]
