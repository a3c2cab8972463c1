"""Whatever the order of calls, outcomes and clock steps: the state machine only takes its four
edges, open never admits, a half-open episode never has more than ``half_open_probes`` probes in
flight or succeeded, and closes only after that many of them succeeded; and what ``allow`` and
``record`` answer is what ``state`` reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shared.breaker import Breakers, Transition
from shared.config import BreakerConfig
from shared.keys import Keys
from tests.breaker.conftest import DEP, T0

EDGES = {("closed", "open"), ("open", "half_open"), ("half_open", "open"), ("half_open", "closed")}
CONFIG = BreakerConfig(window_s=10, min_calls=4, failure_rate=0.5, consecutive_429=3, slow_call_s=5,
                       open_s=3, half_open_probes=2, probe_timeout_s=1_000)
FAST_OK = (True, None, 0.1)
# Fast successes weigh most, so that half-open episodes close as well as re-open.
OUTCOMES = [FAST_OK] * 5 + [(True, None, 6.0)] + [
    (False, kind, 0.1) for kind in (None, "rate_limit", "rate_limit", "server", "timeout", "bad_request")]

step = st.floats(min_value=0, max_value=4, allow_nan=False)
op = st.one_of(
    st.tuples(st.just("allow"), step),
    st.tuples(st.just("record"), step, st.sampled_from(OUTCOMES), st.booleans()),
    st.tuples(st.just("probe"), step, st.sampled_from(OUTCOMES), st.just(True)),
)


@dataclass
class Episode:
    """One stretch between two transitions: its probes in flight and how many of them succeeded."""

    succeeded: int = 0
    tickets: list[str] = field(default_factory=list)


@dataclass
class Run:
    b: Breakers
    now: float = T0
    episode: Episode = field(default_factory=Episode)

    def moved(self, moves: tuple[Transition, ...]) -> None:
        for move in moves:
            assert (move.from_state, move.to_state) in EDGES
            if move.to_state == "closed":
                assert self.episode.succeeded == CONFIG.half_open_probes
            event(f"{move.from_state} -> {move.to_state}")
            self.episode = Episode()  # the tickets of an episode that ended are dead

    def allow(self) -> str:
        permit = self.b.allow(DEP, now=self.now)
        self.moved(permit.transitions)
        assert not (permit.state == "open" and permit.allowed)
        if permit.probe:
            self.episode.tickets.append(permit.ticket)
        # A probe slot is held until its outcome is recorded; a client error on a probe gives it back.
        assert len(self.episode.tickets) + self.episode.succeeded <= CONFIG.half_open_probes
        return permit.state

    def record(self, outcome: tuple[bool, str | None, float], as_probe: bool) -> str:
        ok, kind, latency = outcome
        before = self.episode
        ticket = before.tickets.pop(0) if as_probe and before.tickets else ""
        recorded = self.b.record(DEP, ok=ok, kind=kind, latency_s=latency, ticket=ticket, now=self.now)
        before.succeeded += bool(ticket and outcome == FAST_OK)
        self.moved(recorded.transitions)
        return recorded.state


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, max_size=80))
def test_the_state_machine_holds_under_any_sequence(client: redis.Redis, keys: Keys, ops: list) -> None:
    run = Run(Breakers(client, keys, {DEP: CONFIG}))
    run.b.reset(DEP)
    for name, step_s, *rest in ops:
        run.now += step_s
        if name == "probe":
            run.allow()
        state = run.allow() if name == "allow" else run.record(*rest)
        assert run.b.state(DEP, now=run.now)["state"] == state
