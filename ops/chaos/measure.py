"""From a run's raw facts to the numbers the issue asks for; every definition is here.

Over the whole run:

- accepted: jobs of the run in the result store (the api commits the row before it answers), less
  those it failed at once with ``queue_unavailable`` (Redis down: the caller got a 503 and was told
  the job was not accepted); every id an api answer carried must be among them;
- lost: an accepted job not terminal when the drain ended, or an id an api answer carried that is
  missing from the store (target 0);
- duplicate charges: a job with more than one succeeded attempt, an attempt number recorded twice,
  or a job whose billed cost is not its one succeeded attempt's cost (target 0);
- unrecorded provider calls: calls the simulator answered with success that no attempt row records
  (killed mid-call, or sent twice after Redis forgot a lease): paid to the provider, billed to nobody;
- callers that saw an error while a fallback was healthy: copilot calls whose final answer (after the
  callers' load balancer skipped a refused connection, and after a dropped call was asked again with
  its Idempotency-Key) was an error, plus backlog jobs that ended failed or expired, at a moment the
  fallback's breaker was not open (it never is here: the fallback never fails). A 503
  ``queue_unavailable`` is left out and counted apart: the gateway's own Redis was down, nothing was
  accepted, and no deployment could have served it (target 0);
- sent to the dead provider: attempt rows on the primary by start time. Before the breaker first
  opened they are the cost of detection; from then until it closed, each half-open period may let
  ``half_open_probes`` through (counted from its start to the next half-open, so a probe that starts
  just after a sibling probe re-opened the breaker is still a probe); the rest, and anything that
  started in the first open period, was sent while the breaker was open (target 0). The simulator's
  own count of requests to the primary's model during the outage is given beside it;
- recovery: from the outage's end until the breaker has closed and the primary's accepted requests
  per second (simulator, over a sliding window) are back to ``recovered_share`` of their rate over the
  ``rate_window_s`` before the outage.

Per fault (the outage, then each kill -9), over its window: from the fault until the next one (the
last until the copilot stops):

- affected jobs. Outage: jobs with an attempt on the primary that failed and started during the
  outage. A kill: jobs whose attempt lease was live just before the kill (read from Redis for every
  job the store had admitted or running) and later held another token (a new dispatch) with no
  attempt of the job ending in between: their attempt was in the killed process (a call in flight,
  or a message it had taken and not started), or, for Redis, a dispatch the empty Redis forgot.
  Leases of live processes keep their token (a worker's heartbeat takes a lease Redis forgot back
  under the same token), and a retry after a recorded failure is excluded by the attempt it ended.
  A lease live with the same token at an earlier kill is that kill's. A lease with more than
  ``attempt_lease_s`` left is a dispatch no worker had taken yet; its age is ``dispatch_lease_s`` less
  what it has left. One older than 2 s is a *stranded dispatch* (its Celery message is lost: workers
  take a message within milliseconds when they have threads free), listed apart with the fault just
  before it was sent and how long after it the job was sent;
- re-sent after: from the kill (outage: from the end of the failed attempt) to the start of the
  job's next attempt (``started_at`` = finished - the call's latency, from the store); median and
  max over the affected jobs (target for a worker or api kill: <= 10 s); jobs never re-sent are listed;
- copilot calls of a window: those answered (or given up) in it, so a call in flight at a fault is
  that fault's; new interactive calls succeed again after: 0 when none of them sent after the fault
  failed; else from the fault to the sending of the first successful call after the last failed one;
- back after: scheduler, from the kill until the standby holds the leader lease (read every 10 ms,
  target <= 2 s); Redis, until the empty one answers; worker and api, until the replacement started;
- admission resumed after (scheduler, Redis): from the kill to the first admission of a batch-lane job
  recorded in the store (``admitted_at``; only a scheduler admits batch jobs) after the role was back;
- dropped callers (api): copilot calls whose connection dropped mid-call; answered: how many got
  their answer by asking again with the same Idempotency-Key, and when the last one did.

Streaming callers (``ops.chaos.streams``, around the worker's kill), each by how it ended: *full answer*
(its dialect's last event, and the text read is its job's stored answer), *error event* (a clean
error in its dialect), *wrong answer* (a last event, but not the stored text), *cut off* (the
connection ended without either), *hang* (neither within ``stream_wait_s``); targets: no wrong
answer, cut off or hang. *Open at the kill*: sent before it, ended after it; *mid-stream*: its first
content came before the kill; *in the killed worker*: its job is among the kill's affected jobs.
*Billed twice*: its job among the duplicate charges above.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from ops.chaos.plan import BREAKER, FALLBACK, FALLBACK_MODEL
from ops.chaos.run import KillSeen, Observed
from ops.storm.metrics import pct
from ops.storm.scenario import DEPLOYMENT, MODEL
from ops.storm.streamed import answer_text
from shared.breaker import Transition
from shared.config import AdmissionConfig
from shared.db.models import TERMINAL_STATUSES

ATTEMPT_LEASE_MS = AdmissionConfig().attempt_lease_s * 1000  # longer left: a dispatch no worker took yet
DISPATCH_LEASE_MS = AdmissionConfig().dispatch_lease_s * 1000
STRANDED_S = 2.0  # a dispatch no worker took this long after it was sent (with threads free): its message is lost
SLIDING_S = 3.0  # the window of the primary's rate after the outage
STEP_S = 0.25
REFUSED = "queue_unavailable"


def summarize(obs: Observed) -> dict[str, Any]:
    return {"jobs": outcomes(obs), "charges": charges(obs), "callers_failed": callers_failed(obs),
            "streams": streams(obs),
            "faults": faults(obs), "stranded_dispatches": stranded(obs), "dead_provider": dead_provider(obs),
            "recovery": recovery(obs), "fallback": fallback(obs), "copilot": copilot(obs),
            "database": obs.database,
            "crashes": [{"role": c.role, "pid": c.pid, "exit_code": c.exit_code, "at_s": round(c.at - obs.t0, 1)}
                        for c in obs.crashes],
            "t0": obs.t0,
            "events": {k: round(v - obs.t0, 2) for k, v in obs.events.items()},
            "breaker_log": [{"deployment": t.deployment, "from": t.from_state, "to": t.to_state,
                             "at_s": round(t.at - obs.t0, 3), "reason": t.reason} for t in obs.watched.transitions]}


# -- jobs ------------------------------------------------------------------------------------------

def _reason(error: dict[str, Any] | None) -> str:
    """A failed job's reason: its error type, and why the gateway stopped trying."""
    error = error or {}
    message = str(error.get("message", ""))
    why = next((label for needle, label in (("retry budget", "retry budget exhausted"),
                                             ("gave up after", "attempt cap"), ("deadline", "deadline"),
                                             ("not retryable", "not retryable")) if needle in message), "")
    return f"{error.get('type', 'unknown')}{': ' + why if why else ''}"


