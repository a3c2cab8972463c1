"""From a run's raw facts to the numbers the issue asks for; every definition is here.

- accepted: jobs of the run in the result store (the api commits the row before it answers), less
  those it failed at once with ``queue_unavailable`` (Redis down: the caller got a 503 and was told
  the job was not accepted); every id an api answer carried must be among them;
- lost: an accepted job not terminal when the drain ended, or an id an api answer carried that is
  missing from the store (target 0);
- duplicate charges: a job with more than one succeeded attempt, an attempt number recorded twice,
  or a job whose billed cost is not its one succeeded attempt's cost (target 0);
- unrecorded provider calls: calls the simulator answered with success that no attempt row records
  (killed mid-call, or sent twice after Redis forgot a lease): paid to the provider, billed to nobody;
- sent to the dead provider: attempt rows on the primary by start time. Before the breaker first
  opened they are the cost of detection; from then until it closed, each half-open period may let
  ``half_open_probes`` through (counted from its start to the next half-open, so a probe that starts
  just after a sibling probe re-opened the breaker is still a probe); the rest, and anything that
  started in the first open period, was sent while the breaker was open (target 0). The simulator's
  own count of requests to the primary's model during the outage is given beside it;
- recovery: from the outage's end until the breaker has closed and the primary's accepted requests
  per second (simulator, over a sliding window) are back to ``recovered_share`` of their rate over the
  ``rate_window_s`` before the outage.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from ops.chaos.plan import BREAKER, FALLBACK, FALLBACK_MODEL
from ops.chaos.run import Observed
from ops.storm.metrics import pct
from ops.storm.scenario import DEPLOYMENT, MODEL
from shared.breaker import Transition
from shared.db.models import TERMINAL_STATUSES

SLIDING_S = 3.0  # the window of the primary's rate after the outage
STEP_S = 0.25
REFUSED = "queue_unavailable"


def summarize(obs: Observed) -> dict[str, Any]:
    return {"jobs": outcomes(obs), "charges": charges(obs), "dead_provider": dead_provider(obs),
            "recovery": recovery(obs), "fallback": fallback(obs), "copilot": copilot(obs),
            "crashes": [{"role": c.role, "pid": c.pid, "exit_code": c.exit_code, "at_s": round(c.at - obs.t0, 1)}
                        for c in obs.crashes],
            "t0": obs.t0,
            "events": {k: round(v - obs.t0, 2) if k != "worker_pid" else v for k, v in obs.events.items()},
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
    answered = set(obs.submitted) | {c.job_id for c in obs.calls if c.job_id and c.status in (200, 202)}
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


def _phase_of(obs: Observed, t: float) -> str:
    e = obs.events
    if t < e["outage_start"]:
        return "1 before the outage"
    if t < e["outage_end"]:
        return "2 during the outage"
    if t < e.get("redis_killed", float("inf")):
        return "3 after the outage"
    return "4 from the Redis restart"


def copilot(obs: Observed) -> dict[str, Any]:
    """The copilot's sync calls as its callers saw them, per phase of the timeline."""
    phases: dict[str, list[Any]] = defaultdict(list)
    for call in obs.calls:
        phases[_phase_of(obs, call.sent)].append(call)
    out: dict[str, Any] = {}
    for phase in sorted(phases):
        calls = phases[phase]
        ok = [c.latency_s for c in calls if c.ok and c.latency_s is not None]
        errors = Counter(c.status for c in calls if not c.ok)
        out[phase] = {"calls": len(calls), "ok": len(ok), "statuses": dict(errors),
                      "p50_s": _round(statistics.median(ok) if ok else None), "p99_s": _round(pct(ok, 0.99)),
                      "max_s": _round(max(ok, default=None)), "over_30s": sum(v > 30 for v in ok)}
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
