"""One chaos run, start to end: steady traffic, the faults on their timeline, the drain; raw facts out.

Facts come from where they are known: the callers (what the api answered), the simulator (requests
per model, sampled), the breakers' log (read all along, since Redis is killed) and, at the end, the
run's SQLite result store (every job and attempt). ``ops.chaos.measure`` turns them into numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from ops.chaos.plan import FALLBACK, ChaosPlan
from ops.chaos.stack import ChaosStack, Crash
from ops.chaos.watch import Watch, Watched
from ops.storm.scenario import COPILOT, DEPLOYMENT, MODEL
from ops.storm.traffic import Call, GatewayCaller, backlog_jobs, copilot_traffic

POLL_S = 1.0


@dataclass
class Observed:
    """Everything one run produced; times are wall-clock seconds (``time.time()``)."""

    plan: ChaosPlan
    t0: float
    events: dict[str, float] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)  # the copilot's, as its callers saw them
    submitted: list[str] = field(default_factory=list)  # backlog job ids the api accepted
    refused_at_submit: int = 0
    drained: bool = False
    watched: Watched = field(default_factory=Watched)
    sim_final: dict[str, Any] = field(default_factory=dict)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    crashes: list[Crash] = field(default_factory=list)  # gateway processes that died on their own
    logs: str = ""


def run(plan: ChaosPlan, progress: Any = print) -> Observed:
    """Start the processes, play the timeline, collect, stop."""
    stack = ChaosStack(plan)
    try:
        keys = stack.start()
        obs = asyncio.run(_play(plan, stack, keys, progress))
        obs.logs = str(stack.tmp)
        return obs
    finally:
        stack.stop()


async def _play(plan: ChaosPlan, stack: ChaosStack, keys: dict[str, str], progress: Any) -> Observed:
    caller = GatewayCaller(stack.api_url, keys)
    await _warm_up(plan, caller)
    await _reset_sim(stack.sim_url)
    obs = Observed(plan, time.time())
    watch = Watch(stack.sim_url, stack.redis_url, stack.redis_prefix, [DEPLOYMENT, FALLBACK])
    stop_copilot, stop_watch = asyncio.Event(), asyncio.Event()
    watching = asyncio.create_task(watch.run(stop_watch))
    supervising = asyncio.create_task(_supervise(stack, stop_watch, progress, obs.t0))
    copilot = asyncio.create_task(copilot_traffic(plan.scenario, caller, obs.calls, stop_copilot))
    backlog = asyncio.gather(*(caller.backlog(t, backlog_jobs(plan.scenario, t, n, obs.t0))
                               for t, n in plan.scenario.batch_plan.items()))
    await _faults(plan, stack, obs, progress)
    await _at(obs.t0 + plan.traffic_s)
    stop_copilot.set()
    obs.events["traffic_stopped"] = time.time()
    await backlog
    obs.submitted, obs.refused_at_submit = list(caller.submitted), caller.refused
    progress(f"  {time.time() - obs.t0:5.1f} s  copilot stopped; waiting for every accepted job to end")
    obs.drained = await _drained(stack.database_url, obs.t0, obs.events["traffic_stopped"] + plan.drain_cap_s)
    obs.events["drain_checked"] = time.time()
    await copilot
    stop_watch.set()
    obs.watched = await watching
    await supervising
    obs.crashes = list(stack.crashes)
    obs.sim_final = httpx.get(f"{stack.sim_url}/sim/stats", params={"series": 0}, timeout=30).json()
    obs.jobs, obs.attempts = _store(stack.database_url, obs.t0)
    await caller.close()
    return obs


async def _faults(plan: ChaosPlan, stack: ChaosStack, obs: Observed, progress: Any) -> None:
    """The three faults, each at its time; the worker and Redis restarts run off the event loop."""
    def say(what: str) -> None:
        progress(f"  {time.time() - obs.t0:5.1f} s  {what}")

    await _at(obs.t0 + plan.lead_s)
    obs.events["outage_start"], obs.events["outage_end"] = await _outage(stack.sim_url, plan.outage_s)
    say(f"primary {MODEL} answers 503 for {plan.outage_s:g} s")
    await _at(obs.t0 + plan.kill_at_s)
    obs.events["worker_pid"] = await asyncio.to_thread(stack.kill_worker)
    obs.events["worker_killed"] = time.time()
    say(f"kill -9 worker pid {obs.events['worker_pid']:.0f}")
    await _at(obs.events["worker_killed"] + plan.replace_after_s)
    await asyncio.to_thread(stack.spawn_worker)
    obs.events["worker_started"] = time.time()
    say("new worker started")
    await _at(obs.events["outage_end"] + plan.redis_after_s)
    obs.events["redis_killed"], obs.events["redis_up"] = await asyncio.to_thread(stack.restart_redis)
    say(f"kill -9 Redis; empty again after {obs.events['redis_up'] - obs.events['redis_killed']:.2f} s")


async def _supervise(stack: ChaosStack, stop: asyncio.Event, progress: Any, t0: float) -> None:
    """Restart what crashed, as a process supervisor would, twice a second until the run ends."""
    while not stop.is_set():
        for crash in await asyncio.to_thread(stack.supervise):
            progress(f"  {crash.at - t0:5.1f} s  {crash.role} pid {crash.pid} exited on its own "
                     f"(code {crash.exit_code}); supervisor started a new one")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)


async def _at(when: float) -> None:
    await asyncio.sleep(max(0.0, when - time.time()))


async def _outage(sim_url: str, seconds: float) -> tuple[float, float]:
    """Install the outage on the primary's model; returns its window on the wall clock."""
    rule = {"kind": "outage", "status": 503, "duration_s": seconds, "model": MODEL}
    async with httpx.AsyncClient() as client:
        reply = (await client.post(f"{sim_url}/sim/faults", json=rule)).raise_for_status().json()
    answered = time.time()
    ends_in = float(reply["added"][0].get("ends_in_s", seconds))  # the simulator's clock, as it answered
    return answered - (seconds - ends_in), answered + ends_in


