"""The deployment's headroom follows the provider's rate-limit headers through the real path: answers
whose headers agree with the mirror raise it above the configured 0.95, a 429 backs it off (settled by
the worker or the api that made the call, read back at ``/v1/admin/budgets``)."""

from __future__ import annotations

import httpx

from tests.conftest import ADMIN, Stack, wait_for_status

CHAT = {"max_tokens": 8, "messages": [{"role": "user", "content": "Say hi."}]}


def headroom(stack: Stack, deployment: str) -> float:
    buckets = httpx.get(f"{stack.url}/v1/admin/budgets", headers=ADMIN).json()["buckets"]
    tpm = next(b for b in buckets if b["scope"]["level"] == "deployment"
               and b["scope"]["deployment"] == deployment and b["scope"]["axis"] == "tpm")
    return float(tpm["headroom"])


def test_answers_that_agree_with_the_mirror_raise_the_headroom(stack: Stack) -> None:
    with stack.client("globex") as c:
        for i in range(5):
            r = c.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o-mini"},
                       headers={"X-Gateway-Feature": f"headroom-{i}"})
            assert r.status_code == 200, r.text
    assert headroom(stack, "gpt-4o-mini@sim") > 0.95


def test_a_429_from_the_provider_backs_the_headroom_off(stack: Stack, faults: object) -> None:
    faults(kind="storm", model="gpt-storm", retry_after_s=1)  # type: ignore[operator]
    with stack.client("globex") as c:
        job = c.post("/v1/jobs", json={**CHAT, "model": "storm", "feature": "headroom-storm"}).json()
        wait_for_status(c, job["id"], {"failed"}, timeout=60)
    assert headroom(stack, "storm@sim") <= 0.95
