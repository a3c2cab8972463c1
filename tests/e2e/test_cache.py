"""The cache through the real api, real Redis, a real worker and the simulator over HTTP: exact and
semantic hits, no crossing tenants, bypass, TTL, purge, hits across api processes, and a cache Redis
that restarts (misses, never errors)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from shared.cache.plan import plan_for
from shared.config import get_settings
from shared.keys import Keys
from shared.routing import chain_for
from shared.schemas import ChatRequest
from tests.conftest import (
    ADMIN,
    PREFIX,
    REDIS_URL,
    ROOT,
    Stack,
    free_port,
    spawn,
    stop,
    wait_for_status,
    wait_http,
)

MODEL = "cache"  # its deployment's replies are short: they finish with "stop"


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 64, "temperature": 0, "messages": [{"role": "user", "content": text}],
            **extra}


def chat(stack: Stack, body: dict[str, Any], tenant: str = "acme", feature: str = "default",
         url: str | None = None, **headers: str) -> httpx.Response:
    reply = httpx.post(f"{url or stack.url}/v1/chat/completions", json=body, timeout=60, headers={
        "Authorization": f"Bearer {stack.keys[tenant]}", "X-Gateway-Feature": feature, **headers})
    assert reply.status_code == 200, reply.text
    return reply


def paid(stack: Stack, body: dict[str, Any], tenant: str = "acme", feature: str = "default",
         url: str | None = None, store: redis.Redis | None = None, **headers: str) -> httpx.Response:
    """``chat``, then wait until its answer is in the cache: the attempt stores it in its last round trip,
    after the caller was answered, so a repeat sent at once may still miss."""
    reply = chat(stack, body, tenant, feature, url, **headers)
    wait_stored(body, tenant, feature, store, reply.headers["x-gateway-job-id"])
    return reply


def wait_stored(body: dict[str, Any], tenant: str = "acme", feature: str = "default",
                store: redis.Redis | None = None, job_id: str = "") -> None:
    """Until the answer to ``body`` is in the cache (and in its semantic scope, when it has one)."""
    settings = get_settings()
    plan = plan_for(settings, tenant, feature, MODEL, chain_for(settings, MODEL),
                    ChatRequest.model_validate(body).provider_payload())
    keys, r = Keys(PREFIX), store or redis.Redis.from_url(REDIS_URL)
    waiting_for = [keys.cache_entry(tenant, plan.digest)]
    if plan.semantic is not None:
        waiting_for.append(keys.semantic_scope(tenant, feature, plan.semantic.scope, "meta"))
    deadline = time.monotonic() + 10
    while r.exists(*waiting_for) < len(waiting_for):
        assert time.monotonic() < deadline, f"{job_id or body} was never stored"
        time.sleep(0.01)


def unique(text: str) -> str:
    return f"{text} ({uuid.uuid4().hex[:8]})"


def provider_calls(stack: Stack) -> int:
    stats = httpx.get(f"{stack.sim_url}/sim/stats", params={"series": 0}).json()
    return sum(row["requests"] for row in stats["by_key_model"] if row["model"] == "gpt-cache")


def job(stack: Stack, job_id: str, tenant: str = "acme") -> dict[str, Any]:
    """The job's view; a hit's row is written just after its caller was answered, so it may take a moment."""
    deadline = time.monotonic() + 10
    while (found := stack.client(tenant).get(f"/v1/jobs/{job_id}")).status_code == 404:
        assert time.monotonic() < deadline, f"job {job_id} was never recorded"
        time.sleep(0.01)
    return found.json()  # type: ignore[no-any-return]


def test_identical_calls_make_one_provider_call_and_hits_cost_nothing(stack: Stack) -> None:
    body, before = ask(unique("Name a primary colour")), provider_calls(stack)

    first = paid(stack, body)
    second, third = chat(stack, body), chat(stack, body)

    assert [r.headers["x-gateway-cache"] for r in (first, second, third)] == ["miss", "hit", "hit"]
    assert provider_calls(stack) == before + 1
    assert second.json()["choices"] == first.json()["choices"] == third.json()["choices"]
    original = job(stack, first.headers["x-gateway-job-id"])
    served = job(stack, second.headers["x-gateway-job-id"])
    assert original["cost_usd"] > 0 and original["cache_status"] == "miss"
    assert served["status"] == "succeeded" and served["cache_status"] == "hit" and served["attempts"] == 0
    assert served["cost_usd"] == 0 and served["saved_usd"] == original["cost_usd"]
    assert served["cache_source_job"] == original["id"] == second.headers["x-gateway-cache-source-job"]
    assert float(second.headers["x-gateway-cost-usd"]) == 0


def test_key_order_whitespace_and_dialect_do_not_matter(stack: Stack) -> None:
    text = unique("Say hello to the moon")
    first = paid(stack, ask(f"  {text}\n"))
    reordered = {"messages": [{"content": text, "role": "user"}], "temperature": 0.0, "max_tokens": 64,
                 "model": MODEL}
    assert chat(stack, reordered).headers["x-gateway-cache"] == "hit"

    anthropic = httpx.post(f"{stack.url}/v1/messages", timeout=60, headers={"x-api-key": stack.keys["acme"]},
                           json={"model": MODEL, "max_tokens": 64, "temperature": 0,
                                 "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]})

    assert anthropic.status_code == 200, anthropic.text
    assert anthropic.headers["x-gateway-cache"] == "hit"
    assert anthropic.headers["x-gateway-cache-source-job"] == first.headers["x-gateway-job-id"]
    assert anthropic.json()["content"][0]["text"] == first.json()["choices"][0]["message"]["content"]


def test_answers_of_queued_and_batch_jobs_are_stored_by_the_worker(stack: Stack) -> None:
    queued, batched = ask(unique("Queued for a worker")), ask(unique("Sent in a batch"))
    job_id = stack.client().post("/v1/jobs", json={**queued, "priority": "standard"}).json()["id"]
    batch = stack.client().post("/v1/jobs/batch", json={"jobs": [{**batched, "priority": "batch"}]})
    assert batch.status_code == 202, batch.text
    assert batch.json()["data"][0]["cache_status"] == "bypass"  # a batch does not read the cache
    for body, source in ((queued, job_id), (batched, batch.json()["data"][0]["id"])):
        wait_for_status(stack.client(), source, {"succeeded"})
        wait_stored(body, job_id=source)
        reply = chat(stack, body)
        assert reply.headers["x-gateway-cache"] == "hit"
        assert reply.headers["x-gateway-cache-source-job"] == source


def test_a_streaming_caller_gets_the_hit_as_events(stack: Stack) -> None:
    body = ask(unique("Count to three"))
    first = paid(stack, body)
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json={**body, "stream": True}, timeout=60,
                      headers={"Authorization": f"Bearer {stack.keys['acme']}"}) as reply:
        events = [line for line in reply.iter_lines() if line.startswith("data: ")]
    assert reply.headers["x-gateway-cache"] == "hit"
    assert events[-1] == "data: [DONE]"
    assert first.json()["choices"][0]["message"]["content"] in "".join(events)


def test_a_tenant_never_gets_another_tenants_answer(stack: Stack) -> None:
    body, before = ask(unique("What is our refund policy?")), provider_calls(stack)
    paid(stack, body, tenant="acme")

    theirs = paid(stack, body, tenant="globex")

    assert theirs.headers["x-gateway-cache"] == "miss"
    assert provider_calls(stack) == before + 2
    assert chat(stack, body, tenant="globex").headers["x-gateway-cache-source-job"] == theirs.headers[
        "x-gateway-job-id"]


@pytest.mark.parametrize("how", ["no-store", "no-cache", "field", "sampling", "n"])
def test_what_bypasses_the_cache(stack: Stack, how: str) -> None:
    body = ask(unique(f"Describe a {how} bypass"))
    paid(stack, body)
    if how in ("no-store", "no-cache"):
        reply = chat(stack, body, **{"Cache-Control": how})
    elif how == "field":
        sent = stack.client().post("/v1/jobs", params={"wait": 30}, json={**body, "cache": "no-store"})
        reply = httpx.Response(sent.status_code, headers=sent.headers)
    elif how == "sampling":
        reply = chat(stack, {**body, "temperature": 0.7})
    else:
        reply = chat(stack, {k: v for k, v in body.items() if k != "temperature"})
    assert reply.headers["x-gateway-cache"] == "bypass"
    assert job(stack, reply.headers["x-gateway-job-id"])["cache_status"] == "bypass"


def test_no_cache_refreshes_the_entry_and_a_feature_may_cache_sampling(stack: Stack) -> None:
    body = ask(unique("Pick a fruit"))
    paid(stack, body)
    fresh = paid(stack, body, **{"Cache-Control": "no-cache"})
    time.sleep(0.2)  # the entry is there already; its refresh lands in the same moment
    assert chat(stack, body).headers["x-gateway-cache-source-job"] == fresh.headers["x-gateway-job-id"]

    sampled = {**body, "temperature": 0.9}
    assert paid(stack, sampled, feature="sampler").headers["x-gateway-cache"] == "miss"
    assert chat(stack, sampled, feature="sampler").headers["x-gateway-cache"] == "hit"


def test_tool_calls_and_cut_answers_are_not_stored(stack: Stack) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]
    tool_call = ask(unique("Look it up"), tools=tools, tool_choice="required")
    cut = ask(unique("Write a long essay"), max_tokens=2)
    for body in (tool_call, cut):
        chat(stack, body)
        assert chat(stack, body).headers["x-gateway-cache"] == "miss"


def test_entries_expire_with_their_ttl(stack: Stack) -> None:
    body = ask(unique("What day is it?"))
    paid(stack, body, feature="shortlived")
    assert chat(stack, body, feature="shortlived").headers["x-gateway-cache"] == "hit"
    time.sleep(1.2)  # the feature's ttl_s is 1
    assert chat(stack, body, feature="shortlived").headers["x-gateway-cache"] == "miss"


def test_semantic_hit_for_a_paraphrase_and_none_for_a_near_miss(stack: Stack) -> None:
    place = f"Zorbia{uuid.uuid4().hex[:6]}"
    first = paid(stack, ask(f"What is the capital of {place}?"), feature="faq")

    paraphrase = chat(stack, ask(f"what's the capital of {place}"), feature="faq")
    near_miss = chat(stack, ask(f"What is the population of {place}?"), feature="faq")
    other_tenant = chat(stack, ask(f"what's the capital of {place}"), tenant="globex", feature="faq")

    assert paraphrase.headers["x-gateway-cache"] == "semantic"
    assert paraphrase.headers["x-gateway-cache-source-job"] == first.headers["x-gateway-job-id"]
    assert 0.7 <= float(paraphrase.headers["x-gateway-cache-similarity"]) <= 1
    assert paraphrase.json()["choices"] == first.json()["choices"]
    served = job(stack, paraphrase.headers["x-gateway-job-id"])
    assert served["cache_status"] == "semantic" and served["cost_usd"] == 0 and served["cache_similarity"] >= 0.7
    assert near_miss.headers["x-gateway-cache"] == "miss"
    assert other_tenant.headers["x-gateway-cache"] == "miss"


def test_operators_purge_a_feature_or_a_tenant(stack: Stack) -> None:
    kept, purged = ask(unique("Keep me")), ask(unique("Purge me"))
    paid(stack, kept, feature="default")
    paid(stack, purged, feature="faq")

    r = httpx.delete(f"{stack.url}/v1/admin/cache", params={"tenant": "acme", "feature": "faq"}, headers=ADMIN)

    assert r.status_code == 200, r.text
    assert r.json()["tenant"] == "acme" and r.json()["exact"] >= 1
    assert chat(stack, purged, feature="faq").headers["x-gateway-cache"] == "miss"
    assert chat(stack, kept).headers["x-gateway-cache"] == "hit"
    out = subprocess.run([sys.executable, "-m", "cli", "cache", "purge", "--tenant", "acme"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "purged" in out.stdout
    assert chat(stack, kept).headers["x-gateway-cache"] == "miss"


def test_purge_refuses_bad_input_and_tenant_keys(stack: Stack) -> None:
    bad = httpx.delete(f"{stack.url}/v1/admin/cache", params={"tenant": "Not A Tenant!"}, headers=ADMIN)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "query.tenant"
    missing = httpx.delete(f"{stack.url}/v1/admin/cache", headers=ADMIN)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "query.tenant"
    tenant = httpx.delete(f"{stack.url}/v1/admin/cache", params={"tenant": "acme"},
                          headers={"Authorization": f"Bearer {stack.keys['acme']}"})
    assert tenant.status_code == 401


def test_a_hit_is_served_by_every_api_process(stack: Stack, second_api: Callable[..., str]) -> None:
    other = second_api()
    body = ask(unique("Which api answers?"))
    paid(stack, body)
    assert chat(stack, body, url=other).headers["x-gateway-cache"] == "hit"
    place = f"Quarnia{uuid.uuid4().hex[:6]}"
    paid(stack, ask(f"What is the capital of {place}?"), feature="faq", url=other)
    assert chat(stack, ask(f"capital of {place}?"), feature="faq").headers["x-gateway-cache"] == "semantic"


def test_hits_and_savings_are_counted_for_prometheus(stack: Stack) -> None:
    body = ask(unique("Count me"))
    paid(stack, body, feature="faq")
    chat(stack, body, feature="faq")
    metrics = httpx.get(f"{stack.url}/metrics", headers=ADMIN).text
    assert 'gateway_cache_lookups_total{feature="faq",result="hit",tenant="acme"}' in metrics
    assert 'gateway_cache_saved_usd_total{feature="faq",tenant="acme"}' in metrics


@pytest.fixture
def second_api(stack: Stack) -> Iterator[Callable[..., str]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(**env: str) -> str:
        port = free_port()
        proc = spawn("cli", "api", "--port", str(port), env=env, log=f"api-cache-{port}")
        started.append(proc)
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in started:
        stop(proc)


class OwnRedis:
    """A Redis of the cache's own, on a free port, that a test kills and starts again (empty)."""

    def __init__(self, server: str) -> None:
        self.server, self.port = server, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.server, "--port", str(self.port), "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def cache_redis() -> Iterator[OwnRedis]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    own = OwnRedis(server)
    yield own
    own.kill()


def test_a_cache_redis_restart_means_misses_never_errors(stack: Stack, second_api: Callable[..., str],
                                                          cache_redis: OwnRedis) -> None:
    api = second_api(GATEWAY_CACHE__REDIS_URL=cache_redis.url)  # its cache's Redis is down from the start
    body = ask(unique("Is the cache up?"))

    assert [chat(stack, body, url=api).headers["x-gateway-cache"] for _ in range(2)] == ["miss", "miss"]

    cache_redis.start()
    own = redis.Redis.from_url(cache_redis.url)
    paid(stack, body, url=api, store=own)
    assert chat(stack, body, url=api).headers["x-gateway-cache"] == "hit"
    cache_redis.kill()  # down again, mid-run
    assert chat(stack, body, url=api).headers["x-gateway-cache"] == "miss"
    cache_redis.start()  # back, empty
    assert paid(stack, body, url=api, store=own).headers["x-gateway-cache"] == "miss"
    assert chat(stack, body, url=api).headers["x-gateway-cache"] == "hit"
