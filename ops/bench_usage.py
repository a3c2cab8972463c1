"""How fast the usage API answers over a month of a busy gateway: 1,000,000 jobs in 30 days, on PostgreSQL.

    .venv/bin/python ops/bench_usage.py [--jobs 1000000] [--days 30] [--runs 20]
                                        [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

Creates a database of its own on that server (dropped at the end; ``--keep`` keeps it), migrates it and
writes the usage rollups that many jobs would have left, straight into ``usage_rollups`` with COPY (the
rollups are what the usage API reads; the attempts table is never scanned). The jobs are spread evenly
over the window across 50 tenants x 4 features x 3 models (each on its own deployment, 10% of calls on a
fallback deployment) x 2 keys per tenant, one UTC day per day row.

Then it times the usage API's own work, ``shared.usage_report.build`` and the JSON encoding (everything
``GET /v1/usage`` does but HTTP), ``--runs`` times per question, and prints p50 / p95 / max in ms and the
rows each answer has. The target: a 30-day question answers in <= 200 ms.
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import create_engine, text

from shared import usage_report
from shared.config import Settings
from shared.db import migrate
from shared.db.session import make_engine, session_scope
from shared.db.usage import KEY, MEASURES, Granularity, UsageQuery

TENANTS, FEATURES, KEYS_PER_TENANT = 50, ("chat", "search", "summarizer", "extract"), 2
MODELS = (("gpt-4o-mini", "gpt-4o-mini@openai", "claude-haiku@anthropic"),
          ("gpt-4o", "gpt-4o@openai", "gpt-4o@azure"),
          ("claude-haiku-4-5", "claude-haiku@anthropic", "gpt-4o-mini@openai"))


def rollup_rows(jobs: int, days: int, end: datetime, seed: int = 7) -> Iterator[tuple[object, ...]]:
    """The hour and day rows ``jobs`` jobs spread over ``days`` days before ``end`` leave, as COPY rows."""
    rng = random.Random(seed)
    start = end - timedelta(days=days)
    hours = days * 24
    rows: dict[tuple[object, ...], list[float]] = defaultdict(lambda: [0.0] * len(MEASURES))
    for i in range(jobs):
        hour = start + timedelta(hours=i * hours // jobs)
        tenant = rng.randrange(TENANTS)
        model, primary, fallback = MODELS[rng.randrange(len(MODELS))]
        deployment = fallback if rng.random() < 0.1 else primary
        dims = (f"tenant-{tenant:02d}", FEATURES[rng.randrange(len(FEATURES))], model, deployment,
                tenant * KEYS_PER_TENANT + rng.randrange(KEYS_PER_TENANT) + 1)
        figures = _one_job(rng, deployment != primary)
        for row_key in (("h", hour, *dims), ("d", hour.replace(hour=0), *dims)):
            row = rows[row_key]
            for n, value in enumerate(figures):
                row[n] += value
    for key, figures in rows.items():
        yield (*key, *(int(v) if name not in ("cost_usd", "failed_cost_usd", "cache_savings_usd",
                                                "routing_savings_usd") else round(v, 8)
                        for name, v in zip(MEASURES, figures, strict=True)))


def _one_job(rng: random.Random, fell_back: bool) -> list[float]:
    """One job's figures, in ``MEASURES`` order: a request, maybe a failed attempt before it."""
    failed = rng.random() < 0.03
    prompt, output = rng.randint(200, 4000), rng.randint(20, 800)
    cached = prompt // 2 if rng.random() < 0.3 else 0
    cost = prompt * 0.15e-6 + output * 0.6e-6
    return [1, 1, 1 + failed, failed, prompt, cached, 0, output, 0, cost, 0.0, cached * 0.075e-6,
            0.0001 if fell_back else 0.0]


def load(url: str, jobs: int, days: int, end: datetime) -> int:
    """Write the rollups with COPY; returns how many rows."""
    engine = make_engine(url)
    count = 0
    with engine.begin() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY usage_rollups ({', '.join((*KEY, *MEASURES))}) FROM STDIN") as copy:
            for row in rollup_rows(jobs, days, end):
                copy.write_row(row)
                count += 1
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE usage_rollups"))
    engine.dispose()
    return count


QUESTIONS: list[tuple[str, Granularity, tuple[str, ...], bool]] = [  # (what, granularity, group_by, one tenant?)
    ("operators: 30 days by day, by tenant and feature", "day", ("tenant", "feature"), False),
    ("operators: 30 days by day, by every field", "day", ("tenant", "feature", "model", "deployment", "key"), False),
    ("operators: 30 days by day, by model", "day", ("model",), False),
    ("a tenant: 30 days by day, by feature and model", "day", ("feature", "model"), True),
    ("a tenant: 30 days by hour, by feature", "hour", ("feature",), True),
    ("operators: 30 days by hour, by tenant", "hour", ("tenant",), False),
    ("operators: last 24 hours by hour, by tenant and feature", "hour", ("tenant", "feature"), False),
]


def ask(url: str, settings: Settings, end: datetime, days: int, runs: int) -> list[dict[str, object]]:
    engine = make_engine(url)
    results = []
    for what, granularity, groups, one_tenant in QUESTIONS:
        span = timedelta(hours=24) if "24 hours" in what else timedelta(days=days)
        query = UsageQuery(end - span, end, granularity, groups, "tenant-07" if one_tenant else None)
        timings, rows = [], 0
        for _ in range(runs):
            started = time.perf_counter()
            with session_scope(engine, readonly=True) as db:
                report = usage_report.build(db, settings, query)
            orjson.dumps(report)
            timings.append((time.perf_counter() - started) * 1000)
            rows = len(report["data"])
        results.append({"question": what, "rows": rows, "p50_ms": statistics.median(timings),
                        "p95_ms": sorted(timings)[int(0.95 * (len(timings) - 1))], "max_ms": max(timings)})
    engine.dispose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL server (its database is used only to create the benchmark's own)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args()
    server, name = args.database_url.rsplit("/", 1)[0], f"gw_bench_usage_{secrets.token_hex(3)}"
    admin = create_engine(args.database_url.replace("postgresql://", "postgresql+psycopg://"),
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{server}/{name}"
    try:
        migrate.upgrade(url)
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        started = time.perf_counter()
        rows = load(url, args.jobs, args.days, end)
        print(f"bench_usage: {args.jobs:,} jobs over {args.days} days -> {rows:,} rollup rows "
              f"(hour and day) written in {time.perf_counter() - started:.1f} s, database {name}")
        settings = Settings(database_url=url, retention={"usage_days": max(400, args.days + 1)})
        for r in ask(url, settings, end + timedelta(hours=1), args.days, args.runs):
            print(f"  {r['question']:<58} {r['rows']:>7,} rows  p50 {r['p50_ms']:7.1f} ms  "
                  f"p95 {r['p95_ms']:7.1f} ms  max {r['max_ms']:7.1f} ms")
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
