"""A/B the store's hot writes between two checkouts: median ms per ``insert_job`` and ``record_attempt``.

    git worktree add /tmp/before <commit>      # the checkout to compare with
    .venv/bin/python ops/bench_prepared.py /tmp/before . [--iterations 2000] [--rounds 10]

Each round runs both checkouts in turn (order alternating) in fresh processes against the same SQLite file
and the same PostgreSQL database, so the machine's drift lands on both. Per call it times the function
alone (in an open transaction) and the whole transaction (commit included: the usage upsert runs there).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile

from sqlalchemy import create_engine, text

WORKER = r'''
import json, sys, time
from datetime import UTC, datetime, timedelta
from shared.db import jobs
from shared.db.session import make_engine, session_scope
from shared.db.usage import AttemptUsage
url, n, warm = sys.argv[1], int(sys.argv[2]), 50
engine = make_engine(url)
out = {"insert": [], "insert_tx": [], "record": [], "record_tx": []}
request = {"model": "fast", "messages": [{"role": "user", "content": "How far is the moon?"}]}
answer = {"choices": [{"message": {"role": "assistant", "content": "384,400 km"}}], "usage": {"total_tokens": 20}}
for i in range(n + warm):
    t0 = time.perf_counter()
    with session_scope(engine) as s:
        t1 = time.perf_counter()
        job, _ = jobs.insert_job(s, tenant_id="acme", feature="default", lane="standard", task=None, model="fast",
                                 request=request, deadline=datetime.now(UTC) + timedelta(minutes=5),
                                 idempotency_key=None, admitted_deployment="d1", key_id=1)
        t2 = time.perf_counter()
    t3 = time.perf_counter()
    with session_scope(engine) as s:
        t4 = time.perf_counter()
        jobs.record_attempt(s, job.id, 1, deployment="d1", status="succeeded", http_status=200, latency_ms=12,
                            tokens_in=12, tokens_out=8, cost_usd=0.00012,
                            job_outcome={"status": "succeeded", "result": answer, "model_used": "m1",
                                         "deployment": "d1", "tokens_in": 12, "tokens_out": 8, "cost_usd": 0.00012},
                            usage=AttemptUsage(model="m1"))
        t5 = time.perf_counter()
    t6 = time.perf_counter()
    if i >= warm:
        for name, ms in (("insert", t2 - t1), ("insert_tx", t3 - t0), ("record", t5 - t4), ("record_tx", t6 - t3)):
            out[name].append(ms * 1000)
print(json.dumps(out))
'''


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    from shared.db import migrate, tenants
    from shared.db.session import make_engine, session_scope

    admin = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    name = f"gw_bench_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    urls = {"sqlite": f"sqlite:///{tempfile.mkdtemp()}/bench.db",
            "postgresql": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"}
    try:
        for url in urls.values():
            migrate.upgrade(url)
            with session_scope(engine := make_engine(url)) as s:
                tenants.create_tenant(s, "acme", "Acme")
            engine.dispose()
        for backend, url in urls.items():
            times: dict[str, dict[str, list[float]]] = {args.a: {}, args.b: {}}
            for r in range(args.rounds):
                for tree in (args.a, args.b) if r % 2 == 0 else (args.b, args.a):
                    env = {**os.environ, "PYTHONPATH": tree}
                    done = subprocess.run(["nice", "-n", "19", sys.executable, "-c", WORKER, url,
                                           str(args.iterations // args.rounds)],
                                          env=env, check=True, capture_output=True, text=True, cwd=tree)
                    for key, values in json.loads(done.stdout).items():
                        times[tree].setdefault(key, []).extend(values)
            for key in ("insert", "insert_tx", "record", "record_tx"):
                a, b = (statistics.median(times[t][key]) for t in (args.a, args.b))
                print(f"{backend:10} {key:10} A {a:6.3f} ms  B {b:6.3f} ms  B/A {b / a:5.2f}  "
                      f"(n={len(times[args.b][key])})")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
