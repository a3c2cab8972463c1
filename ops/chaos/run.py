"""One chaos run, start to end: steady traffic, the faults on their timeline, the drain; raw facts out.

Facts come from where they are known: the callers (what the api answered), the simulator (requests
per model, sampled), the breakers' log (read all along, since Redis is killed), at each kill the
attempt leases live in Redis and the jobs open in the store (then those leases, followed until the
end), and at the end the run's result store (every job and attempt). ``ops.chaos.measure`` turns
them into numbers.
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

from ops.chaos.caller import ChaosCaller
from ops.chaos.plan import FALLBACK, KILLS, ChaosPlan, Kill
from ops.chaos.stack import ChaosStack, Crash, Killed
from ops.chaos.streams import StreamCall, stream_traffic
from ops.chaos.watch import LeaseWatch, Watch, Watched, lease_ttls_ms, leases_now, wait_for_new_leader
from ops.storm.scenario import COPILOT, DEPLOYMENT, MODEL
from ops.storm.traffic import Call, backlog_jobs, copilot_traffic

POLL_S = 1.0


@dataclass
class KillSeen:
    """One kill -9 as the benchmark saw it: the process, when, the attempt leases live just before
    (job -> token) and when each first held another token, the jobs queued in the store just before,
    and when the role was back (a new leader took over, Redis answered again, a replacement started)."""

    killed: Killed
    leases: dict[str, str]
    queued: int
    ttl_ms: dict[str, int] = field(default_factory=dict)  # each lease's time left just before the kill
    back_at: float | None = None
    new_leader: str | None = None
    new_token_at: dict[str, float] = field(default_factory=dict)

    @property
    def role(self) -> str:
        return self.killed.role


@dataclass
class Observed:
    """Everything one run produced; times are wall-clock seconds (``time.time()``)."""

    plan: ChaosPlan
    t0: float
    events: dict[str, float] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)  # the copilot's, as its callers saw them
    streams: list[StreamCall] = field(default_factory=list)  # the streaming callers around the worker's kill
    stream_answers: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # their jobs' stored results
    submitted: list[str] = field(default_factory=list)  # backlog job ids the api accepted
    refused_at_submit: int = 0
    drained: bool = False
    watched: Watched = field(default_factory=Watched)
    sim_final: dict[str, Any] = field(default_factory=dict)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    crashes: list[Crash] = field(default_factory=list)  # gateway processes that died on their own
    kills: list[KillSeen] = field(default_factory=list)
    database: str = "sqlite"
    logs: str = ""


def run(plan: ChaosPlan, progress: Any = print, database_url: str | None = None) -> Observed:
    """Start the processes, play the timeline, collect, stop."""
    stack = ChaosStack(plan, database_url)
    try:
        keys = stack.start()
        obs = asyncio.run(_play(plan, stack, keys, progress))
        obs.logs = str(stack.tmp)
        obs.database = stack.database_url.split(":", 1)[0]
        return obs
    finally:
        stack.stop()


async def _play(plan: ChaosPlan, stack: ChaosStack, keys: dict[str, str], progress: Any) -> Observed:
    caller = ChaosCaller(stack.api_urls, keys)
    await _warm_up(plan, caller)
    await _reset_sim(stack.sim_url)
    obs = Observed(plan, time.time())
    watch = Watch(stack.sim_url, stack.redis_url, stack.redis_prefix, [DEPLOYMENT, FALLBACK])
    stop_copilot, stop_watch = asyncio.Event(), asyncio.Event()
    watching = asyncio.create_task(watch.run(stop_watch))
    supervising = asyncio.create_task(_supervise(stack, stop_watch, progress, obs.t0))
    copilot = asyncio.create_task(copilot_traffic(plan.scenario, caller, obs.calls, stop_copilot))
    streaming = asyncio.create_task(stream_traffic(plan, caller, obs.streams, obs.t0))
    backlog = asyncio.gather(*(caller.backlog(t, backlog_jobs(plan.scenario, t, n, obs.t0))
                               for t, n in plan.scenario.batch_plan.items()))
    following = await _faults(plan, stack, obs, progress, stop_watch)
    await _at(obs.t0 + plan.traffic_s)
    stop_copilot.set()
    obs.events["traffic_stopped"] = time.time()
    await backlog
    obs.submitted, obs.refused_at_submit = list(caller.submitted), caller.refused
    progress(f"  {time.time() - obs.t0:5.1f} s  copilot stopped; waiting for every accepted job to end")
    obs.drained = await _drained(stack.database_url, obs.t0, obs.events["traffic_stopped"] + plan.drain_cap_s)
    obs.events["drain_checked"] = time.time()
    await copilot
    await streaming
    stop_watch.set()
    obs.watched = await watching
    await supervising
    for seen, task in following:
        seen.new_token_at = await task
    obs.crashes = list(stack.crashes)
    obs.sim_final = httpx.get(f"{stack.sim_url}/sim/stats", params={"series": 0}, timeout=30).json()
    obs.jobs, obs.attempts = _store(stack.database_url, obs.t0)
    obs.stream_answers = _results(stack.database_url, [s.got.job_id for s in obs.streams if s.got.job_id])
    await caller.close()
    return obs


async def _faults(plan: ChaosPlan, stack: ChaosStack, obs: Observed, progress: Any,
                  stop: asyncio.Event) -> list[tuple[KillSeen, asyncio.Task[dict[str, float]]]]:
    """The outage, then each kill at its time (blocking work off the event loop); returns each kill with
    the task that follows the leases it left behind until ``stop``."""
    def say(what: str) -> None:
        progress(f"  {time.time() - obs.t0:5.1f} s  {what}")

    await _at(obs.t0 + plan.lead_s)
    obs.events["outage_start"], obs.events["outage_end"] = await _outage(stack.sim_url, plan.outage_s)
    say(f"primary {MODEL} answers 503 for {plan.outage_s:g} s")
    following, replacing = [], []
    for what in KILLS:
        await _at(obs.t0 + plan.kill_at_s(what))
        seen = await asyncio.to_thread(_kill, stack, what, obs.t0)
        obs.kills.append(seen)
        obs.events[f"{what}_killed"] = seen.killed.at
        say(f"kill -9 {what} pid {seen.killed.pid} {seen.killed.detail}: {len(seen.leases)} attempt leases live, "
            f"{seen.queued} jobs queued" + (f"; back after {seen.back_at - seen.killed.at:.2f} s"
                                            if seen.back_at else ""))
        watch = LeaseWatch(stack.redis_url, stack.keys, seen.leases)
        following.append((seen, asyncio.create_task(watch.run(stop))))
        if what != "redis":
            replacing.append(asyncio.create_task(_replace_later(stack, seen, plan.replace_after_s, say)))
    await asyncio.gather(*replacing)
    return following


def _kill(stack: ChaosStack, what: Kill, t0: float) -> KillSeen:
    """Read what is in flight (the store's open jobs, their leases), kill, and wait for what comes back
    at once (a new leader; Redis)."""
    admitted, queued = _open_at(stack.database_url, t0)
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=2)
    leases = leases_now(client, stack.keys, admitted)
    ttls = lease_ttls_ms(client, stack.keys, list(leases))
    if what == "redis":
        killed, up = stack.restart_redis()
        return KillSeen(killed, leases, queued, ttls, back_at=up)
    if what == "scheduler":
        killed = stack.kill_leader()
        back, leader = wait_for_new_leader(stack.redis_url, stack.keys, killed.detail)
        return KillSeen(killed, leases, queued, ttls, back_at=back if leader else None, new_leader=leader)
    killed = stack.kill_worker() if what == "worker" else stack.kill_api()
    return KillSeen(killed, leases, queued, ttls)


async def _replace_later(stack: ChaosStack, seen: KillSeen, after_s: float, say: Any) -> None:
    await _at(seen.killed.at + after_s)
    await asyncio.to_thread(stack.replace, seen.killed)
    if seen.role != "scheduler":  # a scheduler's comeback is the standby's takeover
        seen.back_at = time.time()
    say(f"new {seen.role} started")


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


async def _warm_up(plan: ChaosPlan, caller: ChaosCaller) -> None:
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


def _open_at(database_url: str, t0: float) -> tuple[list[str], int]:
    """The run's jobs admitted or running now (their attempt may be in flight), and how many are queued."""
    from sqlalchemy import func, select

    from shared.db.models import Job
    from shared.db.session import get_engine, session_scope

    since = Job.created_at >= _since(t0)
    with session_scope(get_engine(database_url), readonly=True) as db:
        admitted = list(db.scalars(select(Job.id).where(since, Job.status.in_(("admitted", "running")))))
        queued = int(db.scalar(select(func.count()).where(since, Job.status == "queued")) or 0)
    return admitted, queued


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
                Job.cost_usd, Job.created_at, Job.admitted_at, Job.finished_at)
    attempt_cols = (Attempt.job_id, Attempt.number, Attempt.deployment, Attempt.status, Attempt.http_status,
                    Attempt.error, Attempt.cost_usd, Attempt.started_at, Attempt.finished_at)
    since = _since(t0)
    with session_scope(get_engine(database_url), readonly=True) as db:
        jobs = [dict(row._mapping) for row in db.execute(select(*job_cols).where(Job.created_at >= since))]
        ids = select(Job.id).where(Job.created_at >= since)
        attempts = [dict(row._mapping) for row in db.execute(select(*attempt_cols).where(Attempt.job_id.in_(ids)))]
    for row in (*jobs, *attempts):
        for name in ("created_at", "admitted_at", "finished_at", "started_at"):
            if name in row:
                row[name] = _unix(row[name])
    return jobs, attempts


def _results(database_url: str, job_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """The stored answers of these jobs (what a streaming caller read is compared with)."""
    from sqlalchemy import select

    from shared.db.models import Job
    from shared.db.session import get_engine, session_scope

    with session_scope(get_engine(database_url), readonly=True) as db:
        return {job_id: result for job_id, result in db.execute(select(Job.id, Job.result).where(Job.id.in_(job_ids)))}
