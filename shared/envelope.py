"""The envelope: one job on its way to its next attempt, as it travels through Redis and Celery.

It carries everything a worker needs to send the attempt, so the hot path never reads the SQL store
(the SQL row stays the durable truth). It says what is fixed and what is not:

    Envelope
    ├── job: JobSpec     fixed when the job is accepted: id, tenant, feature, lane, model, request,
    │                    deadline, reply_to, prompt_tokens (counted once, by the tokenizer), key_id,
    │                    screening (what redaction and the injection screen found, for the audit record),
    │                    traceparent, route (``model: auto``: its tiers, from ``shared.routing``),
    │                    cache (where its answer is stored, when it may be), dialect (the format the
    │                    request is written in: it is forwarded as written to a deployment of that format),
    │                    stream (relayed as it is produced: the caller's dialect, and whether it asked for
    │                    the usage)
    └── this attempt     attempt number, chain (its order: a retry moves the failed deployment last),
                         tier (the lowest tier of the route it may use: an escalation raises it),
                         deployment and estimate (once admitted there), lease token, breaker probe,
                         not_before (a retry's backoff), enqueued_at; and the call's vault of tokenized
                         values once loaded (``shared.privacy.vault``: in memory only, never on the wire)

The request is always the redacted one (``Gateway.guard``): no queue or message holds a value the
policy masks or tokenizes.

The fixed fields read through (``env.id``, ``env.tenant`` ...) but cannot be set. The per-attempt
state changes in a few named steps (``admitted``, ``Admitter.prepare``, the lease grant) or by
``dataclasses.replace`` for the next attempt. On the wire it is one flat JSON object (the queue
scripts read ``id``, ``tenant``, ``lane`` and ``tokens``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

from shared.budget.estimate import Estimate
from shared.dialects import DIALECTS
from shared.lanes import Lane
from shared.privacy.vault import Vault
from shared.routing import RouteSpec


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What the job is: fixed from acceptance to its end."""

    id: str
    tenant: str
    feature: str
    lane: Lane
    model: str
    request: dict[str, Any]
    deadline: float
    reply_to: str | None = None
    prompt_tokens: int = 0  # the tokenizer's count, taken once
    prompt_chars: int = 0  # the prompt as characters / 4 (0: not counted, an older version's envelope)
    key_id: int | None = None  # the key that submitted it: its own limits and dollar budget apply
    screening: dict[str, Any] | None = None
    traceparent: str | None = None  # W3C trace context of the job (``shared.tracing``)
    route: RouteSpec | None = None
    cache: dict[str, Any] | None = None  # how to store its answer (``shared.cache.plan.CachePlan.fill``)
    dialect: str = "openai"  # the format ``request`` is written in (``shared.dialects``)
    stream: dict[str, Any] | None = None  # streamed to its caller: {dialect, usage} (``shared.job_stream``)


_JOB_FIELDS = tuple(f.name for f in fields(JobSpec))


