"""Batch callers wait instead of polling: GET /v1/jobs/{id}?wait= and GET /v1/jobs?ids=...&wait= answer
once the jobs have ended (woken by their end, not by a poll), or with the jobs as they are when the
wait runs out."""

from __future__ import annotations

from tests.conftest import Stack

SLOW = {"model": "slow", "max_tokens": 8, "priority": "batch", "messages": [{"role": "user", "content": "x"}]}
FAST = {"model": "gpt-4o-mini", "max_tokens": 8, "priority": "batch", "messages": [{"role": "user", "content": "y"}]}


def test_a_long_poll_on_one_job_answers_when_it_ends(stack: Stack) -> None:
    with stack.client() as c:
        job = c.post("/v1/jobs", json=SLOW).json()
        done = c.get(f"/v1/jobs/{job['id']}", params={"wait": 30})
    assert done.status_code == 200 and done.json()["status"] == "succeeded"
    assert done.headers["x-gateway-status"] == "succeeded"


def test_a_long_poll_that_runs_out_answers_with_the_job_as_it_is(stack: Stack) -> None:
    with stack.client() as c:
        job = c.post("/v1/jobs", json=SLOW).json()
        early = c.get(f"/v1/jobs/{job['id']}", params={"wait": 0.2}).json()
    assert early["status"] in ("queued", "admitted", "running")


def test_one_long_poll_waits_for_many_jobs(stack: Stack) -> None:
    with stack.client() as c:
        ids = [c.post("/v1/jobs", json=job).json()["id"] for job in (SLOW, FAST, FAST)]
        page = c.get("/v1/jobs", params={"ids": ",".join(ids), "wait": 30}).json()
    assert [v["id"] for v in page["data"]] == ids
    assert {v["status"] for v in page["data"]} == {"succeeded"}


def test_a_long_poll_names_what_is_wrong(stack: Stack) -> None:
    with stack.client() as c:
        mine = c.post("/v1/jobs", json=FAST).json()["id"]
    with stack.client("globex") as other:
        foreign = other.get("/v1/jobs", params={"ids": mine, "wait": 1})
        no_ids = other.get("/v1/jobs", params={"wait": 1})
        too_many = other.get("/v1/jobs", params={"ids": ",".join(f"job_{i}" for i in range(101))})
    assert foreign.status_code == 404 and foreign.json()["error"]["param"] == "ids"  # another tenant's job
    assert no_ids.status_code == 400 and no_ids.json()["error"]["param"] == "wait"
    assert too_many.status_code == 400
