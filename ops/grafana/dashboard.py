"""The Grafana dashboard of the gateway, as code: ``python -m ops.grafana.dashboard`` writes
``ops/grafana/dashboards/gateway.json`` (provisioned by docker-compose.yml; a test checks it is current).

Rows follow an operator's questions during a storm: is anything failing (429s, breakers, retries), who
is sending (tenant x feature), what waits and for how long (lane x tenant), how full the accounts are,
what it costs, and how the api itself is doing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "gateway.json"
DATASOURCE = {"type": "prometheus", "uid": "gateway-prometheus"}
WIDTH = 24


def _target(expr: str, legend: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": "A"}


def timeseries(title: str, exprs: list[tuple[str, str]], unit: str = "short", stack: bool = False,
               description: str = "") -> dict[str, Any]:
    targets = [{**_target(expr, legend), "refId": chr(ord("A") + i)} for i, (expr, legend) in enumerate(exprs)]
    return {"type": "timeseries", "title": title, "description": description, "datasource": DATASOURCE,
            "targets": targets,
            "fieldConfig": {"defaults": {"unit": unit, "custom": {"stacking": {"mode": "normal" if stack else "none"},
                                                                  "fillOpacity": 20 if stack else 0}},
                            "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def stat(title: str, expr: str, legend: str, unit: str = "short", red_below: float | None = None,
         red_above: float | None = None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if red_below is not None:
        steps = [{"color": "red", "value": None}, {"color": "green", "value": red_below}]
    if red_above is not None:
        steps.append({"color": "red", "value": red_above})
    return {"type": "stat", "title": title, "datasource": DATASOURCE, "targets": [_target(expr, legend)],
            "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
                            "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"}}


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


TENANT = 'tenant=~"$tenant"'

LAYOUT: list[tuple[dict[str, Any], int, int]] = [  # (panel, width, height)
    (row("Health"), WIDTH, 1),
    (stat("Workers alive", 'gateway_processes_alive{kind="worker"}', "workers", red_below=1), 4, 4),
    (stat("Schedulers alive", 'gateway_processes_alive{kind="scheduler"}', "schedulers", red_below=1), 4, 4),
    (stat("Scheduler leading", "gateway_scheduler_leader", "leader", red_below=1), 4, 4),
    (stat("Provider 429s (5 min)", 'sum(increase(gateway_attempts_total{status="rate_limit"}[5m]))', "429s",
          red_above=0.5), 4, 4),
    (stat("Breakers open", 'sum(gateway_breaker_state{state="open"})', "open", red_above=0.5), 4, 4),
    (stat("Jobs waiting", "sum(gateway_queue_depth)", "waiting"), 4, 4),

    (row("Failures"), WIDTH, 1),
    (timeseries("Provider 429s per second, by deployment",
                [('sum by (deployment) (rate(gateway_attempts_total{status="rate_limit"}[1m]))', "{{deployment}}")],
                unit="reqps"), 8, 8),
    (timeseries("Failed attempts per second, by kind",
                [('sum by (deployment, status) (rate(gateway_attempts_total{status!="succeeded"}[1m]))',
                  "{{deployment}} {{status}}")], unit="reqps"), 8, 8),
    (timeseries("What failures led to: retry, or why not",
                [("sum by (deployment, decision) (rate(gateway_retries_total[1m]))", "{{deployment}} {{decision}}")],
                unit="reqps"), 8, 8),
    (timeseries("Breaker state (1 = open, 0.5 = half open)",
                [('max by (deployment) (gateway_breaker_state{state="open"} + 0.5 * '
                  'gateway_breaker_state{state="half_open"})', "{{deployment}}")]), 12, 7),
    (timeseries("Attempt latency p99, by deployment",
                [("histogram_quantile(0.99, sum by (le, deployment) (rate(gateway_attempt_seconds_bucket[5m])))",
                  "{{deployment}}")], unit="s"), 12, 7),

    (row("Who is sending: tenant x feature"), WIDTH, 1),
    (timeseries("Attempts per second, by tenant and feature",
                [(f"sum by (tenant, feature) (rate(gateway_tenant_attempts_total{{{TENANT}}}[1m]))",
                  "{{tenant}} / {{feature}}")], unit="reqps", stack=True), 12, 8),
    (timeseries("Tokens per minute billed, by tenant and feature",
                [(f"60 * sum by (tenant, feature) (rate(gateway_tenant_tokens_total{{{TENANT}}}[1m]))",
                  "{{tenant}} / {{feature}}")], stack=True), 12, 8),
    (timeseries("Provider 429s, by tenant and feature",
                [("sum by (tenant, feature) "
                  f'(rate(gateway_tenant_attempts_total{{status="rate_limit", {TENANT}}}[1m]))',
                  "{{tenant}} / {{feature}}")], unit="reqps"), 12, 7),
    (timeseries("Cost per hour, by tenant and feature",
                [(f"3600 * sum by (tenant, feature) (rate(gateway_cost_usd_total{{{TENANT}}}[5m]))",
                  "{{tenant}} / {{feature}}")], unit="currencyUSD", stack=True), 12, 7),

    (row("Waiting: lane x tenant"), WIDTH, 1),
    (timeseries("Jobs waiting, by lane and tenant",
                [(f"sum by (lane, tenant) (gateway_queue_depth{{{TENANT}}})", "{{lane}} / {{tenant}}")],
                stack=True), 12, 8),
    (timeseries("Oldest waiting job, as a share of its lane's deadline",
                [(f"max by (lane, tenant) (gateway_queue_oldest_age_seconds{{{TENANT}}}) / on (lane) group_left "
                  "max by (lane) (gateway_lane_deadline_seconds)", "{{lane}} / {{tenant}}")], unit="percentunit",
                description="Past 1 the lane's default deadline has passed and jobs expire; the alert fires at 0.5."),
     12, 8),

    (row("Budgets"), WIDTH, 1),
    (timeseries("Deployment budgets used (1 - level / capacity)",
                [('1 - (gateway_budget_level{level="deployment"} / gateway_budget_capacity{level="deployment"})',
                  "{{deployment}} {{axis}}")], unit="percentunit"), 12, 8),
    (timeseries("Tenant and feature budgets used",
                [(f'1 - (gateway_budget_level{{level=~"tenant|feature", {TENANT}}} / '
                  f'gateway_budget_capacity{{level=~"tenant|feature", {TENANT}}})',
                  "{{tenant}} {{feature}} {{limit}}")], unit="percentunit"), 12, 8),
    (timeseries("Reserved by attempts in flight, by deployment",
                [('sum by (deployment, axis) (gateway_budget_reserved{level="deployment"})',
                  "{{deployment}} {{axis}}")]), 12, 7),
    (timeseries("Tokens per minute billed, by deployment",
                [("60 * sum by (deployment, direction) (rate(gateway_tokens_total[1m]))",
                  "{{deployment}} {{direction}}")]), 12, 7),

    (row("The api"), WIDTH, 1),
    (timeseries("Requests per second, by route and status",
                [("sum by (route, status) (rate(gateway_http_requests_total[1m]))", "{{route}} {{status}}")],
                unit="reqps"), 12, 8),
    (timeseries("Latency p50 / p99, by route",
                [("histogram_quantile(0.5, sum by (le, route) (rate(gateway_http_request_seconds_bucket[5m])))",
                  "p50 {{route}}"),
                 ("histogram_quantile(0.99, sum by (le, route) (rate(gateway_http_request_seconds_bucket[5m])))",
                  "p99 {{route}}")], unit="s"), 12, 8),
    (timeseries("Jobs shed before queueing, by reason",
                [("sum by (reason) (rate(gateway_jobs_shed_total[1m]))", "{{reason}}")], unit="reqps"), 12, 7),
    (timeseries("Fast-lane calls, by who sent them",
                [("sum by (by) (rate(gateway_fast_lane_sent_total[1m]))", "{{by}}")], unit="reqps"), 12, 7),
]


def _placed() -> list[dict[str, Any]]:
    """Panels with ids and grid positions, left to right, top to bottom."""
    panels, x, y, line_h = [], 0, 0, 0
    for i, (panel, w, h) in enumerate(LAYOUT, start=1):
        if x + w > WIDTH or panel["type"] == "row":
            x, y, line_h = 0, y + line_h, 0
        panels.append({**panel, "id": i, "gridPos": {"x": x, "y": y, "w": w, "h": h}})
        x, line_h = x + w, max(line_h, h)
    return panels


def dashboard() -> dict[str, Any]:
    return {
        "uid": "ai-gateway", "title": "AI gateway", "tags": ["gateway"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
        "editable": True, "graphTooltip": 1,
        "templating": {"list": [{
            "name": "tenant", "label": "tenant", "type": "query", "datasource": DATASOURCE,
            "query": {"query": "label_values(gateway_tenant_attempts_total, tenant)", "refId": "tenants"},
            "definition": "label_values(gateway_tenant_attempts_total, tenant)", "refresh": 2,
            "includeAll": True, "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"}}]},
        "annotations": {"list": []},
        "panels": _placed(),
    }


def main() -> int:
    text = json.dumps(dashboard(), indent=2) + "\n"
    if "--check" in sys.argv:
        return 0 if OUT.exists() and OUT.read_text() == text else 1
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