@dataclass(slots=True)
class Envelope:
    job: JobSpec
    chain: list[str]
    attempt: int = 1
    tier: int = 0
    deployment: str | None = None
    estimate: Estimate = field(default_factory=lambda: Estimate(0, 0))
    not_before: float = 0.0
    probe: bool = False
    ticket: str = ""
    token: str = ""
    enqueued_at: float = field(default_factory=time.time)
    vault: Vault | None = None

    # -- the job's fixed fields, read through ------------------------------------------------------

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def tenant(self) -> str:
        return self.job.tenant

    @property
    def feature(self) -> str:
        return self.job.feature

    @property
    def lane(self) -> Lane:
        return self.job.lane

    @property
    def model(self) -> str:
        return self.job.model

    @property
    def request(self) -> dict[str, Any]:
        return self.job.request

    @property
    def deadline(self) -> float:
        return self.job.deadline

    @property
    def reply_to(self) -> str | None:
        return self.job.reply_to

    @property
    def route(self) -> RouteSpec | None:
        return self.job.route

    @property
    def key_id(self) -> int | None:
        return self.job.key_id

    # -- this attempt ------------------------------------------------------------------------------

    @property
    def tokens(self) -> int:
        """This attempt's estimated tokens, input and output (what the queues count as waiting work)."""
        return self.estimate.total

    def admitted(self, deployment: str, estimate: Estimate, *, probe: bool = False, ticket: str = "") -> None:
        """Its budget was reserved on ``deployment`` (as a breaker probe when ``probe``)."""
        self.deployment, self.estimate, self.probe, self.ticket = deployment, estimate, probe, ticket

    def expired(self, now: float | None = None) -> bool:
        return (now or time.time()) >= self.job.deadline

    # -- the wire ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The flat form that Redis and Celery carry (``read_entry`` reads it back)."""
        job = self.job
        return {name: getattr(job, name) for name in _JOB_FIELDS} | {
            "route": job.route.to_dict() if job.route is not None else None,
            "chain": self.chain, "attempt": self.attempt, "tier": self.tier, "deployment": self.deployment,
            "input_tokens": self.estimate.input_tokens, "output_tokens": self.estimate.output_tokens,
            "tokens": self.estimate.total, "not_before": self.not_before, "probe": self.probe,
            "ticket": self.ticket, "token": self.token, "enqueued_at": self.enqueued_at,
        }

    def dumps(self) -> str:
        return orjson.dumps(self.to_dict()).decode()

    @classmethod
    def loads(cls, raw: str | bytes) -> Envelope:
        return cls.from_dict(orjson.loads(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Envelope:
        """The envelope in ``data``; raises on anything this version cannot run (see ``read_entry``)."""
        data = _upgraded(data)
        spec = {name: data[name] for name in _JOB_FIELDS if name in data}
        route = RouteSpec.from_dict(spec["route"]) if spec.get("route") is not None else None
        job = JobSpec(**{**spec, "lane": Lane(spec["lane"]), "route": route})
        env = cls(job=job, chain=data["chain"], attempt=data.get("attempt", 1), tier=data.get("tier", 0),
                  deployment=data.get("deployment"),
                  estimate=Estimate(data.get("input_tokens", 0), data.get("output_tokens", 0)),
                  not_before=data.get("not_before", 0.0), probe=data.get("probe", False),
                  ticket=data.get("ticket", ""), token=data.get("token", ""),
                  enqueued_at=data.get("enqueued_at", time.time()))
        _check_types(env)
        return env


_LEGACY = {"est_input": "input_tokens", "est_output": "output_tokens", "estimate": "tokens"}


def _upgraded(data: dict[str, Any]) -> dict[str, Any]:
    """An envelope written before the estimate was typed (flat ``est_input``/``est_output`` ints) still
    runs: an upgrade must not fail the jobs that were queued when it happened."""
    if not any(old in data for old in _LEGACY):
        return data
    return {_LEGACY.get(name, name): value for name, value in data.items()}


# The fields whose type the scheduler and the worker rely on before anything else looks at a job.
_TYPES: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("id", str), ("tenant", str), ("feature", str), ("model", str), ("chain", list), ("request", dict),
    ("deadline", (int, float)), ("attempt", int), ("prompt_tokens", int), ("prompt_chars", int), ("tier", int),
)


def _check_types(env: Envelope) -> None:
    wrong = [name for name, kind in _TYPES
             if not isinstance(value := getattr(env.job if name in _JOB_FIELDS else env, name), kind)
             or isinstance(value, bool)]
    counts = (env.estimate.input_tokens, env.estimate.output_tokens)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts):
        wrong.append("input_tokens/output_tokens")
    if not env.chain or not all(isinstance(d, str) for d in env.chain):
        wrong.append("chain")
    if env.job.traceparent is not None and not isinstance(env.job.traceparent, str):
        wrong.append("traceparent")
    if env.job.stream is not None and not isinstance(env.job.stream, dict):
        wrong.append("stream")
    if env.key_id is not None and (not isinstance(env.key_id, int) or isinstance(env.key_id, bool)):
        wrong.append("key_id")
    if env.job.dialect not in DIALECTS:
        wrong.append("dialect")
    if wrong:
        raise TypeError(f"fields of the wrong type: {', '.join(wrong)}")


@dataclass
class Unreadable:
    """A queued entry this version cannot run (corrupted, or written by an incompatible version): the
    scheduler and the workers fail its job with ``reason`` (when its id is known) and go on."""

    id: str
    tenant: str
    reason: str
    reply_to: str | None = None
    tokens: int = 0

    def expired(self, now: float | None = None) -> bool:
        return False


def read_entry(raw: str | bytes | dict[str, Any]) -> Envelope | Unreadable:
    """The envelope in ``raw`` (JSON from a queue, or its dict from a Celery message), or why it is not one."""
    data: Any = None
    try:
        data = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
        return Envelope.from_dict(data)
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, it is one job's problem
        known = data if isinstance(data, dict) else {}
        reply_to = known.get("reply_to")
        return Unreadable(id=str(known.get("id") or ""), tenant=str(known.get("tenant") or ""),
                          reason=f"its queued envelope is unreadable ({type(exc).__name__}: {str(exc)[:200]})",
                          reply_to=reply_to if isinstance(reply_to, str) else None)
