"""`gateway usage`: what the calls cost, from the usage rollups; `gateway usage reconcile`: do the rollups
agree with the attempt records?

The report is the usage API's (``shared.usage_report``), read from the store directly: the CLI runs
where the database is, with the operators' view of every tenant.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shared import usage_report
from shared.config import Settings, get_settings
from shared.db import migrate as migrations
from shared.db import usage
from shared.db.models import utcnow
from shared.db.session import get_engine, session_scope
from shared.db.usage import Granularity, UsageQuery
from shared.errors import GatewayError

usage_app = typer.Typer(help="What the calls cost: by tenant, feature, model, deployment and key.",
                        invoke_without_command=True)
console = Console()
err_console = Console(stderr=True)
TOTAL_FROM_HOURS_DAYS = 62  # a whole-window total is summed from hour rows up to this long a window, else days
SHOWN = ("requests", "attempts", "failed_attempts", "input_tokens", "cached_tokens", "output_tokens",
         "reasoning_tokens", "cost_usd", "failed_cost_usd", "cache_savings_usd", "routing_savings_usd")


@usage_app.callback()
def report(
    ctx: typer.Context,
    since: str = typer.Option("24h", help="how far back: 30m, 24h, 7d, 2w (or --from)"),
    start: str | None = typer.Option(None, "--from", help="the window's start (ISO 8601 time or date)"),
    end: str | None = typer.Option(None, "--to", help="the window's end (default now)"),
    by: str = typer.Option("tenant", "--by", help="group by, comma-separated: tenant, feature, model, deployment, key"),
    granularity: str = typer.Option("total", help="total (one row per group), hour or day"),
    tenant: str | None = typer.Option(None, help="only this tenant"),
    as_json: bool = typer.Option(False, "--json", help="the usage API's JSON"),
    as_csv: bool = typer.Option(False, "--csv", help="CSV, for finance"),
) -> None:
    """Usage and cost over a window (default: the last 24 hours, by tenant)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = get_settings()
    try:
        report = _report(settings, since, start, end, by, granularity, tenant)
    except GatewayError as exc:
        err_console.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(1) from None
    if granularity == "total":
        report["data"] = usage_report.totals_by_group(report)
    if as_json:
        print(json.dumps(report, indent=2))
    elif as_csv:
        sys.stdout.write(usage_report.to_csv(report, timed=granularity != "total"))
    else:
        _print_table(report, granularity)


def _report(settings: Settings, since: str, start: str | None, end: str | None, by: str, granularity: str,
            tenant: str | None) -> dict[str, Any]:
    now, zone = utcnow(), settings.billing.zone
    last = usage_report.parse_time(end, zone, "to") if end else now
    first = usage_report.parse_time(start, zone, "from") if start else usage_report.parse_since(since, last)
    size: Granularity
    if granularity == "total":
        size = "hour" if last - first <= timedelta(days=TOTAL_FROM_HOURS_DAYS) else "day"
    else:
        size = usage_report.parse_granularity(granularity)
    window = usage_report.window(settings, size, first, last, now)
    query = UsageQuery(window.start, window.end, size, usage_report.parse_groups(by), tenant)
    migrations.upgrade(settings.database_url)
    with session_scope(get_engine(settings.database_url), readonly=True) as db:
        return usage_report.build(db, settings, query)


def _print_table(report: dict[str, Any], granularity: str) -> None:
    timed = granularity != "total"
    table = Table(*(["start"] if timed else []), *report["group_by"], *(c.replace("_", " ") for c in SHOWN),
                  title=f"usage {report['from']} to {report['to']} ({report['timezone']})")
    for row in report["data"]:
        table.add_row(*([row["start"]] if timed else []), *(str(row.get(g) or "-") for g in report["group_by"]),
                      *(_shown(name, row[name]) for name in SHOWN))
    totals = report["totals"]
    table.add_row(*([""] if timed else []), *(["total"] + [""] * (len(report["group_by"]) - 1)
                                              if report["group_by"] else []),
                  *(_shown(name, totals[name]) for name in SHOWN), style="bold")
    console.print(table)


def _shown(name: str, value: float) -> str:
    return f"${value:,.4f}" if name.endswith("_usd") else f"{int(value):,}"


@usage_app.command("reconcile")
def reconcile(
    since: str = typer.Option("7d", help="how far back to check: whole days in billing.timezone"),
    as_json: bool = typer.Option(False, "--json", help="the differences as JSON"),
) -> None:
    """Compare the usage rollups with the attempt records of the same days; any difference is listed and the
    exit code is 1. Attempts older than `retention.jobs_days` are gone, so their rollups cannot be checked."""
    settings = get_settings()
    now = utcnow()
    try:
        first = usage_report.parse_since(since, now)
    except GatewayError as exc:
        err_console.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(1) from None
    migrations.upgrade(settings.database_url)
    with session_scope(get_engine(settings.database_url), readonly=True) as db:
        found = usage.reconcile(db, first, now, settings.billing.zone)
    _print_differences(found, first, now, as_json, settings)
    if found:
        raise typer.Exit(1)


def _print_differences(found: list[usage.Difference], first: datetime, now: datetime, as_json: bool,
                       settings: Settings) -> None:
    rows = usage.differences_as_rows(found)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    zone = settings.billing.zone
    span = f"{first.astimezone(zone):%Y-%m-%d} to {now.astimezone(zone):%Y-%m-%d} ({settings.billing.timezone})"
    if not rows:
        console.print(f"the usage rollups match the attempt records, {span}")
        return
    table = Table("bucket", "start", "tenant", "feature", "model", "deployment", "key", "measure", "attempts say",
                  "rollup says", title=f"{len(rows)} differences, {span}")
    for r in rows:
        table.add_row(r["granularity"], str(r["bucket_start"]), r["tenant_id"], r["feature"], r["model"],
                      r["deployment"], str(r["key_id"]), r["measure"], f"{r['expected']:g}", f"{r['stored']:g}")
    console.print(table)