def outcomes(obs: Observed) -> dict[str, Any]:
    refused = [j for j in obs.jobs if (j["error"] or {}).get("type") == REFUSED]
    accepted = [j for j in obs.jobs if j not in refused]
    in_store = {j["id"] for j in obs.jobs}
    answered = (set(obs.submitted) | {c.job_id for c in obs.calls if c.job_id and c.status in (200, 202)}
                | {c.got.job_id for c in obs.streams if c.got.job_id and c.got.status == 200})
    missing = sorted(answered - in_store)
    open_jobs = [j["id"] for j in accepted if j["status"] not in TERMINAL_STATUSES]
    by_status = Counter(j["status"] for j in accepted)
    failed = Counter(_reason(j["error"]) for j in accepted if j["status"] == "failed")
    return {
        "accepted": len(accepted), "by_lane": dict(Counter(j["lane"] for j in accepted)),
        "succeeded": by_status["succeeded"], "failed": by_status["failed"], "failed_by_reason": dict(failed),
        "expired": by_status["expired"], "cancelled": by_status["cancelled"],
        "lost": len(open_jobs) + len(missing), "lost_open": open_jobs[:20], "lost_missing": missing[:20],
        "drained": obs.drained,
        "refused_at_submit": {"backlog (api answered 429/503)": obs.refused_at_submit,
                              "failed at once, queue unavailable (503)": len(refused)},
    }


