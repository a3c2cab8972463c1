"""Prometheus metrics. Budget levels, queues, breakers, live processes and the attempt counters
(``shared.attempt_metrics``) are read from Redis at scrape time, so every api replica reports the same
shared truth and nothing drifts between scrapes; the counters below are this process's own.

Budget gauges are labelled by what the bucket limits (``Scope.labels``: level, deployment, axis,
lane, tenant, feature, limit), never by its Redis key, so dashboards and alerts can sum and filter them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import attempt_metrics
from shared.budget import alerts as budget_alerts
from shared.heartbeats import Heartbeats

SUBMITTED = Counter("gateway_jobs_submitted_total", "Jobs accepted by the api", ["lane", "admitted_inline"])
FAST_LANE_SENT = Counter("gateway_fast_lane_sent_total", "Fast-lane first attempts, by who sent them: the api "
                         "itself or a Celery worker (Flower shows only the latter)", ["by"])
SHED = Counter("gateway_jobs_shed_total", "Jobs refused before queueing", ["reason"])
AUTH_FAILURES = Counter("gateway_auth_failures_total", "Refused authentications, by reason (missing_api_key, "
                        "invalid_api_key, revoked_api_key, tenant_disabled, throttled)", ["reason"])
REDACTED = Counter("gateway_redactions_total", "Sensitive values found at acceptance, by detector and what was "
                   "done (mask, tokenize, block)", ["detector", "action"])
SCREENED = Counter("gateway_screen_total", "Calls through the prompt-injection screen, by verdict (clean, flagged, "
                   "blocked)", ["verdict"])
CACHE_BYPASSED = Counter("gateway_cache_bypassed_total", "Requests the cache was not asked about, by why: off, "
                         "no-store, no-cache, temperature (sampling), n", ["reason"])
SYNC_WAIT = Histogram("gateway_sync_wait_seconds", "Time sync callers waited for their job",
                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
HTTP_REQUESTS = Counter("gateway_http_requests_total", "HTTP requests the api answered, by route template, "
                        "method and status", ["route", "method", "status"])
HTTP_SECONDS = Histogram("gateway_http_request_seconds", "Time from a request's arrival to the end of its answer, "
                         "by route template", ["route", "method"],
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120))
BREAKER_STATES = ("closed", "open", "half_open")
SCOPE_LABELS = ["level", "deployment", "axis", "lane", "tenant", "feature", "limit"]


class HttpMetrics:
    """ASGI middleware: one count and one latency observation per request, labelled by the route's
    template (``/v1/jobs/{job_id}``), never the raw path, so callers cannot grow the label space."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            template = getattr(scope.get("route"), "path", None) or "unrouted"
            count, seconds = _http_series(template, scope.get("method", ""), status)
            count.inc()
            seconds.observe(time.perf_counter() - started)


@functools.lru_cache(maxsize=4096)  # bounded: templates x methods x statuses
def _http_series(template: str, method: str, status: int) -> tuple[Any, Any]:
    """The labelled children of one route, method and status (``labels()`` costs a lock and a lookup)."""
    return HTTP_REQUESTS.labels(template, method, str(status)), HTTP_SECONDS.labels(template, method)


