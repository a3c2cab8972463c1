"""Routing through the running gateway: model auto by task and by complexity, capability filters,
allow-lists, spill-up vs wait per lane, the cascade on each failed check, and routes that cannot serve.

The routes use simulated models of their own (tests/gateway.test.yaml ``routing``): small, medium and
large tiers priced 0.1/0.4, 1/4 and 5/20 $ per million tokens; ``sim-small`` fails the check a prompt's
``[[sim-fail:<mode>]]`` marker names (tests/sim.test.yaml).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, Stack, wait_for_status

SCHEMA = {"type": "json_schema", "json_schema": {"name": "label", "schema": {
    "type": "object", "required": ["label", "score"],
    "properties": {"label": {"type": "string"}, "score": {"type": "integer"}}}}}


def _ask(text: str = "Is this spam? Buy now", **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "max_tokens": 1000, "messages": [{"role": "user", "content": text}], **extra}


def _route(headers: httpx.Headers) -> dict[str, str]:
    """``x-gateway-route`` as a dict (``why`` last: it may hold '; ')."""
    head, _, why = headers["x-gateway-route"].partition("; why=")
    return {**dict(part.split("=", 1) for part in head.split("; ")), "why": why}


def test_a_task_goes_to_its_cheapest_tier_and_says_so(stack: Stack) -> None:
    with stack.client() as c:
        r = c.post("/v1/chat/completions", json=_ask(), headers={"X-Gateway-Task": "classify"})
        assert r.status_code == 200, r.text
        job = c.get(f"/v1/jobs/{r.headers['x-gateway-job-id']}").json()
    assert r.headers["x-gateway-deployment"] == "route-small@sim"
    assert _route(r.headers) == {"task": "classify", "tier": "small", "escalations": "0",
                                 "saving_usd": _route(r.headers)["saving_usd"], "why": "task classify"}
    assert job["model"] == "auto" and job["model_used"] == "sim-small" and job["task"] == "classify"
    route = job["route"]
    assert route["tiers"] == ["small", "medium", "large"] and route["ceiling_deployment"] == "route-large@sim"
    # priced at the large tier (5/20 $/Mtok), the same usage costs 50x the small tier's (0.1/0.4)
    assert route["ceiling_cost_usd"] == pytest.approx(job["cost_usd"] * 50)
    assert route["saving_usd"] == pytest.approx(route["ceiling_cost_usd"] - job["cost_usd"])


def test_metadata_task_and_the_native_task_field_route_too(stack: Stack) -> None:
    with stack.client() as c:
        chat = c.post("/v1/chat/completions", json=_ask(metadata={"task": "reason"}))
        native = c.post("/v1/jobs", params={"wait": 20}, json={**_ask(), "task": "Reason"}).json()
    assert chat.headers["x-gateway-deployment"] == "route-large@sim"
    assert native["deployment"] == "route-large@sim" and native["route"]["task"] == "reason"


def test_auto_without_a_task_starts_where_the_complexity_scorer_says(stack: Stack) -> None:
    hard = ("Design a rate limiter and explain the trade-offs step by step:\n1. the data structure\n"
            "2. the algorithm\n3. the failure modes\n```python\ndef allow(key):\n    return True\n```\n"
            "Then derive the probability that a burst of 3 * 100 requests is refused.")
    with stack.client() as c:
        easy_r = c.post("/v1/chat/completions", json=_ask("Say hi"))
        hard_r = c.post("/v1/chat/completions", json=_ask(hard))
    assert easy_r.headers["x-gateway-deployment"] == "route-small@sim"
    assert _route(easy_r.headers)["task"] == "-" and _route(easy_r.headers)["why"].startswith("complexity 0.00")
    assert hard_r.headers["x-gateway-deployment"] == "route-large@sim"
    assert "code" in _route(hard_r.headers)["why"]


def test_an_unknown_task_is_a_400_that_lists_the_tasks(stack: Stack) -> None:
    with stack.client() as c:
        r = c.post("/v1/chat/completions", json=_ask(), headers={"X-Gateway-Task": "juggle"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "task" and "classify" in r.json()["error"]["message"]


def test_images_skip_a_tier_that_cannot_see_them(stack: Stack) -> None:
    image = [{"type": "text", "text": "What is in it?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    with stack.client() as c:
        r = c.post("/v1/chat/completions", json={**_ask(), "messages": [{"role": "user", "content": image}]},
                   headers={"X-Gateway-Task": "classify"})
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-deployment"] == "route-medium@sim"
    assert "no usable deployment in small" in _route(r.headers)["why"]


def test_a_prompt_too_long_for_every_context_window_is_a_400_naming_it(stack: Stack) -> None:
    with stack.client() as c:
        r = c.post("/v1/chat/completions", json=_ask(max_tokens=150_000), headers={"X-Gateway-Task": "classify"})
        listed = c.get("/v1/jobs", params={"limit": 5}).json()["data"]
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "no_capable_deployment" and "context window" in error["message"]
    assert "100000" in error["message"]  # the largest window there is
    assert all(job["route"] is None or job["created_at"] < time.time() - 0 for job in listed)


def test_a_feature_that_may_not_use_a_tier_is_routed_around_it(stack: Stack) -> None:
    with stack.client("globex") as c:
        around = c.post("/v1/chat/completions", json=_ask(), headers={"X-Gateway-Task": "classify",
                                                                       "X-Gateway-Feature": "no-small"})
        refused = c.post("/v1/chat/completions", json=_ask(), headers={"X-Gateway-Task": "classify",
                                                                        "X-Gateway-Feature": "pinned"})
        pinned = c.post("/v1/chat/completions", json={**_ask(), "model": "gpt-4o-mini"},
                        headers={"X-Gateway-Feature": "pinned"})
    assert around.headers["x-gateway-deployment"] == "route-medium@sim"
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    assert pinned.status_code == 200 and pinned.headers["x-gateway-deployment"] == "gpt-4o-mini@sim"


@pytest.mark.parametrize("mode, extra", [("length", {}), ("schema", {"response_format": SCHEMA}),
                                         ("refusal", {}), ("empty", {})])
def test_an_answer_that_fails_a_check_escalates_one_tier(stack: Stack, mode: str, extra: dict[str, Any]) -> None:
    with stack.client() as c:
        r = c.post("/v1/chat/completions", json=_ask(f"Classify this [[sim-fail:{mode}]] {time.time()}", **extra),
                   headers={"X-Gateway-Task": "classify"})
        assert r.status_code == 200, r.text
        job = c.get(f"/v1/jobs/{r.headers['x-gateway-job-id']}").json()
    assert r.headers["x-gateway-deployment"] == "route-medium@sim"
    assert _route(r.headers)["tier"] == "medium" and _route(r.headers)["escalations"] == "1"
    assert job["attempts"] == 2 and job["route"]["escalations"] == 1
    if mode == "schema":
        assert set(__import__("json").loads(job["result"]["choices"][0]["message"]["content"])) == {"label", "score"}
    # the small tier's answer was paid for: the job costs both attempts
    medium_only = (job["usage"]["prompt_tokens"] * 1 + job["usage"]["completion_tokens"] * 4) / 1e6
    assert job["cost_usd"] > medium_only


def test_escalations_are_counted_per_route_and_tier(stack: Stack) -> None:
    with stack.client() as c:
        c.post("/v1/chat/completions", json=_ask(f"[[sim-fail:empty]] {time.time()}"),
               headers={"X-Gateway-Task": "classify"})
    text = httpx.get(f"{stack.url}/metrics", headers=ADMIN).text
    assert 'gateway_route_attempts_total{result="escalated",task="classify",tier="small"}' in text
    assert 'gateway_route_attempts_total{result="answered",task="classify",tier="medium"}' in text


def test_interactive_spills_up_a_tier_when_its_tier_is_spent_and_batch_waits(stack: Stack) -> None:
    # spill-small@sim: 6,000 TPM x 0.95 headroom; a job of ~1,510 tokens, so three fit and the fourth does not
    job = {**_ask("Summarise", max_tokens=1500), "task": "spill"}
    with stack.client("globex") as c:
        sent = [c.post("/v1/jobs", params={"wait": 20}, json={**job, "priority": "interactive"}).json()
                for _ in range(4)]
        batch = c.post("/v1/jobs", json={**job, "priority": "batch"}).json()
        time.sleep(1.0)
        waiting = c.get(f"/v1/jobs/{batch['id']}").json()
        done = wait_for_status(c, batch["id"], {"succeeded", "failed"}, timeout=90)
    assert [j["deployment"] for j in sent][:3] == ["spill-small@sim"] * 3
    assert sent[3]["deployment"] == "spill-large@sim" and sent[3]["route"]["tier"] == "spill-large"
    assert waiting["status"] == "queued"  # the batch lane waits for its tier to refill
    assert done["status"] == "succeeded" and done["deployment"] == "spill-small@sim"


def test_a_route_whose_every_breaker_is_open_is_a_503_with_retry_after(stack: Stack, faults: Any) -> None:
    faults(kind="error", status=500, model="sim-fragile")
    ask = {**_ask(), "task": "fragile", "priority": "standard"}
    with stack.client("globex") as c:
        failed = []
        for _ in range(100):  # the breaker opens after 2 failures, for 3 s
            r = c.post("/v1/jobs", json=ask)
            if r.status_code == 503:
                break
            failed.append(r.json())
            time.sleep(0.1)
        assert r.status_code == 503, [j["status"] for j in failed]
        assert r.json()["error"]["code"] == "route_unavailable" and int(r.headers["retry-after"]) >= 1
        assert "x-gateway-job-id" not in r.headers  # refused before anything was stored
        ended = [wait_for_status(c, j["id"], {"succeeded", "failed", "expired"}) for j in failed]
    assert failed and all(j["status"] == "failed" for j in ended)  # every accepted job ended: nothing lost


def test_an_interactive_route_without_budget_before_its_deadline_is_a_429(stack: Stack) -> None:
    # scarce@sim: 3,000 TPM x 0.95; the first job takes ~2,010 of it, the second needs as much again
    ask = {**_ask(max_tokens=2000), "task": "scarce", "priority": "interactive"}
    with stack.client("globex") as c:
        first = c.post("/v1/jobs", params={"wait": 20}, json=ask)
        second = c.post("/v1/jobs", json={**ask, "deadline": 2})
    assert first.status_code == 200 and first.json()["status"] == "succeeded"
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "deadline_unreachable" and int(second.headers["retry-after"]) >= 1


def test_a_key_of_its_own_may_be_kept_from_a_tier(stack: Stack) -> None:
    from shared.db.session import session_scope
    from shared.db.tenants import create_key

    with session_scope() as db:
        key = create_key(db, "acme", name="no-small", models={"allow": None, "deny": ["sim-small"]})[1]
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        r = c.post("/v1/chat/completions", json=_ask(), headers={"X-Gateway-Task": "classify"})
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-deployment"] == "route-medium@sim"


def test_a_failed_call_on_the_cheap_tier_goes_up_a_tier_at_once_for_a_waiting_caller(stack: Stack,
                                                                                    faults: Any) -> None:
    faults(kind="error", status=500, model="sim-small")
    with stack.client() as c:
        r = c.post("/v1/chat/completions", json=_ask(f"Classify {time.time()}"), headers={"X-Gateway-Task": "classify"})
        job = c.get(f"/v1/jobs/{r.headers['x-gateway-job-id']}").json()
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "route-medium@sim"
    assert job["attempts"] == 2 and job["route"]["escalations"] == 0  # a retry, not an escalation