# -- billing ---------------------------------------------------------------------------------------

def charges(obs: Observed) -> dict[str, Any]:
    wins: dict[str, list[dict[str, Any]]] = defaultdict(list)
    numbers = Counter((a["job_id"], a["number"]) for a in obs.attempts)
    for a in obs.attempts:
        if a["status"] == "succeeded":
            wins[a["job_id"]].append(a)
    twice = [job for job, rows in wins.items() if len(rows) > 1]
    mismatched = [j["id"] for j in obs.jobs if abs(float(j["cost_usd"] or 0) - sum(
        float(a["cost_usd"] or 0) for a in wins.get(j["id"], []))) > 1e-9]
    provider_ok = sum(m["succeeded"] for m in _final_models(obs).values())
    recorded_ok = sum(len(rows) for rows in wins.values())
    return {
        "duplicate_charges": len(twice) + sum(1 for n in numbers.values() if n > 1) + len(mismatched),
        "jobs_with_two_successes": twice[:20], "attempt_numbers_recorded_twice": sum(n > 1 for n in numbers.values()),
        "jobs_billed_not_their_attempt": mismatched[:20],
        "billed_usd": round(sum(float(j["cost_usd"] or 0) for j in obs.jobs), 6),
        "provider_successes": provider_ok, "recorded_successes": recorded_ok,
        "unrecorded_provider_calls": provider_ok - recorded_ok,
    }


def _final_models(obs: Observed) -> dict[str, dict[str, int]]:
    from ops.chaos.watch import per_model

    return per_model(obs.sim_final)


# -- the dead provider -----------------------------------------------------------------------------

def _after(moves: list[Transition], t: float, to: str) -> Transition | None:
    return next((m for m in moves if m.at >= t and m.to_state == to), None)


def _cycle(obs: Observed) -> tuple[list[Transition], Transition | None, Transition | None]:
    """The primary's transitions from the outage on, the first opening, and the closing after it."""
    moves = [m for m in obs.watched.transitions
             if m.deployment == DEPLOYMENT and m.at >= obs.events["outage_start"] - 1]
    opened = _after(moves, obs.events["outage_start"] - 1, "open")
    return moves, opened, _after(moves, opened.at, "closed") if opened else None


def dead_provider(obs: Observed) -> dict[str, Any]:
    start, end = obs.events["outage_start"], obs.events["outage_end"]
    moves, opened, closed = _cycle(obs)
    starts = sorted(a["started_at"] for a in obs.attempts if a["deployment"] == DEPLOYMENT and a["started_at"])
    sim = {"requests_to_primary_during_outage": round(_counter_delta(obs, MODEL, "requests", start, end)),
           "answered_503": round(_counter_delta(obs, MODEL, "faults", start, end))}
    if opened is None:
        return {"breaker_opened": False, "sent_during_outage": sum(start <= s < end for s in starts), **sim}
    stop = closed.at if closed else end
    half_opens = [m.at for m in moves if m.to_state == "half_open" and opened.at <= m.at < stop]
    bounds = [opened.at, *half_opens, stop]
    per_period = [sum(a <= s < b for s in starts) for a, b in zip(bounds, bounds[1:], strict=False)]
    allowed = int(BREAKER["half_open_probes"])
    probes = [min(n, allowed) for n in per_period[1:]]
    first_open = [s - opened.at for s in starts if opened.at <= s < bounds[1]]
    return {
        "breaker_opened": True, "opened_after_s": round(opened.at - start, 3),
        "closed_after_outage_end_s": round(closed.at - end, 3) if closed else None,
        "sent_before_open": sum(start <= s < opened.at for s in starts),
        "half_open_periods": len(half_opens), "probes": sum(probes), "probes_allowed_per_period": allowed,
        "attempts_per_period": per_period,
        "sent_while_open": per_period[0] + sum(n - p for n, p in zip(per_period[1:], probes, strict=True)),
        "first_open_period_starts_after_open_s": [round(d, 4) for d in first_open[:20]],
        **sim,
    }


