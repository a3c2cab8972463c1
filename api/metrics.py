"""Prometheus metrics. Budget levels, queue depths and the attempt counters (``shared.attempt_metrics``)
are read from Redis at scrape time, so every api replica reports the same shared truth and nothing
drifts between scrapes; the counters below are this process's own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from shared import attempt_metrics

SUBMITTED = Counter("gateway_jobs_submitted_total", "Jobs accepted by the api", ["lane", "admitted_inline"])
FAST_LANE_SENT = Counter("gateway_fast_lane_sent_total", "Fast-lane first attempts, by who sent them: the api "
                         "itself or a Celery worker (Flower shows only the latter)", ["by"])
SHED = Counter("gateway_jobs_shed_total", "Jobs refused before queueing", ["reason"])
AUTH_FAILURES = Counter("gateway_auth_failures_total", "Refused authentications, by reason (missing_api_key, "
                        "invalid_api_key, revoked_api_key, tenant_disabled, throttled)", ["reason"])
CACHE_BYPASSED = Counter("gateway_cache_bypassed_total", "Requests the cache was not asked about, by why: off, "
                         "no-store, no-cache, temperature (sampling), n", ["reason"])
SYNC_WAIT = Histogram("gateway_sync_wait_seconds", "Time sync callers waited for their job",
                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))


class BudgetCollector(Collector):
    def __init__(self, gateway: Any) -> None:
        self.gw = gateway

    def collect(self) -> Iterator[Metric]:
        from api.routes.admin import budget_snapshot

        try:
            snap = budget_snapshot(self.gw)
        except Exception:  # Redis down: /readyz says so; metrics stay scrapeable
            return
        level = GaugeMetricFamily("gateway_budget_level", "Units left in a budget bucket", labels=["bucket"])
        cap = GaugeMetricFamily("gateway_budget_capacity", "Capacity of a budget bucket", labels=["bucket"])
        reserved = GaugeMetricFamily("gateway_budget_reserved", "Reserved on a bucket", labels=["bucket"])
        for b in snap["buckets"]:
            level.add_metric([b["key"]], b["level"])
            cap.add_metric([b["key"]], b["capacity"])
            reserved.add_metric([b["key"]], b["reserved"])
        depth = GaugeMetricFamily("gateway_queue_depth", "Jobs waiting for admission", labels=["lane", "tenant"])
        for lane, q in snap["queues"].items():
            for tenant, n in q["tenants"].items():
                depth.add_metric([lane, tenant], n)
        yield from (level, cap, reserved, depth)
        try:
            families = list(attempt_metrics.collect(self.gw.redis, self.gw.keys))
        except Exception:  # Redis down: as above
            return
        yield from families
        try:
            yield from cache_families(self.gw.attempts.cache.counters())
        except Exception:  # the cache's Redis down: as above
            return


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
