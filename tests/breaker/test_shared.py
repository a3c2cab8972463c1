"""One breaker per deployment for the whole fleet: shared through Redis, on the Redis clock, logged,
counted and readable in one round trip."""

from __future__ import annotations

import time

import redis
from prometheus_client import REGISTRY

from shared.breaker import Breakers
from shared.config import BreakerConfig, Settings
from shared.keys import Keys
from tests.breaker.conftest import DEP, T0, MakeBreakers
from tests.breaker.helpers import outcomes, trip
from tests.conftest import REDIS_URL


def test_two_processes_see_and_build_the_same_breaker(make: MakeBreakers) -> None:
    worker = make(redis.Redis.from_url(REDIS_URL, decode_responses=True))
    scheduler = make(redis.Redis.from_url(REDIS_URL, decode_responses=True))

    outcomes(worker, 5, T0)
    assert outcomes(scheduler, 5, T0, kind="timeout").state == "open"  # 10 of 10, from two processes

    assert not worker.allow(DEP, now=T0 + 1).allowed
    probe = scheduler.allow(DEP, now=T0 + 15)
    assert worker.state(DEP, now=T0 + 15)["probes_in_flight"] == 1
    assert worker.record(DEP, ok=False, kind="server", ticket=probe.ticket, now=T0 + 16).state == "open"
    assert scheduler.state(DEP, now=T0 + 16)["state"] == "open"


def test_on_the_redis_clock_it_opens_and_half_opens(make: MakeBreakers) -> None:
    b = make(open_s=0.2)
    outcomes_now = [b.record(DEP, ok=False, kind="rate_limit") for _ in range(5)]
    assert outcomes_now[-1].state == "open"
    first = b.allow(DEP)
    assert not first.allowed and 0 < first.retry_in_s <= 0.2

    deadline = time.monotonic() + 5
    while not (permit := b.allow(DEP)).allowed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert permit.probe and permit.state == "half_open"


def test_transitions_are_counted_in_prometheus(breakers: Breakers) -> None:
    def count(to: str) -> float:
        value = REGISTRY.get_sample_value("gateway_breaker_transitions_total", {"deployment": DEP, "to": to})
        return value or 0.0

    before = {to: count(to) for to in ("open", "half_open", "closed")}
    trip(breakers, T0)
    for _ in range(3):
        permit = breakers.allow(DEP, now=T0 + 15)
        breakers.record(DEP, ok=True, ticket=permit.ticket, now=T0 + 15)

    assert {to: count(to) - before[to] for to in before} == {"open": 1, "half_open": 1, "closed": 1}


def test_the_log_keeps_the_last_hundred_transitions(breakers: Breakers) -> None:
    trip(breakers, T0)
    at = T0
    for _ in range(60):  # each round: open -> half_open -> open
        at += 15
        permit = breakers.allow(DEP, now=at)
        breakers.record(DEP, ok=False, kind="server", ticket=permit.ticket, now=at)

    log = breakers.transitions(DEP)
    assert len(log) == 100
    assert (log[0].from_state, log[0].to_state, log[0].at) == ("half_open", "open", at)
    assert len(breakers.transitions(DEP, limit=5)) == 5


def test_states_reads_every_deployment_in_one_call(client: redis.Redis, keys: Keys) -> None:
    b = Breakers(client, keys, {"a": BreakerConfig(), "b": BreakerConfig(open_s=60), "c": BreakerConfig()})
    trip(b, T0, dep="b")
    outcomes(b, 2, T0, dep="c")
    outcomes(b, 2, T0, ok=True, dep="c")

    views = b.states(now=T0 + 10)

    assert list(views) == ["a", "b", "c"]
    assert views["a"]["state"] == "closed" and views["a"]["opened_at"] is None
    assert views["b"]["state"] == "open"
    assert (views["b"]["opened_at"], views["b"]["half_open_at"], views["b"]["retry_in_s"]) == (T0, T0 + 60, 50)
    assert (views["c"]["calls"], views["c"]["failure_rate"]) == (4, 0.5)
    assert b.states([]) == {}


def test_a_deployment_missing_from_the_config_gets_the_default_breaker(client: redis.Redis, keys: Keys) -> None:
    b = Breakers(client, keys, {})
    assert outcomes(b, 10, T0, dep="unlisted").state == "open"


def test_a_disabled_breaker_always_allows_and_stores_nothing(make: MakeBreakers, client: redis.Redis) -> None:
    b = make(enabled=False)
    assert outcomes(b, 50, T0, kind="rate_limit").state == "closed"
    assert b.allow(DEP, now=T0).allowed
    assert client.exists(b.keys.breaker(DEP)) == 0


def test_from_settings_takes_each_deployments_breaker(client: redis.Redis, keys: Keys) -> None:
    settings = Settings.model_validate({"deployments": [
        {"name": "gpt-4o-mini@sim", "provider": "sim-openai", "model": "gpt-4o-mini", "limits": {"rpm": 60},
         "breaker": {"min_calls": 3, "open_s": 5}},
        {"name": "claude-haiku@sim", "provider": "sim-anthropic", "model": "claude-haiku-4-5", "limits": {"rpm": 60}},
    ]})
    b = Breakers.from_settings(client, keys, settings)
    assert b.config("gpt-4o-mini@sim").min_calls == 3
    assert b.config("claude-haiku@sim") == BreakerConfig()
    assert outcomes(b, 3, T0, dep="gpt-4o-mini@sim").state == "open"


def test_reset_forgets_the_breaker(breakers: Breakers) -> None:
    trip(breakers, T0)
    breakers.reset(DEP)
    assert breakers.allow(DEP, now=T0).state == "closed"
    assert breakers.transitions(DEP) == []