def _cumulative(obs: Observed, model: str, name: str, t: float) -> float:
    """A simulator counter of ``model`` at wall time ``t``, interpolated between samples."""
    points = [(s["t"], s["models"].get(model, {}).get(name, 0)) for s in obs.watched.samples]
    if not points:
        return 0.0
    if t <= points[0][0]:
        return float(points[0][1])
    for (ta, a), (tb, b) in zip(points, points[1:], strict=False):
        if ta <= t <= tb:
            return a + (b - a) * ((t - ta) / (tb - ta) if tb > ta else 0.0)
    return float(points[-1][1])


def _counter_delta(obs: Observed, model: str, name: str, a: float, b: float) -> float:
    return _cumulative(obs, model, name, b) - _cumulative(obs, model, name, a)


def _rate(obs: Observed, a: float, b: float) -> float:
    return _counter_delta(obs, MODEL, "admitted", a, b) / (b - a)


# -- recovery --------------------------------------------------------------------------------------

def recovery(obs: Observed) -> dict[str, Any]:
    plan, start, end = obs.plan, obs.events["outage_start"], obs.events["outage_end"]
    before = _rate(obs, start - plan.rate_window_s, start)
    target = plan.recovered_share * before
    closed = _cycle(obs)[2]
    out: dict[str, Any] = {"primary_rps_before": round(before, 2), "target_rps": round(target, 2),
                           "breaker_closed_after_s": round(closed.at - end, 3) if closed else None}
    if closed is None:
        return {**out, "full_traffic_after_s": None}
    t, last = max(closed.at, end) + SLIDING_S, obs.watched.samples[-1]["t"] if obs.watched.samples else end
    while t <= last and _rate(obs, t - SLIDING_S, t) < target:
        t += STEP_S
    full = t - SLIDING_S / 2 if t <= last else None  # the middle of the first window that made it
    redis_at = obs.events.get("redis_killed")
    return {**out, "full_traffic_after_s": round(full - end, 2) if full else None,
            "before_redis_restart": bool(full and redis_at and full < redis_at),
            "primary_rps_next_10s": round(_rate(obs, max(closed.at, end), max(closed.at, end) + 10), 2)}


# -- fallback and the callers' view ------------------------------------------------------------------

def fallback(obs: Observed) -> dict[str, Any]:
    """Which deployment answered, overall and during the outage (every fallback is cross-provider)."""
    start, end = obs.events["outage_start"], obs.events["outage_end"]
    ok = [a for a in obs.attempts if a["status"] == "succeeded"]
    during = [a for a in ok if start <= a["started_at"] < end]
    sim = _final_models(obs)
    return {"succeeded_attempts": dict(Counter(a["deployment"] for a in ok)),
            "succeeded_during_outage": dict(Counter(a["deployment"] for a in during)),
            "provider_requests": {m: sim.get(m, {}).get("requests", 0) for m in (MODEL, FALLBACK_MODEL)},
            "provider_429s": {m: sim.get(m, {}).get("rate_limited", 0) for m in (MODEL, FALLBACK_MODEL)},
            "fallback": FALLBACK}


def windows(obs: Observed) -> list[tuple[str, float, float]]:
    """(name, start, end) of each part of the timeline: before the outage, the outage, each kill."""
    e = obs.events
    marks = [("before", obs.t0), ("outage", e["outage_start"]),
             *((seen.role, seen.killed.at) for seen in obs.kills), ("", e["traffic_stopped"])]
    return [(name, start, end) for (name, start), (_, end) in zip(marks, marks[1:], strict=False)]