class BudgetCollector(Collector):
    def __init__(self, gateway: Any) -> None:
        self.gw = gateway

    def collect(self) -> Iterator[Metric]:
        try:
            families = [*self._budgets(), *self._queues(), *self._breakers(), *self._processes()]
        except Exception:  # Redis down: /readyz says so; metrics stay scrapeable
            return
        yield from families
        try:
            families = [*attempt_metrics.collect(self.gw.redis, self.gw.keys),
                        *budget_alerts.collect(self.gw.redis, self.gw.keys)]
        except Exception:  # Redis down: as above
            return
        yield from families
        try:
            yield from cache_families(self.gw.attempts.cache.counters())
        except Exception:  # the cache's Redis down: as above
            return


    def _budgets(self) -> Iterator[Metric]:
        from api.overview import bucket_levels

        level = GaugeMetricFamily("gateway_budget_level", "Units left in a budget bucket", labels=SCOPE_LABELS)
        cap = GaugeMetricFamily("gateway_budget_capacity", "Capacity of a budget bucket", labels=SCOPE_LABELS)
        reserved = GaugeMetricFamily("gateway_budget_reserved", "Units reserved on a bucket by attempts not yet "
                                     "settled", labels=SCOPE_LABELS)
        for b in bucket_levels(self.gw):
            values = [b["scope"].get(name, "") for name in SCOPE_LABELS]
            level.add_metric(values, b["level"])
            cap.add_metric(values, b["capacity"])
            reserved.add_metric(values, b["reserved"])
        yield from (level, cap, reserved)

    def _queues(self) -> Iterator[Metric]:
        from api.overview import queue_depths

        depth = GaugeMetricFamily("gateway_queue_depth", "Jobs waiting for admission", labels=["lane", "tenant"])
        age = GaugeMetricFamily("gateway_queue_oldest_age_seconds", "How long the oldest waiting job of a lane x "
                                "tenant queue has waited", labels=["lane", "tenant"])
        for row in queue_depths(self.gw):
            depth.add_metric([row["lane"], row["tenant"]], row["waiting"])
            if row["oldest_age_s"] is not None:
                age.add_metric([row["lane"], row["tenant"]], row["oldest_age_s"])
        deadline = GaugeMetricFamily("gateway_lane_deadline_seconds", "A lane's default deadline (config)",
                                     labels=["lane"])
        for lane, cfg in self.gw.settings.lanes.items():
            deadline.add_metric([str(lane)], cfg.deadline_s)
        yield from (depth, age, deadline)

    def _breakers(self) -> Iterator[Metric]:
        state = GaugeMetricFamily("gateway_breaker_state", "1 for the state each deployment's breaker is in",
                                  labels=["deployment", "state"])
        states = self.gw.admitter.breakers.states([d.name for d in self.gw.settings.deployments])
        for deployment, view in states.items():
            for name in BREAKER_STATES:
                state.add_metric([deployment, name], 1.0 if view["state"] == name else 0.0)
        yield state

    def _processes(self) -> Iterator[Metric]:
        alive = GaugeMetricFamily("gateway_processes_alive", "Workers and schedulers that beat in the last 20 s",
                                  labels=["kind"])
        for kind, names in Heartbeats(self.gw.redis, self.gw.keys).alive().items():
            alive.add_metric([kind], len(names))
        leader = GaugeMetricFamily("gateway_scheduler_leader", "1 while a scheduler holds the leader lease")
        leader.add_metric([], 1.0 if self.gw.redis.get(self.gw.keys.leader) else 0.0)
        yield from (alive, leader)



def cache_families(counters: dict[str, str]) -> Iterator[Metric]:
    """The cache's counters, kept in Redis by the lookups (``shared/lua/cache_lookup.lua``): every api
    replica reports the same totals."""
    lookups = CounterMetricFamily("gateway_cache_lookups", "Cache lookups by outcome: hit (exact), semantic, miss",
                                  labels=["tenant", "feature", "result"])
    saved = CounterMetricFamily("gateway_cache_saved_usd", "What the answers served from the cache had cost",
                                labels=["tenant", "feature"])
    for field, value in sorted(counters.items()):
        tenant, feature, what = field.split("\t")
        if what == "saved":
            saved.add_metric([tenant, feature], float(value))
        else:
            lookups.add_metric([tenant, feature, what], float(value))
    yield from (lookups, saved)


def install_collector(gateway: Any) -> None:
    for existing in list(getattr(REGISTRY, "_collector_to_names", {})):
        if isinstance(existing, BudgetCollector):
            REGISTRY.unregister(existing)
    REGISTRY.register(BudgetCollector(gateway))
