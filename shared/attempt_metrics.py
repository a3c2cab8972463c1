"""What every attempt did, counted in Redis by whichever process ran it, read by any api's /metrics.

Attempts run in Celery workers and in the api processes (the fast lane), several of each. Counters
kept per process would each need a scrape target and would reset with every restart; kept in Redis
they are one shared truth that every api replica reports the same, as the budget gauges are. The
process that ends an attempt adds them to the round trip it makes anyway (``execution.attempt._finish``).

    gateway_attempts_total{deployment, status}             attempts by outcome (succeeded, or the error kind)
    gateway_attempt_seconds{deployment}                    histogram of the provider call's length
    gateway_tokens_total{deployment, direction}            tokens the provider billed (in, out)
    gateway_cost_usd_total{tenant, feature, deployment}    what the attempts cost
    gateway_tenant_attempts_total{tenant, feature, lane, status}   whose attempts they were
    gateway_tenant_tokens_total{tenant, feature, direction}        whose tokens the provider billed
    gateway_retries_total{deployment, decision}            what each failure led to: retry, or why not
                                                           (budget_exhausted, attempts_exhausted, ...)
    gateway_route_attempts_total{task, tier, result}       routed attempts: answered, escalated or failed

Failures are also counted per minute (``recent``), for the console's "429s and retries per minute":
a hash per minute that lives three minutes, written only when an attempt fails.

The counters restart from zero if Redis is emptied, which Prometheus reads as a counter reset.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from shared.keys import Keys

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
RECENT_TTL_S = 180
_SEP = "\t"  # between label values in a hash field: no deployment, tenant or feature name holds a tab


def count_into(pipe: Any, keys: Keys, *, deployment: str, tenant: str, feature: str, status: str,
               latency_s: float, lane: str = "", tokens_in: int = 0, tokens_out: int = 0, cost_usd: float = 0.0,
               retry: str | None = None, now: float | None = None) -> None:
    """Add one attempt's counts to ``pipe`` (a few HINCRBYs on a few hashes). ``retry``: the retry
    decision's code when the attempt failed."""
    pipe.hincrby(keys.attempt_metrics("attempts"), _SEP.join((deployment, status)), 1)
    pipe.hincrby(keys.attempt_metrics("tenant_attempts"), _SEP.join((tenant, feature, lane, status)), 1)
    bucket = next((b for b in LATENCY_BUCKETS_S if latency_s <= b), math.inf)
    latency = keys.attempt_metrics("latency")
    pipe.hincrby(latency, _SEP.join((deployment, repr(bucket))), 1)
    pipe.hincrbyfloat(latency, _SEP.join((deployment, "sum")), latency_s)
    if tokens_in or tokens_out:
        tokens = keys.attempt_metrics("tokens")
        pipe.hincrby(tokens, _SEP.join((deployment, "in")), tokens_in)
        pipe.hincrby(tokens, _SEP.join((deployment, "out")), tokens_out)
        tenant_tokens = keys.attempt_metrics("tenant_tokens")
        pipe.hincrby(tenant_tokens, _SEP.join((tenant, feature, "in")), tokens_in)
        pipe.hincrby(tenant_tokens, _SEP.join((tenant, feature, "out")), tokens_out)
    if cost_usd:
        pipe.hincrbyfloat(keys.attempt_metrics("cost"), _SEP.join((tenant, feature, deployment)), cost_usd)
    if retry is not None:
        pipe.hincrby(keys.attempt_metrics("retries"), _SEP.join((deployment, retry)), 1)
    if status != "succeeded":
        _count_recent(pipe, keys, now or time.time(), deployment, status, retry)