def copilot(obs: Observed) -> dict[str, Any]:
    """The copilot's sync calls as its callers saw them, per window of the timeline (by when answered)."""
    return {name: _calls_in(_answered_in(obs, start, end)) for name, start, end in windows(obs)}


def _answered_in(obs: Observed, start: float, end: float) -> list[Any]:
    """The calls answered (or given up) in [start, end): a call in flight at a fault is that fault's."""
    return [c for c in obs.calls if start <= (c.done or c.sent) < end]


def _calls_in(calls: list[Any]) -> dict[str, Any]:
    ok = [c.latency_s for c in calls if c.ok and c.latency_s is not None]
    return {"calls": len(calls), "ok": len(ok), "errors": dict(Counter(c.error or str(c.status) for c in calls
                                                                        if not c.ok)),
            "p50_s": _round(statistics.median(ok) if ok else None), "p99_s": _round(pct(ok, 0.99)),
            "max_s": _round(max(ok, default=None))}


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# -- callers that saw an error while a fallback could serve -----------------------------------------

def _fallback_open(obs: Observed) -> list[tuple[float, float]]:
    """The intervals the fallback's breaker was open or half-open (from the breaker log)."""
    out, since = [], None
    for move in (m for m in obs.watched.transitions if m.deployment == FALLBACK):
        if move.to_state != "closed" and since is None:
            since = move.at
        elif move.to_state == "closed" and since is not None:
            out.append((since, move.at))
            since = None
    return out + ([(since, float("inf"))] if since is not None else [])


def _failures(obs: Observed) -> list[tuple[float, str, str]]:
    """(when, who, why) of every error a caller saw: copilot calls, and backlog jobs that ended badly."""
    calls = [(c.done or c.sent, "copilot", c.error or str(c.status)) for c in obs.calls if not c.ok]
    jobs = [(j["finished_at"] or obs.events["drain_checked"], "backlog", _reason(j["error"]))
            for j in obs.jobs if j["lane"] == "batch" and j["status"] in ("failed", "expired")]
    return sorted(calls + jobs)


def callers_failed(obs: Observed) -> dict[str, Any]:
    """Errors callers saw, split: while the fallback could serve (target 0), refusals while the
    gateway's Redis was down, and errors while the fallback's breaker was open."""
    fallback_open_at = _fallback_open(obs)
    healthy, refused, fallback_down = [], [], []
    for when, who, why in _failures(obs):
        if why == REFUSED:
            refused.append((when, who, why))
        elif any(a <= when < b for a, b in fallback_open_at):
            fallback_down.append((when, who, why))
        else:
            healthy.append((when, who, why))
    return {"while_fallback_healthy": len(healthy),
            "while_fallback_healthy_list": [{"at_s": round(w - obs.t0, 2), "who": who, "why": why}
                                            for w, who, why in healthy[:20]],
            "refused_redis_down": len(refused), "while_fallback_open": len(fallback_down)}


# -- per fault -------------------------------------------------------------------------------------

def faults(obs: Observed) -> list[dict[str, Any]]:
    """The measures of each fault over its window (see the module docstring)."""
    attempts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in obs.attempts:
        attempts[a["job_id"]].append(a)
    kills = {seen.role: seen for seen in obs.kills}
    out = []
    for name, start, end in windows(obs)[1:]:
        calls = _answered_in(obs, start, end)
        row: dict[str, Any] = {"fault": name, "at_s": round(start - obs.t0, 2),
                               "window_s": round(end - start, 1), "interactive": _calls_in(calls),
                               "ok_again_after_s": _ok_again(obs, calls, start)}
        if name == "outage":
            row.update(_resent(_outage_affected(obs, attempts), attempts))
        else:
            row.update(_kill_measures(obs, kills[name], attempts, end))
        out.append(row)
    return out


def _ok_again(obs: Observed, calls: list[Any], start: float) -> float | None:
    """0 when no call sent after the fault failed (of those answered in its window); else from the
    fault to the sending of the first successful call after the last failed one."""
    failed = [c.sent for c in calls if not c.ok and c.sent >= start]
    if not failed:
        return 0.0
    ok_after = [c.sent for c in obs.calls if c.ok and c.sent > max(failed)]
    return round(min(ok_after) - start, 2) if ok_after else None


