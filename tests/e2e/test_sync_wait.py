"""Hundreds of callers waiting at once are all woken by the api's one shared subscription."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import Stack


@pytest.mark.anyio
async def test_three_hundred_concurrent_sync_waiters_all_get_their_own_answer(stack: Stack) -> None:
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with httpx.AsyncClient(base_url=stack.url, limits=limits, timeout=120,
                                 headers={"Authorization": f"Bearer {stack.keys['globex']}"}) as client:
        async def ask(i: int) -> tuple[int, httpx.Response]:
            return i, await client.post("/v1/jobs", params={"wait": 90}, json={
                "model": "gpt-4o-mini", "max_tokens": 8, "priority": "standard", "feature": "waiters",
                "messages": [{"role": "user", "content": f"question number {i}"}]})

        answers = await asyncio.gather(*(ask(i) for i in range(300)))
    assert all(r.status_code == 200 for _, r in answers)
    jobs = [r.json() for _, r in answers]
    assert all(job["status"] == "succeeded" for job in jobs)
    assert len({job["id"] for job in jobs}) == 300  # each caller got its own job back, none crossed
