"""Closed -> open: the failure rate over the sliding window, consecutive 429s, slow calls, and
what never counts."""

from __future__ import annotations

from shared.breaker import Breakers
from tests.breaker.conftest import DEP, T0, MakeBreakers
from tests.breaker.helpers import outcomes


def test_failure_rate_opens_only_once_min_calls_were_seen(breakers: Breakers) -> None:
    assert outcomes(breakers, 9, T0).state == "closed"  # 100 % failures, but only 9 calls
    assert breakers.state(DEP, now=T0)["failure_rate"] == 1.0

    last = outcomes(breakers, 1, T0)

    assert last.state == "open"
    [move] = last.transitions
    assert (move.from_state, move.to_state, move.at) == ("closed", "open", T0)
    assert "10 of 10" in move.reason


def test_a_failure_rate_below_the_threshold_keeps_it_closed(breakers: Breakers) -> None:
    outcomes(breakers, 6, T0, ok=True)
    assert outcomes(breakers, 4, T0).state == "closed"  # 40 % < 50 %
    assert outcomes(breakers, 20, T0 + 1, ok=True).state == "closed"

    view = breakers.state(DEP, now=T0 + 1)
    assert (view["calls"], view["failures"]) == (30, 4)


def test_reaching_the_rate_exactly_opens(breakers: Breakers) -> None:
    outcomes(breakers, 5, T0, ok=True)
    assert outcomes(breakers, 5, T0).state == "open"  # 5 of 10 = 50 %


def test_consecutive_rate_limits_open_before_min_calls(make: MakeBreakers) -> None:
    b = make(min_calls=100)
    assert outcomes(b, 4, T0, kind="rate_limit").state == "closed"

    last = outcomes(b, 1, T0, kind="rate_limit")

    assert last.state == "open"
    assert last.transitions[0].reason == "5 rate limits in a row"


def test_a_success_or_another_failure_breaks_the_run_of_rate_limits(make: MakeBreakers) -> None:
    b = make(min_calls=100)
    outcomes(b, 4, T0, kind="rate_limit")
    outcomes(b, 1, T0, ok=True)
    outcomes(b, 4, T0, kind="rate_limit")
    outcomes(b, 1, T0, kind="server")
    assert outcomes(b, 4, T0, kind="rate_limit").state == "closed"
    assert b.state(DEP, now=T0)["consecutive_429"] == 4


def test_slow_successes_count_as_failures(breakers: Breakers) -> None:
    outcomes(breakers, 9, T0, ok=True, latency_s=59.9)
    assert breakers.state(DEP, now=T0)["failures"] == 0

    assert outcomes(breakers, 8, T0, ok=True, latency_s=60.0).state == "closed"
    last = outcomes(breakers, 1, T0, ok=True, latency_s=60.0)  # 9 of 18

    assert last.state == "open"
    assert "slow" in last.transitions[0].reason


def test_slow_calls_never_count_when_the_threshold_is_off(make: MakeBreakers) -> None:
    b = make(slow_call_s=None)
    assert outcomes(b, 50, T0, ok=True, latency_s=10_000).state == "closed"


def test_client_errors_are_not_evidence(breakers: Breakers) -> None:
    for kind in ("bad_request", "auth", "not_found", "refusal"):
        assert outcomes(breakers, 20, T0, kind=kind).state == "closed"

    assert breakers.state(DEP, now=T0)["calls"] == 0


def test_every_provider_failure_kind_counts(breakers: Breakers) -> None:
    for kind in ("server", "timeout", "overloaded", "connection", "malformed", None):
        outcomes(breakers, 1, T0, kind=kind)
    outcomes(breakers, 3, T0, ok=True)

    view = breakers.state(DEP, now=T0)
    assert (view["calls"], view["failures"]) == (9, 6)


def test_failures_slide_out_of_the_window(breakers: Breakers) -> None:
    outcomes(breakers, 4, T0)
    outcomes(breakers, 4, T0, ok=True)
    outcomes(breakers, 2, T0 + 29, ok=True)
    assert breakers.state(DEP, now=T0 + 29)["calls"] == 10

    # 31 s later the first eight calls are gone: three failures are 3 of 5 (under min_calls), where
    # with the old ones still counted they would be 7 of 13 and open the breaker.
    last = outcomes(breakers, 3, T0 + 31)

    assert last.state == "closed"
    view = breakers.state(DEP, now=T0 + 31)
    assert (view["calls"], view["failures"]) == (5, 3)


def test_failures_spread_within_the_window_add_up(breakers: Breakers) -> None:
    outcomes(breakers, 5, T0)
    assert outcomes(breakers, 5, T0 + 29).state == "open"


def test_failures_spread_over_more_than_the_window_do_not(breakers: Breakers) -> None:
    outcomes(breakers, 5, T0)
    assert outcomes(breakers, 5, T0 + 31).state == "closed"


def test_a_sudden_outage_opens_it_without_waiting_for_the_rate(breakers: Breakers) -> None:
    outcomes(breakers, 200, T0, ok=True)  # a busy window full of successes
    assert outcomes(breakers, 9, T0 + 1).state == "closed"
    last = outcomes(breakers, 1, T0 + 1)  # min_calls (10) failures in a row: down, whatever the rate
    assert last.state == "open"
    assert "10 failures in a row" in last.transitions[0].reason