def _outage_affected(obs: Observed, attempts: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """Jobs with a failed attempt on the primary started during the outage: job -> that attempt's end."""
    start, end = obs.events["outage_start"], obs.events["outage_end"]
    out: dict[str, float] = {}
    for job_id, rows in attempts.items():
        failed = [a["finished_at"] for a in rows if a["deployment"] == DEPLOYMENT and a["status"] == "failed"
                  and start <= a["started_at"] < end]
        if failed:
            out[job_id] = min(failed)
    return out


def _kill_affected(obs: Observed, seen: KillSeen, attempts: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """Jobs whose lease passed to a new dispatch with no attempt ending between the kill and then; a
    lease already live (same token) at an earlier kill is that kill's, a stranded dispatch nobody's."""
    at = seen.killed.at
    earlier = {(j, t) for before in obs.kills if before.killed.at < at for j, t in before.leases.items()}
    return {job_id: at for job_id, new in seen.new_token_at.items()
            if (job_id, seen.leases[job_id]) not in earlier and _stranded_at(seen, job_id) is None
            and not any(at < (a["finished_at"] or 0) <= new for a in attempts.get(job_id, []))}


def _granted_at(seen: KillSeen, job_id: str) -> float | None:
    """When a dispatch lease live at the kill was granted (from its time left); None for a call's lease."""
    ttl = seen.ttl_ms.get(job_id, 0)
    return None if ttl <= ATTEMPT_LEASE_MS else seen.killed.at - (DISPATCH_LEASE_MS - ttl) / 1000


def _stranded_at(seen: KillSeen, job_id: str) -> float | None:
    """When a dispatch no worker took for over STRANDED_S before the kill was sent; None otherwise."""
    granted = _granted_at(seen, job_id)
    return granted if granted is not None and granted < seen.killed.at - STRANDED_S else None


def stranded(obs: Observed) -> list[dict[str, Any]]:
    """Dispatches no worker took for more than STRANDED_S (seen at any kill): when sent, the fault just
    before, and when the job's next attempt started (from the dispatch)."""
    attempts: dict[str, list[float]] = defaultdict(list)
    for a in obs.attempts:
        attempts[a["job_id"]].append(a["started_at"])
    found: dict[tuple[str, str], float] = {}
    for seen in obs.kills:
        for job_id, token in seen.leases.items():
            if (granted := _stranded_at(seen, job_id)) is not None:
                found.setdefault((job_id, token), granted)
    marks = [("outage", obs.events["outage_start"]), *((k.role, k.killed.at) for k in obs.kills)]
    out = []
    for (job_id, _), granted in sorted(found.items(), key=lambda item: item[1]):
        before = [(name, t) for name, t in marks if t <= granted]
        sent = min((t for t in attempts[job_id] if t >= granted), default=None)
        out.append({"job": job_id, "dispatched_at_s": round(granted - obs.t0, 2),
                    "after": f"{before[-1][0]} +{granted - before[-1][1]:.2f} s" if before else None,
                    "sent_after_s": _round(sent - granted if sent else None, 2)})
    return out


def _resent(affected: dict[str, float], attempts: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """From each affected job's moment (the kill, or its failed attempt's end) to its next attempt's start."""
    after: list[float] = []
    never: list[str] = []
    for job_id, since in affected.items():
        nxt = min((a["started_at"] for a in attempts.get(job_id, []) if a["started_at"] >= since), default=None)
        if nxt is None:
            never.append(job_id)
        else:
            after.append(nxt - since)
    return {"affected_jobs": len(affected), "resent": len(after), "not_resent": never[:20],
            "resent_after_s": {"median": _round(statistics.median(after) if after else None, 2),
                               "max": _round(max(after, default=None), 2)}}


def _kill_measures(obs: Observed, seen: KillSeen, attempts: dict[str, list[dict[str, Any]]],
                   end: float) -> dict[str, Any]:
    at = seen.killed.at
    row: dict[str, Any] = {"pid": seen.killed.pid, "detail": seen.killed.detail,
                           "leases_live_at_kill": len(seen.leases), "queued_at_kill": seen.queued,
                           "back_after_s": _round(seen.back_at - at if seen.back_at else None, 2),
                           "dispatches_not_taken_at_kill": sum(ttl > ATTEMPT_LEASE_MS for ttl in seen.ttl_ms.values()),
                           **_resent(_kill_affected(obs, seen, attempts), attempts)}
    if seen.role in ("scheduler", "redis"):
        back = max(at, seen.back_at or at)  # a round the old leader, or Redis, finished is not a resumption
        admitted = [j["admitted_at"] for j in obs.jobs if j["lane"] == "batch" and (j["admitted_at"] or 0) > back]
        row["admission_resumed_after_s"] = _round(min(admitted) - at if admitted else None, 2)
    if seen.role == "scheduler":
        row["new_leader"] = seen.new_leader
    dropped = [c for c in obs.calls if c.dropped is not None and at <= c.dropped < end]
    if seen.role == "api" or dropped:
        answered = [c.done - at for c in dropped if c.ok and c.done]
        row["dropped_callers"] = {"dropped": len(dropped), "answered": len(answered),
                                  "last_answered_after_s": _round(max(answered, default=None), 2)}
    return row


# -- streaming callers -------------------------------------------------------------------------------

def _stream_outcome(obs: Observed, call: Any) -> str:
    if call.failure == "hang":
        return "hang"
    if call.failure or call.got.ended is None:
        return "cut off"
    if call.got.ended == "error":
        return "error event"
    answer = answer_text(obs.stream_answers.get(call.got.job_id or ""))
    return "full answer" if answer is not None and answer == call.got.content else "wrong answer"


def _error_label(call: Any) -> str:
    """The error's code (OpenAI's body), else its type and the start of its message (Anthropic's has no code)."""
    error = call.got.error or {}
    if error.get("code"):
        return str(error["code"])
    return f"{error.get('type') or call.failure}: {str(error.get('message', ''))[:40]}".rstrip(": ")


def streams(obs: Observed) -> dict[str, Any]:
    """The streaming callers by how they ended, overall and those open at the worker's kill."""
    kill = next((k for k in obs.kills if k.role == "worker"), None)
    at = kill.killed.at if kill else float("inf")
    attempts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in obs.attempts:
        attempts[a["job_id"]].append(a)
    in_killed = set(_kill_affected(obs, kill, attempts)) if kill else set()
    bill = charges(obs)
    twice = set(bill["jobs_with_two_successes"]) | set(bill["jobs_billed_not_their_attempt"])
    rows = [(c, _stream_outcome(obs, c)) for c in obs.streams]
    open_at = [(c, o) for c, o in rows if c.sent <= at < (c.done or float("inf"))]
    mid = [(c, o) for c, o in open_at if c.got.first_content is not None and c.got.first_content <= at]
    killed = [(c, o) for c, o in open_at if c.got.job_id in in_killed]
    first = [c.got.first_content - c.sent for c, _ in rows if c.got.first_content]
    return {
        "opened": len(rows), "by_outcome": dict(Counter(o for _, o in rows)),
        "errors": dict(Counter(_error_label(c) for c, o in rows if o != "full answer")),
        "open_at_worker_kill": len(open_at), "mid_stream_at_kill": dict(Counter(o for _, o in mid)),
        "in_killed_worker": dict(Counter(o for _, o in killed)),
        "killed_worker_ended_after_s": _round(max((c.done - at for c, _ in killed if c.done), default=None), 2),
        "billed_twice": sum(c.got.job_id in twice for c, _ in rows),
        "first_content_p50_s": _round(pct(first, 0.5)), "first_content_p99_s": _round(pct(first, 0.99)),
        "bad": sum(o in ("wrong answer", "cut off", "hang") for _, o in rows),
    }
