"""From raw observations to the numbers the issue asks for, the same definitions for every mode.

- provider 429s: the simulator's own count (``/sim/stats`` totals, by reason);
- copilot before / during: calls sent before the storm, and from the storm until the backlog drained;
  success = the caller got a 200 in the end (after its retries, in the direct mode), and for a streamed
  call the dialect's last event (``[DONE]``) rather than an error event; latencies are of successful
  calls, as the caller saw them (retries and waits included), a streamed call's until its last event.
  Streamed calls are also shown apart: time to first content (request sent -> first content delta)
  and total latency;
- TPM utilisation: tokens the provider's meter accepted (all traffic) per minute, over the TPM limit,
  from the moment the account's burst allowance is spent (its bucket first below 20% after the storm)
  until the last backlog job was accepted; before that moment the meter lets a burst through on top of
  the rate, which would read as more than 100%. The whole window from the storm is kept in the JSON;
- drain time: storm until the last backlog job ended, against backlog tokens / TPM, against
  backlog tokens / (TPM - the copilot's average use), and against the physical minimum, the best any
  scheduler could do while the copilot runs: the provider's full bucket (TPM x burst window / 60) at
  once, the rest at its refill less the copilot's use, (backlog - TPM x burst / 60) / ((TPM - copilot
  TPM) / 60) (``Scenario.physical_min_s``);
- fairness: Jain's index of the tokens each summarizer got accepted while they competed: from the
  moment every one of them had a job accepted (its backlog was in the queues: their uploads end at
  different moments) until the first of them had its last job accepted. A backlog accepted whole
  from the idle burst never competed for a spent meter and is left out. (Counting from the end of
  the burst instead left a window of a fraction of a second, a handful of jobs.)
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from ops.storm.run import Observed
from ops.storm.scenario import COPILOT, DEPLOYMENT, MODEL, SUMMARIZER, Scenario
from ops.storm.traffic import Call
from shared import pricing
from shared.config import DeploymentConfig

BURST_SPENT = 0.2  # the meter counts as spent below this share of its capacity
TOKEN_AXIS = "tokens"  # the simulator's name for the TPM bucket


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def jain(values: list[float]) -> float | None:
    """(sum x)^2 / (n * sum x^2): 1 when all equal, 1/n when one takes everything."""
    squares = sum(v * v for v in values)
    return (sum(values) ** 2) / (len(values) * squares) if values and squares else None


@dataclass
class _Usage:
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0


def call_cost(call: Call) -> float:
    """USD of a call the direct mode made itself, priced like the gateway prices an attempt."""
    dep = DeploymentConfig(name=DEPLOYMENT, provider="sim-openai", model=MODEL)
    return pricing.cost_usd(dep, "openai", _Usage(call.tokens_in, call.tokens_out))


# -- provider side -----------------------------------------------------------------------------------

def provider_series(obs: Observed) -> list[dict[str, float]]:
    """Cumulative accepted tokens and 429s at the provider over wall time (the simulator's samples)."""
    out = []
    for point in obs.sim.get("series", []):
        totals = point["totals"]
        out.append({"t": obs.sim_t0 + point["t"], "charged": totals["charged_tokens"],
                    "r429": sum(totals["rate_limited"].values()), "in_flight": point.get("in_flight", 0)})
    return out


def burst_spent_at(obs: Observed) -> float:
    """When the provider's TPM bucket first fell below 20% of its capacity after the storm."""
    for point in obs.sim.get("series", []):
        t = obs.sim_t0 + point["t"]
        tpm = [b for b in point["buckets"] if b["axis"] == TOKEN_AXIS]
        if t >= obs.storm_at and tpm and tpm[0]["level"] < BURST_SPENT * tpm[0]["capacity"]:
            return t
    return obs.storm_at


def _cumulative_at(series: list[dict[str, float]], t: float, field: str) -> float:
    """Linear interpolation of a cumulative counter at wall time ``t``."""
    if not series:
        return 0.0
    if t <= series[0]["t"]:
        return series[0][field]
    for a, b in zip(series, series[1:], strict=False):
        if a["t"] <= t <= b["t"]:
            share = (t - a["t"]) / (b["t"] - a["t"]) if b["t"] > a["t"] else 0.0
            return a[field] + share * (b[field] - a[field])
    return series[-1][field]


def rates(series: list[dict[str, float]], field: str) -> list[tuple[float, float]]:
    """Per-second rate of a cumulative counter between consecutive samples."""
    return [((a["t"] + b["t"]) / 2, (b[field] - a[field]) / (b["t"] - a["t"]))
            for a, b in zip(series, series[1:], strict=False) if b["t"] > a["t"]]


# -- caller side -------------------------------------------------------------------------------------

def _copilot_window(calls: list[Call], start: float, end: float) -> dict[str, Any]:
    window = [c for c in calls if c.feature == COPILOT and start <= c.sent < end]
    ok = [c.latency_s for c in window if c.ok and c.latency_s is not None]
    return {"calls": len(window), "success_rate": len(ok) / len(window) if window else None,
            "p50_s": pct(ok, 0.50), "p99_s": pct(ok, 0.99), "phases": _phases(window),
            "streamed": _streamed([c for c in window if c.streamed])}


def _streamed(window: list[Call]) -> dict[str, Any]:
    """The streamed calls of a window: success, time to first content and total latency."""
    ok = [c for c in window if c.ok and c.latency_s is not None]
    first = [c.first_content - c.sent for c in ok if c.first_content is not None]
    total = [c.latency_s for c in ok if c.latency_s is not None]
    return {"calls": len(window), "success_rate": len(ok) / len(window) if window else None,
            "errors": dict(Counter(c.error or str(c.status) for c in window if not c.ok)),
            "first_content_p50_s": pct(first, 0.5), "first_content_p99_s": pct(first, 0.99),
            "p50_s": pct(total, 0.5), "p99_s": pct(total, 0.99)}


def _phases(window: list[Call]) -> dict[str, dict[str, float | None]]:
    """Median and p99 of each step of the gateway path (gateway modes), and of the slowest 2% calls."""
    timed = [c for c in window if c.phases]
    if not timed:
        return {}
    slowest = sorted(timed, key=lambda c: c.latency_s or 0)[-max(1, len(timed) // 50):]
    names = list(timed[0].phases or {})
    return {name: {"p50": pct([(c.phases or {})[name] for c in timed], 0.5),
                   "p99": pct([(c.phases or {})[name] for c in timed], 0.99),
                   "mean_of_slowest_2pct": statistics.mean((c.phases or {})[name] for c in slowest)}
            for name in names}


def _drain(calls: list[Call], obs: Observed, scenario: Scenario) -> dict[str, Any]:
    batch = [c for c in calls if c.feature == SUMMARIZER]
    ended = [c.done for c in batch if c.done is not None]
    drained_at = max(ended) if len(ended) == len(batch) and ended else None
    accepted = [c.accepted for c in batch if c.ok and c.accepted is not None]
    best_with_copilot = scenario.backlog_tokens / ((scenario.tpm - scenario.copilot_tpm) / 60.0)
    drain_s = drained_at - obs.storm_at if drained_at else None
    return {
        "jobs": len(batch), "succeeded": sum(c.ok for c in batch), "unfinished": len(batch) - len(ended),
        "refused_at_submit": obs.refused_at_submit,
        "drain_s": drain_s, "min_s": scenario.min_drain_s, "min_with_copilot_s": best_with_copilot,
        "drain_over_min": drain_s / scenario.min_drain_s if drain_s else None,
        "drain_over_min_with_copilot": drain_s / best_with_copilot if drain_s else None,
        "physical_min_s": scenario.physical_min_s,
        "drain_over_physical_min": drain_s / scenario.physical_min_s if drain_s else None,
        "last_accepted_at": max(accepted) if accepted else None,
        "drained_at": drained_at,
    }


def _utilisation(obs: Observed, scenario: Scenario, end: float | None) -> dict[str, Any]:
    series = provider_series(obs)
    spent = burst_spent_at(obs)
    if end is None or end <= spent or not series:
        return {"window_s": None, "tpm_utilisation": None, "from_storm_tpm_utilisation": None}

    def per_limit(start: float) -> float:
        tokens = _cumulative_at(series, end, "charged") - _cumulative_at(series, start, "charged")
        return tokens / (end - start) / (scenario.tpm / 60.0)

    return {"window_s": end - spent, "burst_spent_after_s": spent - obs.storm_at, "tpm_utilisation": per_limit(spent),
            "from_storm_tpm_utilisation": per_limit(obs.storm_at)}


def _fairness(calls: list[Call], obs: Observed, scenario: Scenario) -> dict[str, Any]:
    """Among the summarizers still waiting when the burst was spent: a backlog accepted whole from the
    idle burst never competed, and is listed apart (``done_in_burst``)."""
    by_tenant: dict[str, list[Call]] = defaultdict(list)
    for c in calls:
        if c.feature == SUMMARIZER:
            by_tenant[c.tenant].append(c)
    spent = burst_spent_at(obs)
    last = {t: max((c.accepted or c.done or obs.ended_at) for c in by_tenant[t])
            for t in scenario.batch_plan if by_tenant[t]}
    competing = [t for t, end in last.items() if end > spent]
    done_in_burst = sorted(set(last) - set(competing))
    if len(competing) < 2:
        return {"window_s": None, "jain": None, "tokens": {}, "done_in_burst": done_in_burst}
    start = max(min((c.accepted for c in by_tenant[t] if c.accepted), default=obs.storm_at) for t in competing)
    end = min(last[t] for t in competing)
    if end <= start:  # one of them was done before the last one's first job was accepted: no overlap
        return {"window_s": None, "jain": None, "tokens": {}, "done_in_burst": done_in_burst}
    got = {t: float(sum(c.charged for c in by_tenant[t] if c.ok and c.accepted and start <= c.accepted <= end))
           for t in competing}
    return {"window_s": end - start, "jain": jain(list(got.values())), "tokens": got, "done_in_burst": done_in_burst}


def _costs(obs: Observed, calls: list[Call]) -> dict[str, Any]:
    rows = obs.costs
    if obs.mode == "direct":
        sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
        for c in calls:
            if c.ok:
                sums[(c.tenant, c.feature)][0] += 1
                sums[(c.tenant, c.feature)][1] += call_cost(c)
        rows = [{"tenant": t, "feature": f, "jobs": int(n), "usd": usd} for (t, f), (n, usd) in sums.items()]
    by_feature: dict[str, float] = defaultdict(float)
    for row in rows:
        by_feature[row["feature"]] += row["usd"]
    copilot_per_tenant = [r["usd"] for r in rows if r["feature"] == COPILOT]
    return {"rows": sorted(rows, key=lambda r: (r["feature"], r["tenant"])), "by_feature": dict(by_feature),
            "copilot_per_tenant": {"min": min(copilot_per_tenant, default=0.0),
                                   "median": statistics.median(copilot_per_tenant) if copilot_per_tenant else 0.0,
                                   "max": max(copilot_per_tenant, default=0.0)},
            "summarizer_per_tenant": {r["tenant"]: r["usd"] for r in rows if r["feature"] == SUMMARIZER}}


def summarize(obs: Observed, scenario: Scenario) -> dict[str, Any]:
    """The issue's numbers for one mode."""
    calls = obs.calls
    drain = _drain(calls, obs, scenario)
    during_end = drain["drained_at"] or obs.ended_at
    totals = obs.sim.get("totals", {})
    return {
        "mode": obs.mode,
        "provider": {"requests": totals.get("requests", 0), "accepted": totals.get("admitted", 0),
                     "rate_limited": sum(totals.get("rate_limited", {}).values()),
                     "rate_limited_by_reason": totals.get("rate_limited", {}),
                     "peak_in_flight": obs.sim.get("peak_in_flight")},
        "copilot_before": _copilot_window(calls, obs.t0, obs.storm_at),
        "copilot_during": _copilot_window(calls, obs.storm_at, during_end),
        "drain": drain,
        "utilisation": _utilisation(obs, scenario, drain["last_accepted_at"]),
        "fairness": _fairness(calls, obs, scenario),
        "cost": _costs(obs, calls),
        "cpu_cores": cpu_by_window(obs),
        "estimate_error": estimate_errors(calls),
    }


def estimate_errors(calls: list[Call]) -> dict[str, float | None]:
    """How far the gateway's input estimate at acceptance was from the input the provider reported,
    |estimate / reported - 1| over the backlog jobs that succeeded: percentiles (None without data)."""
    errors = sorted(abs(c.estimated_in / c.tokens_in - 1) for c in calls
                    if c.ok and c.estimated_in is not None and c.tokens_in > 0)
    if not errors:
        return {"p50": None, "p90": None, "p99": None, "jobs": 0}
    return {"p50": errors[len(errors) // 2], "p90": errors[int(len(errors) * 0.9)],
            "p99": errors[min(len(errors) - 1, int(len(errors) * 0.99))], "jobs": len(errors)}


def _cpu_cores(samples: list[dict[str, Any]], rel: float) -> dict[str, list[tuple[float, float]]]:
    """Cores each process (role) used between samples: where the machine's two cores went."""
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for a, b in zip(samples, samples[1:], strict=False):
        for role, used in b["cpu"].items():
            if role in a["cpu"] and b["t"] > a["t"]:
                out[role].append(((a["t"] + b["t"]) / 2 - rel, (used - a["cpu"][role]) / (b["t"] - a["t"])))
    return dict(out)


def cpu_by_window(obs: Observed) -> dict[str, dict[str, float]]:
    """Mean cores used per process before the storm and while the backlog drained."""
    def mean_cores(start: float, end: float) -> dict[str, float]:
        inside = [s for s in obs.samples if start <= s["t"] <= end]
        if len(inside) < 2:
            return {}
        first, last = inside[0], inside[-1]
        span = last["t"] - first["t"]
        return {role: (last["cpu"][role] - first["cpu"].get(role, 0.0)) / span for role in last["cpu"]}

    return {"before": mean_cores(obs.t0, obs.storm_at), "during": mean_cores(obs.storm_at, obs.ended_at)}


def timeline(obs: Observed) -> dict[str, Any]:
    """Series for the plot, in seconds since the mode's start."""
    series = provider_series(obs)
    rel = obs.t0
    return {
        "storm_at": obs.storm_at - rel,
        "tokens_per_s": [(t - rel, v) for t, v in rates(series, "charged")],
        "r429_per_s": [(t - rel, v) for t, v in rates(series, "r429")],
        "in_flight": [(p["t"] - rel, p["in_flight"]) for p in series],
        "queues": [{"t": s["t"] - rel, **{f"{kind}:{lane}": n for kind in ("waiting", "sent", "pending")
                                          for lane, n in s.get(kind, {}).items()}} for s in obs.samples],
        "cpu_cores": _cpu_cores(obs.samples, rel),
        "copilot": [(c.sent - rel, c.latency_s if c.ok else None) for c in obs.calls
                    if c.feature == COPILOT and c.done is not None],
    }
