"""Circuit breakers per deployment, in Redis, shared by every api, scheduler and worker process.

Why in Redis and not per process: a breaker that each of forty workers keeps for itself needs forty
times the failures to open and sends forty times the probes when half-open; one shared state makes
the fleet behave like one careful client. Every decision (``allow``, ``record``) is one Lua script,
so it is atomic, and one round trip. The clock is the Redis server's ``TIME`` unless a caller
passes ``now`` (tests), so the window and the open period are timed alike on every host.

    closed ──(failure rate ≥ failure_rate over window_s with ≥ min_calls, min_calls failures in a row,
              or consecutive_429)──► open
    open ──(open_s passed; noticed lazily by the next call)──► half_open
    half_open ──(half_open_probes probes succeeded)──► closed
    half_open ──(any probe failed)──► open

Outcomes are judged here, not by callers: client errors (``bad_request``, ``auth``, ``not_found``,
``refusal``) say nothing about the deployment's health and are ignored; a success slower than
``slow_call_s`` is a failure; only ``rate_limit`` counts toward ``consecutive_429``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
from prometheus_client import Counter

from shared.config import BreakerConfig, Settings
from shared.keys import Keys
from shared.lua import script
from shared.redis_batch import ScriptCall

# Failures of the caller's own request: the deployment answered, correctly, so they are not evidence.
CLIENT_ERROR_KINDS = frozenset({"bad_request", "auth", "not_found", "refusal", "cancelled", "caller_left"})
# Buckets of the sliding window: the window slides in steps of window_s / WINDOW_BUCKETS.
WINDOW_BUCKETS = 30
ANY_PROBE = "*"

TRANSITIONS = Counter("gateway_breaker_transitions_total", "Circuit breaker state changes",
                      ["deployment", "to"])
log = logging.getLogger("gateway.breaker")


@dataclass(frozen=True)
class Transition:
    deployment: str
    from_state: str
    to_state: str
    at: float
    reason: str


@dataclass(frozen=True)
class Permit:
    """The answer to ``allow``. A probe permit carries a ``ticket``: pass it back to ``record``."""

    allowed: bool
    state: str
    probe: bool = False
    retry_in_s: float = 0.0
    ticket: str = ""
    transitions: tuple[Transition, ...] = ()


@dataclass(frozen=True)
class Recorded:
    """The breaker's state after an outcome, and the moves that outcome caused (to log or count)."""

    state: str
    transitions: tuple[Transition, ...] = field(default=())


def verdict(cfg: BreakerConfig, *, ok: bool, kind: str | None, latency_s: float) -> str:
    """What one outcome means for the breaker: ``ok``, ``fail``, ``rate_limit`` or ``ignore``."""
    if kind in CLIENT_ERROR_KINDS:
        return "ignore"
    if not ok:
        return "rate_limit" if kind == "rate_limit" else "fail"
    if cfg.slow_call_s is not None and latency_s >= cfg.slow_call_s:
        return "fail"
    return "ok"


def _config_args(cfg: BreakerConfig) -> list[str]:
    return [repr(float(cfg.window_s)), str(WINDOW_BUCKETS), str(cfg.min_calls), repr(float(cfg.failure_rate)),
            str(cfg.consecutive_429), repr(float(cfg.open_s)), str(cfg.half_open_probes),
            repr(float(cfg.probe_timeout_s))]


def _now_arg(now: float | None) -> str:
    return "" if now is None else repr(float(now))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _moves(deployment: str, flat: Sequence[Any]) -> tuple[Transition, ...]:
    items = [_text(v) for v in flat]
    return tuple(Transition(deployment, items[i], items[i + 1], float(items[i + 2]), items[i + 3])
                 for i in range(0, len(items), 4))


def _announce(moves: Iterable[Transition]) -> None:
    """Every transition is logged and counted where it happens, whichever process made it."""
    for t in moves:
        TRANSITIONS.labels(deployment=t.deployment, to=t.to_state).inc()
        level = logging.WARNING if t.to_state == "open" else logging.INFO
        log.log(level, "breaker %s: %s -> %s (%s)", t.deployment, t.from_state, t.to_state, t.reason,
                extra={"deployment": t.deployment, "breaker_from": t.from_state, "breaker_to": t.to_state})


def _float_or_none(text: str) -> float | None:
    return float(text) if text else None


def _view(raw: Any) -> dict[str, Any]:
    data = orjson.loads(raw)
    calls, failures = int(data["calls"]), int(data["failures"])
    return {
        "state": data["state"],
        "calls": calls,
        "failures": failures,
        "failure_rate": failures / calls if calls else 0.0,
        "consecutive_429": int(data["consecutive_429"]),
        "opened_at": _float_or_none(data["opened_at"]),
        "half_open_at": _float_or_none(data["half_open_at"]),
        "retry_in_s": float(data["retry_in_s"]),
        "probes_in_flight": int(data["probes_in_flight"]),
        "probes_ok": int(data["probes_ok"]),
        "since": _float_or_none(data["since"]),
        "now": float(data["now"]),
    }


