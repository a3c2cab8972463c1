"""/metrics reports what attempts did, whichever process ran them (an api's fast lane or a worker),
counted in Redis so that every api replica reports the same totals."""

from __future__ import annotations

import re

import httpx

from tests.conftest import ADMIN, Stack, free_port, spawn, stop, wait_for_status, wait_http

CHAT = {"max_tokens": 16, "messages": [{"role": "user", "content": "Name a prime number."}]}


def _value(text: str, name: str, **labels: str) -> float:
    """One sample of the exposition text (0 when absent); labels must match exactly, in any order."""
    for line in text.splitlines():
        found = re.fullmatch(rf"{name}{{(.*)}} (\S+)", line)
        if found and dict(re.findall(r'(\w+)="([^"]*)"', found.group(1))) == labels:
            return float(found.group(2))
    return 0.0


def test_attempts_tokens_latency_and_cost_are_exported_from_api_and_worker_attempts(stack: Stack) -> None:
    before = httpx.get(f"{stack.url}/metrics", headers=ADMIN).text
    with stack.client("globex") as c:
        fast = c.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o"},
                      headers={"X-Gateway-Feature": "metrics-fast"})  # sent by the api
        job = c.post("/v1/jobs", json={**CHAT, "model": "gpt-4o", "feature": "metrics-batch",
                                       "priority": "batch"}).json()  # sent by a worker
        wait_for_status(c, job["id"], {"succeeded"})
    assert fast.status_code == 200, fast.text
    after = httpx.get(f"{stack.url}/metrics", headers=ADMIN).text

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("gateway_attempts_total", deployment="gpt-4o@sim", status="succeeded") >= 2
    assert grew("gateway_attempt_seconds_count", deployment="gpt-4o@sim") >= 2
    assert grew("gateway_attempt_seconds_bucket", deployment="gpt-4o@sim", le="+Inf") >= 2
    assert grew("gateway_tokens_total", deployment="gpt-4o@sim", direction="in") > 0
    assert grew("gateway_tokens_total", deployment="gpt-4o@sim", direction="out") > 0
    for feature in ("metrics-fast", "metrics-batch"):
        assert grew("gateway_cost_usd_total", tenant="globex", feature=feature, deployment="gpt-4o@sim") > 0


def test_an_api_with_several_processes_reports_the_counters_of_all_of_them(stack: Stack) -> None:
    port = free_port()
    proc = spawn("cli", "api", "--port", str(port), "--workers", "2", log=f"api-{port}")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", proc)
        for _ in range(12):  # fresh connections: the kernel spreads them over both processes
            r = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "model": "gpt-4o-mini"},
                           headers={"Authorization": f"Bearer {stack.keys['acme']}"}, timeout=30)
            assert r.status_code == 200, r.text
        scrapes = [httpx.get(f"{url}/metrics", headers=ADMIN).text for _ in range(6)]
    finally:
        stop(proc)
    for text in scrapes:  # whichever process answered the scrape
        assert _value(text, "gateway_jobs_submitted_total", lane="interactive", admitted_inline="True") == 12
        assert _value(text, "gateway_fast_lane_sent_total", by="api") == 12


def test_budget_gauges_are_labelled_by_what_they_limit_not_by_key(stack: Stack) -> None:
    text = httpx.get(f"{stack.url}/metrics", headers=ADMIN).text
    assert _value(text, "gateway_budget_capacity", level="deployment", deployment="gpt-4o-mini@sim", axis="tpm",
                  lane="", tenant="", feature="", limit="") == 95_000_000  # 100M TPM x headroom 0.95, a minute
    assert _value(text, "gateway_budget_capacity", level="lane", deployment="gpt-4o-mini@sim", axis="tpm",
                  lane="batch", tenant="", feature="", limit="") > 0
    assert _value(text, "gateway_budget_capacity", level="feature", deployment="", axis="", lane="", tenant="acme",
                  feature="summarizer", limit="hard") == 150_000
    assert "{bucket=" not in text and ":budget:" not in text  # no raw Redis keys as labels


def test_http_requests_breakers_and_processes_are_exported(stack: Stack) -> None:
    with stack.client() as c:
        assert c.get("/v1/jobs/job_00000000000000000000000000").status_code == 404
    text = httpx.get(f"{stack.url}/metrics", headers=ADMIN).text
    assert _value(text, "gateway_http_requests_total", route="/v1/jobs/{job_id}", method="GET", status="404") >= 1
    assert _value(text, "gateway_http_request_seconds_count", route="/v1/jobs/{job_id}", method="GET") >= 1
    assert "job_0000" not in text  # the template, never the path a caller sent
    assert _value(text, "gateway_breaker_state", deployment="gpt-4o-mini@sim", state="closed") == 1
    assert _value(text, "gateway_processes_alive", kind="worker") >= 1
    assert _value(text, "gateway_processes_alive", kind="scheduler") >= 1
    assert _value(text, "gateway_lane_deadline_seconds", lane="interactive") == 60
    assert re.search(r"^gateway_scheduler_leader 1\.0$", text, re.M)


def test_every_metric_the_dashboard_and_the_alerts_use_is_exported(stack: Stack) -> None:
    from tests.test_compose import _expressions

    text = httpx.get(f"{stack.url}/metrics", headers=ADMIN).text
    families = set(re.findall(r"^# TYPE (\S+) \S+$", text, re.M))
    exported = families | {f"{f}{suffix}" for f in families for suffix in ("_total", "_bucket", "_count", "_sum")}
    used = {name for _, expr in _expressions() for name in re.findall(r"\bgateway_[a-z0-9_]+", expr)}
    assert used - exported == set()
