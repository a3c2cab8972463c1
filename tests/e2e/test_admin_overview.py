"""What operators read across tenants (``/v1/admin/overview``, ``/v1/admin/jobs``): queues with the age of
their oldest job, buckets by scope, failures per minute, today's cost, any tenant's jobs and attempts."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ADMIN, Stack, hold_leader_lease, wait_for_status

CHAT = {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}


def test_the_overview_shows_a_waiting_queue_with_its_oldest_jobs_age(stack: Stack) -> None:
    with stack.client("initech") as c:
        with hold_leader_lease():
            job = c.post("/v1/jobs", json={**CHAT, "feature": "reports", "priority": "batch"}).json()
            view = httpx.get(f"{stack.url}/v1/admin/overview", headers=ADMIN).json()
        wait_for_status(c, job["id"], {"succeeded"})
    queue = next(q for q in view["queues"] if q["lane"] == "batch" and q["tenant"] == "initech")
    assert queue["waiting"] >= 1 and queue["oldest_age_s"] >= 0
    assert view["lanes"]["batch"]["deadline_s"] == 86_400
    assert view["processes"]["worker"] and view["processes"]["scheduler"]
    tpm = next(b for b in view["buckets"] if b["scope"]["level"] == "deployment"
               and b["scope"]["deployment"] == "gpt-4o-mini@sim" and b["scope"]["axis"] == "tpm")
    assert tpm["capacity"] == 95_000_000
    assert set(view["failures_per_minute"]) == {"previous", "current"}


def test_failures_per_minute_count_provider_429s(stack: Stack, faults: object) -> None:
    faults(kind="storm", model="gpt-storm", retry_after_s=1)  # type: ignore[operator]
    with stack.client("globex") as c:
        job = c.post("/v1/jobs", json={**CHAT, "model": "storm", "feature": "metrics-batch"}).json()
        wait_for_status(c, job["id"], {"failed"}, timeout=60)
    view = httpx.get(f"{stack.url}/v1/admin/overview", headers=ADMIN).json()
    minutes = view["failures_per_minute"]
    seen = sum(m.get("status:rate_limit", {}).get("storm@sim", 0) for m in minutes.values())
    assert seen >= 1
    assert sum(sum(m.get(k, {}).get("storm@sim", 0) for k in m if k.startswith("retry:")) for m in minutes.values())


def test_todays_cost_and_any_tenants_jobs_with_their_attempts(stack: Stack) -> None:
    with stack.client("globex") as c:
        job = c.post("/v1/jobs", params={"wait": 20}, json={**CHAT, "feature": "metrics-fast"}).json()
    assert job["status"] == "succeeded"
    view = httpx.get(f"{stack.url}/v1/admin/overview", headers=ADMIN).json()
    row = next(r for r in view["cost_today"] if r["tenant"] == "globex" and r["feature"] == "metrics-fast")
    assert row["jobs"] >= 1 and row["cost_usd"] > 0 and row["tokens_in"] > 0
    page = httpx.get(f"{stack.url}/v1/admin/jobs", params={"tenant": "globex", "feature": "Metrics-Fast",
                                                            "status": "succeeded"}, headers=ADMIN).json()
    assert job["id"] in [j["id"] for j in page["data"]]
    assert all(j["tenant"] == "globex" and j["result"] is None for j in page["data"])
    detail = httpx.get(f"{stack.url}/v1/admin/jobs/{job['id']}", headers=ADMIN).json()
    assert detail["result"]["choices"] and detail["attempt_list"][0]["status"] == "succeeded"
    assert detail["attempt_list"][0]["deployment"] == "gpt-4o-mini@sim"


@pytest.mark.parametrize(("params", "param"), [
    ({"status": "lost"}, "status"), ({"tenant": "acme\x00"}, "tenant"), ({"limit": 0}, "limit"),
    ({"feature": "x" * 65}, "feature")])
def test_bad_filters_are_a_400_naming_the_field(stack: Stack, params: dict[str, object], param: str) -> None:
    r = httpx.get(f"{stack.url}/v1/admin/jobs", params=params, headers=ADMIN)
    assert r.status_code == 400, r.text
    assert param in r.json()["error"]["param"]


def test_admin_reads_refuse_tenants_and_unknown_jobs(stack: Stack) -> None:
    tenant = {"Authorization": f"Bearer {stack.keys['acme']}"}
    for path in ("/v1/admin/overview", "/v1/admin/jobs", "/v1/admin/jobs/job_x"):
        assert httpx.get(f"{stack.url}{path}", headers=tenant).status_code == 401
    assert httpx.get(f"{stack.url}/v1/admin/jobs/job_00000000000000000000000000", headers=ADMIN).status_code == 404
    assert httpx.get(f"{stack.url}/v1/admin/jobs/nothing%00here", headers=ADMIN).status_code == 404
    assert httpx.get(f"{stack.url}/", follow_redirects=False).headers["location"] == "/console"