class Breakers:
    """The breakers of all deployments; cheap to build, safe to share between threads."""

    def __init__(self, client: redis.Redis, keys: Keys, configs: Mapping[str, BreakerConfig]) -> None:
        self.r = client
        self.keys = keys
        self.configs = dict(configs)
        self._default = BreakerConfig()
        self._allow = client.register_script(script("breaker_allow"))
        self._record = client.register_script(script("breaker_record"))
        self._state = client.register_script(script("breaker_state"))

    @classmethod
    def from_settings(cls, client: redis.Redis, keys: Keys, settings: Settings) -> Breakers:
        return cls(client, keys, {d.name: d.breaker for d in settings.deployments})

    def config(self, deployment: str) -> BreakerConfig:
        """A deployment missing from the config gets the defaults rather than no breaker at all."""
        return self.configs.get(deployment, self._default)

    def _keys(self, deployment: str) -> list[str]:
        return [self.keys.breaker(deployment, part) for part in ("state", "window", "probes", "log")]

    def allow(self, deployment: str, *, now: float | None = None) -> Permit:
        """May a new attempt go to ``deployment`` now? In half-open this takes a probe slot."""
        cfg = self.config(deployment)
        if not cfg.enabled:
            return Permit(allowed=True, state="closed")
        reply = self._allow(keys=self._keys(deployment), args=[_now_arg(now), *_config_args(cfg)])
        moves = _moves(deployment, reply[4:])
        _announce(moves)
        ticket = _text(reply[2])
        return Permit(allowed=int(reply[0]) == 1, state=_text(reply[1]), probe=bool(ticket),
                      retry_in_s=max(0.0, float(_text(reply[3]))), ticket=ticket, transitions=moves)

    def record(self, deployment: str, *, ok: bool, kind: str | None = None, latency_s: float = 0.0,
               probe: bool = False, ticket: str = "", now: float | None = None) -> Recorded:
        """Feed one attempt's outcome. A probe passes its permit's ``ticket`` (or ``probe=True`` when
        the ticket was lost on the way: then the oldest probe slot is taken as this one)."""
        call = self.record_call(deployment, ok=ok, kind=kind, latency_s=latency_s, probe=probe, ticket=ticket,
                                now=now)
        return call.run() if call is not None else Recorded(state="closed")

    def record_call(self, deployment: str, *, ok: bool, kind: str | None = None, latency_s: float = 0.0,
                    probe: bool = False, ticket: str = "", now: float | None = None) -> ScriptCall | None:
        """``record`` as a script call to send in a batch with others (None: the breaker is off)."""
        cfg = self.config(deployment)
        if not cfg.enabled:
            return None
        judged = verdict(cfg, ok=ok, kind=kind, latency_s=latency_s)
        return self._feed_call(deployment, cfg, judged, ticket or (ANY_PROBE if probe else ""),
                               "slow" if ok else kind or "failure", now)

    def release(self, deployment: str, permit: Permit, *, now: float | None = None) -> None:
        """Give back a probe slot that was not used (e.g. the budget could not fit the job after all)."""
        cfg = self.config(deployment)
        if permit.probe and cfg.enabled:
            self._feed(deployment, cfg, "ignore", permit.ticket or ANY_PROBE, "unused", now)

    def _feed(self, deployment: str, cfg: BreakerConfig, judged: str, probe: str, kind: str,
              now: float | None) -> Recorded:
        return self._feed_call(deployment, cfg, judged, probe, kind, now).run()

    def _feed_call(self, deployment: str, cfg: BreakerConfig, judged: str, probe: str, kind: str,
                   now: float | None) -> ScriptCall:
        def parse(reply: Sequence[Any]) -> Recorded:
            moves = _moves(deployment, reply[1:])
            _announce(moves)
            return Recorded(state=_text(reply[0]), transitions=moves)

        args = [_now_arg(now), *_config_args(cfg), judged, probe, kind]
        return ScriptCall(self._record, self._keys(deployment), args, parse)

    def state(self, deployment: str, *, now: float | None = None) -> dict[str, Any]:
        """One breaker as the admin endpoint shows it; reads only."""
        return self.states([deployment], now=now)[deployment]

    def states(self, deployments: Iterable[str] | None = None, *, now: float | None = None) -> dict[str, Any]:
        """Several breakers (all configured ones by default) in one round trip; reads only."""
        names = list(self.configs if deployments is None else deployments)
        return self.states_call(names, now=now).run() if names else {}

    def states_call(self, names: list[str], *, now: float | None = None) -> ScriptCall:
        """``states`` of these breakers as a script call to send in a batch with others."""
        keys: list[str] = []
        args = [_now_arg(now)]
        for name in names:
            keys += self._keys(name)
            args += _config_args(self.config(name))
        return ScriptCall(self._state, keys, args,
                          lambda reply: {name: _view(raw) for name, raw in zip(names, reply, strict=True)})

    def transitions(self, deployment: str, limit: int = 100) -> list[Transition]:
        """The last transitions of one breaker, newest first (at most 100 are kept)."""
        out = []
        for raw in self.r.lrange(self.keys.breaker(deployment, "log"), 0, max(0, limit - 1)):
            t = orjson.loads(raw)
            out.append(Transition(deployment, t["from"], t["to"], float(t["at"]), t["reason"]))
        return out

    def reset(self, deployment: str) -> None:
        """Forget one breaker entirely (operators, tests): it starts closed with an empty window."""
        self.r.delete(*self._keys(deployment))
