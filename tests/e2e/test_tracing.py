"""Traces: a caller's ``traceparent`` reaches the provider; with an OTLP endpoint configured, every process
exports the job's spans (accept, route, admission, attempt, delivery) into the caller's trace.

The traced gateway is a second api, scheduler and worker on a Redis prefix of their own, exporting to an
OTLP/HTTP receiver this test runs (real protobuf over real HTTP)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import REDIS_URL, Stack, free_port, spawn, stop, wait_for_status, wait_http

TRACE_ID = uuid.uuid4().hex
CHAT = {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "Trace me"}]}


def _traceparent(span: str = "00f067aa0ba902b7") -> str:
    return f"00-{TRACE_ID}-{span}-01"


def _sent_to_provider(stack: Stack) -> list[str]:
    return [t["traceparent"] for t in httpx.get(f"{stack.sim_url}/sim/traceparents").json()["traceparents"]]


def test_a_callers_traceparent_reaches_the_provider_with_tracing_off(stack: Stack) -> None:
    with stack.client() as c:
        assert c.post("/v1/chat/completions", json=CHAT, headers={"traceparent": _traceparent()}).status_code == 200
        job = c.post("/v1/jobs", json={**CHAT, "priority": "batch"},
                     headers={"traceparent": _traceparent("00f067aa0ba902b8")}).json()
        wait_for_status(c, job["id"], {"succeeded"})
        c.post("/v1/chat/completions", json=CHAT, headers={"traceparent": f"00-{'0' * 32}-00f067aa0ba902b9-01"})
    sent = _sent_to_provider(stack)
    assert _traceparent() in sent  # the api's own call
    assert _traceparent("00f067aa0ba902b8") in sent  # through the queue, the scheduler and a worker
    assert not any("00f067aa0ba902b9" in t for t in sent)  # an invalid one (zero trace id) is dropped


class _Receiver(BaseHTTPRequestHandler):
    spans: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        request = ExportTraceServiceRequest()
        request.ParseFromString(self.rfile.read(int(self.headers["content-length"])))
        for resource in request.resource_spans:
            service = next(a.value.string_value for a in resource.resource.attributes if a.key == "service.name")
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: a.value.string_value or a.value.int_value or a.value.bool_value
                                  for a in span.attributes}
                    self.spans.append({"name": span.name, "trace_id": span.trace_id.hex(), "service": service,
                                       "span_id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                                       "attributes": attributes})
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def traced(stack: Stack) -> Iterator[str]:
    """A traced api, scheduler and worker (Redis prefix of their own); the api's URL."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    prefix = f"gwtrace{uuid.uuid4().hex[:6]}"
    env = {"GATEWAY_KEY_PREFIX": prefix, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
           "OTEL_BSP_SCHEDULE_DELAY": "200"}
    procs = [spawn("cli", "worker", "--concurrency", "4", env=env, log="traced-worker"),
             spawn("cli", "scheduler", env=env, log="traced-scheduler"),
             spawn("cli", "api", "--port", str(port), env=env, log="traced-api")]
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", procs[2])
        yield f"http://127.0.0.1:{port}"
    finally:
        for proc in procs:
            stop(proc)
        server.shutdown()
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        for key in [*r.scan_iter(match=f"{{{prefix}}}*"), *r.scan_iter(match=f"{prefix}*")]:
            r.delete(key)


def _spans_of(trace_id: str, names: set[str], timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [s for s in _Receiver.spans if s["trace_id"] == trace_id]
        if names <= {s["name"] for s in found}:
            return found
        time.sleep(0.2)
    raise AssertionError(f"spans of {trace_id}: {sorted({s['name'] for s in found})}, wanted {sorted(names)}")


def test_a_fast_lane_call_is_one_trace_from_accept_to_delivery(stack: Stack, traced: str) -> None:
    trace_id = uuid.uuid4().hex
    r = httpx.post(f"{traced}/v1/chat/completions", json=CHAT, timeout=30, headers={
        "Authorization": f"Bearer {stack.keys['acme']}", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
        "X-Gateway-Feature": "copilot"})
    assert r.status_code == 200, r.text
    spans = {s["name"]: s for s in _spans_of(trace_id, {"gateway.accept", "gateway.route", "gateway.admission",
                                                         "gateway.attempt", "gateway.delivery"})}
    assert spans["gateway.accept"]["parent"] == "00f067aa0ba902b7"  # the caller's span
    assert spans["gateway.attempt"]["parent"] == spans["gateway.accept"]["span_id"]
    assert spans["gateway.accept"]["attributes"]["gateway.tenant"] == "acme"
    assert spans["gateway.attempt"]["attributes"]["gateway.deployment"] == "gpt-4o-mini@sim"
    attempt = spans["gateway.attempt"]["span_id"]
    assert f"00-{trace_id}-{attempt}-01" in _sent_to_provider(stack)  # the provider continues the trace


def test_a_cache_lookup_is_a_span_of_the_call(stack: Stack, traced: str) -> None:
    trace_id = uuid.uuid4().hex
    body = {**CHAT, "temperature": 0, "messages": [{"role": "user", "content": f"cache me {trace_id}"}]}
    r = httpx.post(f"{traced}/v1/chat/completions", json=body, timeout=30, headers={
        "Authorization": f"Bearer {stack.keys['acme']}", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert r.status_code == 200 and r.headers["x-gateway-cache"] == "miss", r.text
    spans = {s["name"]: s for s in _spans_of(trace_id, {"gateway.accept", "gateway.cache", "gateway.attempt"})}
    assert spans["gateway.cache"]["parent"] == spans["gateway.accept"]["span_id"]


def test_a_queued_job_is_traced_through_the_scheduler_and_a_worker(stack: Stack, traced: str) -> None:
    trace_id = uuid.uuid4().hex
    r = httpx.post(f"{traced}/v1/jobs", json={**CHAT, "priority": "batch", "feature": "summarizer"}, timeout=30,
                   headers={"Authorization": f"Bearer {stack.keys['acme']}",
                            "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert r.status_code == 202, r.text
    spans = _spans_of(trace_id, {"gateway.accept", "gateway.admission", "gateway.attempt"})
    services = {s["name"]: s["service"] for s in spans}
    assert services["gateway.accept"] == "gateway-api"
    assert services["gateway.admission"] == "gateway-scheduler"
    assert services["gateway.attempt"] == "gateway-worker"
