"""Open fails fast; half-open admits exactly the configured probes, closes on their success and
re-opens on any probe failure."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import redis

from shared.breaker import Breakers, Permit
from tests.breaker.conftest import DEP, T0, MakeBreakers
from tests.breaker.helpers import outcomes, trip
from tests.conftest import REDIS_URL

HALF_OPEN = T0 + 15  # the defaults: open for 15 s


def probes(b: Breakers, n: int, at: float) -> list[Permit]:
    permits = [b.allow(DEP, now=at) for _ in range(n)]
    assert all(p.allowed and p.probe for p in permits)
    return permits


def test_open_fails_fast_and_says_when_to_ask_again(breakers: Breakers) -> None:
    trip(breakers, T0)

    permit = breakers.allow(DEP, now=T0 + 5)

    assert (permit.allowed, permit.state, permit.probe) == (False, "open", False)
    assert permit.retry_in_s == 10.0


def test_outcomes_of_calls_sent_before_the_opening_change_nothing(breakers: Breakers) -> None:
    trip(breakers, T0)
    assert outcomes(breakers, 5, T0 + 1, ok=True).state == "open"
    assert not breakers.allow(DEP, now=T0 + 14.9).allowed


def test_after_open_s_it_is_half_open_and_the_move_is_logged_once(breakers: Breakers) -> None:
    trip(breakers, T0)
    assert breakers.state(DEP, now=T0 + 20)["state"] == "half_open"  # reading moves nothing

    first = breakers.allow(DEP, now=T0 + 20)
    second = breakers.allow(DEP, now=T0 + 20)

    assert (first.state, first.probe, first.ticket) == ("half_open", True, first.ticket)
    [move] = first.transitions
    assert (move.from_state, move.to_state, move.at) == ("open", "half_open", HALF_OPEN)
    assert second.transitions == ()
    assert [t.to_state for t in breakers.transitions(DEP)] == ["half_open", "open"]


def test_half_open_admits_exactly_the_probes_however_many_ask_at_once(breakers: Breakers) -> None:
    trip(breakers, T0)
    start = threading.Barrier(32)

    def ask(_: int) -> Permit:
        own = Breakers(redis.Redis.from_url(REDIS_URL, decode_responses=True), breakers.keys, breakers.configs)
        start.wait()
        return own.allow(DEP, now=HALF_OPEN + 1)

    with ThreadPoolExecutor(32) as pool:
        permits = list(pool.map(ask, range(32)))

    admitted = [p for p in permits if p.allowed]
    assert len(admitted) == 3
    assert all(p.probe for p in admitted)
    assert len({p.ticket for p in admitted}) == 3
    assert breakers.state(DEP, now=HALF_OPEN + 1)["probes_in_flight"] == 3
    assert sum(len(p.transitions) for p in permits) == 1


def test_closes_after_every_probe_succeeded(breakers: Breakers) -> None:
    trip(breakers, T0)
    first, second, third = probes(breakers, 3, HALF_OPEN)

    assert breakers.record(DEP, ok=True, ticket=first.ticket, now=HALF_OPEN + 1).state == "half_open"
    assert breakers.record(DEP, ok=True, ticket=second.ticket, now=HALF_OPEN + 1).state == "half_open"
    assert not breakers.allow(DEP, now=HALF_OPEN + 1).allowed  # two done, one in flight: no more
    last = breakers.record(DEP, ok=True, ticket=third.ticket, now=HALF_OPEN + 2)

    assert last.state == "closed"
    assert last.transitions[0].reason == "3 probes succeeded"
    view = breakers.state(DEP, now=HALF_OPEN + 2)
    assert (view["calls"], view["consecutive_429"], view["probes_in_flight"]) == (0, 0, 0)
    assert breakers.allow(DEP, now=HALF_OPEN + 2) == Permit(allowed=True, state="closed")


def test_any_probe_failure_reopens_for_another_open_s(breakers: Breakers) -> None:
    trip(breakers, T0)
    first, second, _ = probes(breakers, 3, HALF_OPEN)
    breakers.record(DEP, ok=True, ticket=first.ticket, now=HALF_OPEN + 1)

    last = breakers.record(DEP, ok=False, kind="timeout", ticket=second.ticket, now=HALF_OPEN + 2)

    assert last.state == "open"
    assert last.transitions[0].reason == "probe failed: timeout"
    assert breakers.allow(DEP, now=HALF_OPEN + 2 + 14.9).retry_in_s > 0
    assert breakers.allow(DEP, now=HALF_OPEN + 2 + 15).probe


def test_a_probe_without_its_ticket_still_counts(breakers: Breakers) -> None:
    trip(breakers, T0)
    probes(breakers, 3, HALF_OPEN)
    for _ in range(3):
        last = breakers.record(DEP, ok=True, probe=True, now=HALF_OPEN + 1)
    assert last.state == "closed"


def test_a_ticket_from_an_earlier_half_open_is_not_a_probe_now(breakers: Breakers) -> None:
    trip(breakers, T0)
    old, failing, _ = probes(breakers, 3, HALF_OPEN)
    breakers.record(DEP, ok=False, kind="server", ticket=failing.ticket, now=HALF_OPEN)
    probes(breakers, 3, HALF_OPEN + 15)

    breakers.record(DEP, ok=True, ticket=old.ticket, now=HALF_OPEN + 16)

    assert breakers.state(DEP, now=HALF_OPEN + 16)["probes_ok"] == 0


def test_a_probe_that_never_reports_frees_its_slot_after_probe_timeout(make: MakeBreakers) -> None:
    b = make(probe_timeout_s=30)
    trip(b, T0)
    probes(b, 1, HALF_OPEN)
    probes(b, 2, HALF_OPEN + 5)
    turned_away = b.allow(DEP, now=HALF_OPEN + 10)
    assert (turned_away.allowed, turned_away.retry_in_s) == (False, 20.0)

    assert b.allow(DEP, now=HALF_OPEN + 30).probe
    assert not b.allow(DEP, now=HALF_OPEN + 30).allowed


def test_an_unused_probe_slot_can_be_given_back(breakers: Breakers) -> None:
    trip(breakers, T0)
    permits = probes(breakers, 3, HALF_OPEN)

    breakers.release(DEP, permits[0], now=HALF_OPEN)

    assert breakers.allow(DEP, now=HALF_OPEN).probe
    assert breakers.state(DEP, now=HALF_OPEN)["probes_ok"] == 0


def test_a_client_error_on_a_probe_frees_the_slot_without_judging(breakers: Breakers) -> None:
    trip(breakers, T0)
    permits = probes(breakers, 3, HALF_OPEN)

    state = breakers.record(DEP, ok=False, kind="bad_request", ticket=permits[0].ticket, now=HALF_OPEN)

    assert state.state == "half_open"
    assert breakers.allow(DEP, now=HALF_OPEN).probe
