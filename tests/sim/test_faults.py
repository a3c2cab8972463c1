"""Injected faults, switched at run time through /sim/faults, as clients see them."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from ops.sim.config import FaultConfig, LatencyConfig, SimulatorConfig
from ops.sim.faults import FaultBoard
from ops.sim.latency import pace_for

from .conftest import ManualClock

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


@pytest.fixture
def sim(make_sim):
    return make_sim(SimulatorConfig(), ManualClock())


def set_faults(sim, *faults: dict) -> dict:
    with httpx.Client(base_url=sim.url) as admin:
        r = admin.post("/sim/faults", json={"faults": list(faults), "replace": True})
    assert r.status_code == 200, r.text
    return r.json()


def oai(sim) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.url + "/v1", api_key="k", max_retries=0)


@pytest.mark.parametrize(("status", "error"), [
    (500, openai.InternalServerError), (502, openai.InternalServerError), (503, openai.InternalServerError),
])
def test_error_status_in_openai_format(sim, status, error):
    set_faults(sim, {"kind": "error", "status": status})
    with pytest.raises(error) as err:
        oai(sim).chat.completions.create(**BODY)
    assert err.value.status_code == status and err.value.body["type"] == "server_error"
    assert "x-ratelimit-remaining-requests" in err.value.response.headers


def test_anthropic_overloaded_is_529(sim):
    set_faults(sim, {"kind": "error", "status": 529})
    client = anthropic.Anthropic(base_url=sim.url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as err:
        client.messages.create(model="claude-haiku-4-5", messages=BODY["messages"], max_tokens=10)
    assert err.value.status_code == 529
    assert err.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
                              "request_id": err.value.body["request_id"]}


def test_outage_window_follows_the_clock(make_sim):
    clock = ManualClock()
    sim = make_sim(SimulatorConfig(), clock)
    set_faults(sim, {"kind": "outage", "after_s": 10, "duration_s": 30})
    codes = []
    with sim.client() as client:
        for _ in range(5):
            codes.append(client.post("/v1/chat/completions", json=BODY).status_code)
            clock.advance(10)
    assert codes == [200, 503, 503, 503, 200]


def test_error_rate_is_a_probability(make_sim):
    sim = make_sim(SimulatorConfig(seed=3), ManualClock())
    set_faults(sim, {"kind": "error", "status": 500, "rate": 0.3})
    with sim.client() as client:
        codes = [client.post("/v1/chat/completions", json=BODY).status_code for _ in range(300)]
    assert 60 <= codes.count(500) <= 120 and codes.count(200) == 300 - codes.count(500)


def test_storm_is_a_429_the_meter_did_not_cause(sim):
    set_faults(sim, {"kind": "storm", "retry_after_s": 7})
    with pytest.raises(openai.RateLimitError) as err:
        oai(sim).chat.completions.create(**BODY)
    headers = err.value.response.headers
    assert headers["retry-after"] == "7" and headers["x-ratelimit-remaining-tokens"] == "60000"
    stats = httpx.get(sim.url + "/sim/stats").json()["totals"]
    assert stats["rate_limited"] == {"storm": 1} and stats["faults"] == {"storm:429": 1}


def test_hang_outlasts_the_client_timeout(sim):
    set_faults(sim, {"kind": "hang", "hang_s": 30})
    with sim.client(timeout=0.3) as client, pytest.raises(httpx.ReadTimeout):
        client.post("/v1/chat/completions", json=BODY)


def test_reset_drops_the_connection(sim):
    set_faults(sim, {"kind": "reset"})
    with sim.client() as client, pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post("/v1/chat/completions", json=BODY)
    with pytest.raises(openai.APIConnectionError):
        oai(sim).chat.completions.create(**BODY)


def test_cut_resets_a_stream_after_its_first_events(sim):
    set_faults(sim, {"kind": "cut", "after_events": 2})
    lines = []
    with sim.client() as client, pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)), \
            client.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as r:
        assert r.status_code == 200
        lines.extend(line for line in r.iter_lines() if line)
    assert len(lines) == 2 and all(line.startswith("data: {") for line in lines)
    with sim.client() as client, pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post("/v1/chat/completions", json=BODY)  # a call that does not stream: reset before any answer


def test_malformed_json_body(sim):
    set_faults(sim, {"kind": "malformed"})
    with sim.client() as client:
        r = client.post("/v1/chat/completions", json=BODY)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()


def test_faults_scoped_by_model_and_key(sim):
    set_faults(sim, {"kind": "error", "status": 503, "model": "gpt-4o", "key": "bad"})
    cases = [("bad", "gpt-4o"), ("bad", "gpt-4o-mini"), ("good", "gpt-4o")]
    codes = []
    for key, model in cases:
        with sim.client(key) as client:
            codes.append(client.post("/v1/chat/completions", json={**BODY, "model": model}).status_code)
    assert codes == [503, 200, 200]


def test_fault_admin_lifecycle(sim):
    added = set_faults(sim, {"kind": "error"}, {"kind": "slowdown", "factor": 3})["added"]
    with httpx.Client(base_url=sim.url) as admin:
        assert admin.delete(f"/sim/faults/{added[0]['id']}").json()["faults"][0]["kind"] == "slowdown"
        assert admin.delete("/sim/faults").json() == {"faults": []}
        assert admin.post("/sim/faults", json={"kind": "nonsense"}).status_code == 400
    with sim.client() as client:
        assert client.post("/v1/chat/completions", json=BODY).status_code == 200


def test_slowdown_multiplies_the_latency_model():
    board = FaultBoard(ManualClock())
    board.add([FaultConfig(kind="slowdown", factor=4), FaultConfig(kind="slowdown", factor=2)])
    outcome = board.decide("m", "k")
    assert outcome is not None and outcome.kind is None and outcome.slowdown == 8
    pace = pace_for(LatencyConfig(ttft_ms=100, per_token_ms=10), outcome.slowdown)
    assert pace.ttft_s == pytest.approx(0.8) and pace.per_token_s == pytest.approx(0.08)
