"""What the ops work adds to each fast-lane call, in CPU microseconds, measured in this process.

    .venv/bin/python ops/bench_ops_overhead.py [--calls 20000]

The end-to-end latency benchmark (``ops/bench_gateway.py``) cannot resolve a few microseconds on a shared
2-core machine, so each piece is timed on its own, by CPU time (``time.process_time``, which other
processes on the machine do not add to), with and without it, over ``--calls`` calls:

- the two ASGI middlewares every request passes (``HttpMetrics``: a count and a latency per route;
  ``TraceContext``: the caller's ``traceparent``) around a route that answers at once;
- the tracing helpers of one fast-lane call (four spans, two context reads), off and on (exporting to
  nowhere: the span processor's queue is drained by a no-op exporter);
- the attempt's extra counters (three HINCRBYs: attempts and tokens by tenant and feature) in the
  pipeline it sends anyway, against the real Redis (``GATEWAY_REDIS_URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.responses import PlainTextResponse

from api.metrics import HttpMetrics
from api.tracing import TraceContext
from shared import attempt_metrics, tracing
from shared.keys import Keys


def _cpu_us(fn: Callable[[], Any], calls: int) -> float:
    """CPU microseconds per call of ``fn`` (best of three runs)."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return best


def _asgi_app(with_ops: bool) -> Any:
    app = FastAPI()

    @app.get("/v1/jobs/{job_id}")
    async def get_job(job_id: str) -> PlainTextResponse:
        return PlainTextResponse("ok")

    if with_ops:
        app.add_middleware(TraceContext)
        app.add_middleware(HttpMetrics)
    return app


def middleware_cost(calls: int) -> tuple[float, float]:
    loop = asyncio.new_event_loop()
    scope = {"type": "http", "method": "GET", "path": "/v1/jobs/job_1", "raw_path": b"/v1/jobs/job_1",
             "query_string": b"", "headers": [(b"host", b"x"), (b"authorization", b"Bearer k"),
                                              (b"content-type", b"application/json")],
             "http_version": "1.1", "scheme": "http", "server": ("x", 80), "client": ("y", 1), "root_path": ""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    results = []
    for with_ops in (False, True):
        app = _asgi_app(with_ops)

        def one_request(app: Any = app) -> None:
            loop.run_until_complete(app(dict(scope), receive, send))

        results.append(_cpu_us(one_request, calls))
    loop.close()
    return results[0], results[1]


def tracing_cost(calls: int) -> float:
    """One fast-lane call's tracing helpers: accept, route, admission and attempt spans, two reads."""
    def one_call() -> None:
        with tracing.span("accept", parent=tracing.incoming.get(), tenant="acme", feature="f", lane="interactive",
                          model="m"):
            parent = tracing.current_traceparent() or tracing.incoming.get()
            with tracing.span("route", model="m"):
                pass
            with tracing.span("admission", lane="interactive", inline=True):
                pass
            with tracing.span("attempt", parent=parent, job="j", attempt=1, deployment="d", model="m"):
                tracing.current_traceparent()
    return _cpu_us(one_call, calls)


def counters_cost(calls: int) -> tuple[float, float]:
    """The attempt's end-of-attempt pipeline: its metrics before (4 hashes) and after (the 3 new HINCRBYs)."""
    import redis

    client = redis.Redis.from_url(os.environ.get("GATEWAY_REDIS_URL", "redis://127.0.0.1:6379/15"))
    keys = Keys(f"gwbench{os.getpid()}")

    def before() -> None:
        with client.pipeline(transaction=False) as pipe:
            attempt_metrics.count_into(pipe, keys, deployment="d", tenant="t", feature="f", status="succeeded",
                                       latency_s=0.1, tokens_in=10, tokens_out=5, cost_usd=0.001)
            for name in ("tenant_attempts", "tenant_tokens"):  # take the new ones back out: the old count
                pipe.command_stack = [c for c in pipe.command_stack if keys.attempt_metrics(name) not in c[0]]
            pipe.execute()

    def after() -> None:
        with client.pipeline(transaction=False) as pipe:
            attempt_metrics.count_into(pipe, keys, deployment="d", tenant="t", feature="f", status="succeeded",
                                       latency_s=0.1, lane="interactive", tokens_in=10, tokens_out=5, cost_usd=0.001)
            pipe.execute()

    out = (_cpu_us(before, calls), _cpu_us(after, calls))
    for key in client.scan_iter(match=f"{keys.tag}*"):
        client.delete(key)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000)
    calls = parser.parse_args().calls
    bare, with_ops = middleware_cost(calls)
    print(f"ASGI request through FastAPI: {bare:.1f} us CPU; with HttpMetrics + TraceContext {with_ops:.1f} us "
          f"(+{with_ops - bare:.1f} us)")
    off = tracing_cost(calls)
    os.environ["OTEL_TRACES_EXPORTER"] = "console"
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Nowhere(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracing._exporter = Nowhere
    tracing.configure("bench")
    on = tracing_cost(calls // 4)
    print(f"tracing helpers of one fast-lane call: off {off:.2f} us CPU, on {on:.1f} us (4 spans)")
    before, after = counters_cost(calls // 4)
    print(f"end-of-attempt metrics pipeline (one round trip): {before:.1f} us CPU before, {after:.1f} us with the "
          f"tenant counters (+{after - before:.1f} us)")


if __name__ == "__main__":
    main()