def _count_recent(pipe: Any, keys: Keys, now: float, deployment: str, status: str, retry: str | None) -> None:
    """This minute's failures by kind and retry decision, per deployment."""
    minute = keys.recent_failures(int(now // 60))
    pipe.hincrby(minute, _SEP.join(("status", status, deployment)), 1)
    if retry is not None:
        pipe.hincrby(minute, _SEP.join(("retry", retry, deployment)), 1)
    pipe.expire(minute, RECENT_TTL_S)


def recent(client: Any, keys: Keys, now: float | None = None) -> dict[str, dict[str, dict[str, int]]]:
    """The last complete minute's and this minute's failures: ``{"previous"|"current": {"status:rate_limit"
    | "retry:budget_exhausted" ...: {deployment: count}}}``, in one round trip."""
    minute = int((now or time.time()) // 60)
    with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.recent_failures(minute - 1))
        pipe.hgetall(keys.recent_failures(minute))
        previous, current = (_decoded(h) for h in pipe.execute())
    return {"previous": _by_what(previous), "current": _by_what(current)}


def _by_what(counts: dict[str, str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for field, value in counts.items():
        group, what, deployment = field.split(_SEP)
        out.setdefault(f"{group}:{what}", {})[deployment] = int(value)
    return out


def count_route_into(pipe: Any, keys: Keys, *, task: str, tier: str, result: str) -> None:
    """Add one routed attempt's result (answered, escalated, failed) on its task's tier to ``pipe``."""
    pipe.hincrby(keys.attempt_metrics("routes"), _SEP.join((task, tier, result)), 1)


def collect(client: Any, keys: Keys) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
    """The four metric families, read from Redis in one round trip."""
    with client.pipeline(transaction=False) as pipe:
        for name in ("attempts", "latency", "tokens", "cost", "tenant_attempts", "tenant_tokens", "retries", "routes"):
            pipe.hgetall(keys.attempt_metrics(name))
        attempts, latency, tokens, cost, tenant_attempts, tenant_tokens, retries, routes = (
            _decoded(h) for h in pipe.execute())

    yield _counter("gateway_attempts", "Provider attempts by outcome (succeeded, or the error kind)",
                   ["deployment", "status"], attempts)

    histogram = HistogramMetricFamily("gateway_attempt_seconds", "Length of provider calls",
                                      labels=["deployment"])
    per_deployment: dict[str, dict[str, float]] = {}
    for field, value in latency.items():
        deployment, part = field.rsplit(_SEP, 1)
        per_deployment.setdefault(deployment, {})[part] = float(value)
    for deployment, parts in sorted(per_deployment.items()):
        running, buckets = 0.0, []
        for bound in (*LATENCY_BUCKETS_S, math.inf):
            running += parts.get(repr(bound), 0.0)
            buckets.append(("+Inf" if bound == math.inf else repr(bound), running))
        histogram.add_metric([deployment], buckets, parts.get("sum", 0.0))
    yield histogram

    yield _counter("gateway_tokens", "Tokens providers billed, by direction", ["deployment", "direction"], tokens)
    yield _counter("gateway_cost_usd", "What attempts cost in USD, by tenant, feature and deployment",
                   ["tenant", "feature", "deployment"], cost)
    yield _counter("gateway_tenant_attempts", "Provider attempts by tenant, feature, lane and outcome",
                   ["tenant", "feature", "lane", "status"], tenant_attempts)
    yield _counter("gateway_tenant_tokens", "Tokens providers billed, by tenant, feature and direction",
                   ["tenant", "feature", "direction"], tenant_tokens)
    yield _counter("gateway_retries", "Failed attempts by what followed: retry or fallback (to an untried "
                   "deployment), or why not (budget_exhausted, attempts_exhausted, not_retryable, past_deadline)",
                   ["deployment", "decision"], retries)
    yield _counter("gateway_route_attempts", "Attempts of routed jobs (model auto) by task, tier and result: "
                   "answered, escalated (the answer failed a check: escalated / all is the escalation rate) or "
                   "failed", ["task", "tier", "result"], routes)


def _counter(name: str, documentation: str, labels: list[str], values: dict[str, str]) -> CounterMetricFamily:
    """A counter family from one hash: each field holds the label values, joined by ``_SEP``."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for field, value in sorted(values.items()):
        family.add_metric(field.split(_SEP), float(value))
    return family


def _decoded(raw: dict[Any, Any]) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()}