async def _warm_up(plan: ChaosPlan, caller: GatewayCaller) -> None:
    """One copilot call per tenant: connections and caches warm before anything counts."""
    calls = [Call(COPILOT, t, time.time(), 0) for t in plan.scenario.tenant_ids]
    await asyncio.gather(*(caller.copilot(c, plan.scenario.copilot_request(c.tenant, -1)) for c in calls))
    if not all(c.ok for c in calls):
        raise SystemExit(f"warm-up calls failed with statuses {[c.status for c in calls if not c.ok]}")


async def _reset_sim(sim_url: str) -> None:
    async with httpx.AsyncClient() as client:
        (await client.post(f"{sim_url}/sim/reset", json={"meters": True, "stats": True})).raise_for_status()


async def _drained(database_url: str, t0: float, cap: float) -> bool:
    """Wait until no job of the run is open in the store, or the cap; True when none is."""
    while True:
        if await asyncio.to_thread(_open_jobs, database_url, t0) == 0:
            return True
        if time.time() >= cap:
            return False
        await asyncio.sleep(POLL_S)


# -- the result store ------------------------------------------------------------------------------

def _since(t0: float) -> datetime:
    return datetime.fromtimestamp(t0, UTC)


def _open_jobs(database_url: str, t0: float) -> int:
    from sqlalchemy import func, select

    from shared.db.models import TERMINAL_STATUSES, Job
    from shared.db.session import get_engine, session_scope

    query = select(func.count()).where(Job.created_at >= _since(t0), Job.status.not_in(TERMINAL_STATUSES))
    with session_scope(get_engine(database_url), readonly=True) as db:
        return int(db.scalar(query) or 0)


def _unix(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _store(database_url: str, t0: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every job of the run and every attempt of those jobs, as plain dicts with unix times."""
    from sqlalchemy import select

    from shared.db.models import Attempt, Job
    from shared.db.session import get_engine, session_scope

    job_cols = (Job.id, Job.tenant_id, Job.feature, Job.lane, Job.status, Job.error, Job.deployment, Job.attempts,
                Job.cost_usd, Job.created_at, Job.finished_at)
    attempt_cols = (Attempt.job_id, Attempt.number, Attempt.deployment, Attempt.status, Attempt.http_status,
                    Attempt.error, Attempt.cost_usd, Attempt.started_at, Attempt.finished_at)
    since = _since(t0)
    with session_scope(get_engine(database_url), readonly=True) as db:
        jobs = [dict(row._mapping) for row in db.execute(select(*job_cols).where(Job.created_at >= since))]
        ids = select(Job.id).where(Job.created_at >= since)
        attempts = [dict(row._mapping) for row in db.execute(select(*attempt_cols).where(Attempt.job_id.in_(ids)))]
    for row in (*jobs, *attempts):
        for name in ("created_at", "finished_at", "started_at"):
            if name in row:
                row[name] = _unix(row[name])
    return jobs, attempts
