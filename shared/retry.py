"""Retries that shrink load: a failed attempt goes back to the scheduler, never into a sleep loop.

A retry is decided once, where the attempt ended: only for failures that may succeed later (429,
5xx, 529, timeouts, connection errors, malformed answers), never for 4xx or a provider's "don't
retry"; within the job's attempt cap. A retry on a fallback the job has not tried yet is re-admitted
at once against that deployment's own limits. A retry that returns to a deployment already tried
also needs that deployment's retry budget (retries at most ~10% of the minute's attempts, as in the
SRE book and Envoy/gRPC retry throttling) and waits out full-jitter exponential backoff (tenacity's
``wait_random_exponential``) and the provider's own Retry-After: retries never multiply the load on
a failing deployment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

import redis
from tenacity import wait_random_exponential

from shared.config import RetryConfig
from shared.keys import Keys
from shared.lua import script

_BUDGET_LUA = script("retry_budget")
COUNTER_TTL_S = 120  # per-minute counters outlive their minute, so the budget can look back at it


RetryCode = Literal["retry", "fallback", "not_retryable", "attempts_exhausted", "budget_exhausted", "past_deadline"]


@dataclass(frozen=True)
class RetryDecision:
    """Whether a failed attempt goes back to the scheduler; ``code`` says why in one word (metrics)."""

    retry: bool
    reason: str
    not_before: float = 0.0
    code: RetryCode = "retry"


class RetryPolicy:
    def __init__(self, client: redis.Redis, keys: Keys, config: RetryConfig) -> None:
        self.r = client
        self.keys = keys
        self.config = config
        self._take = client.register_script(_BUDGET_LUA)
        self._wait = wait_random_exponential(multiplier=config.backoff_base_s, max=config.backoff_max_s)

    def count_attempt(self, deployment: str) -> None:
        """Every attempt sent adds to the budget that retries are measured against."""
        with self.r.pipeline(transaction=False) as pipe:
            self.count_attempt_in(pipe, deployment)
            pipe.execute()

    def count_attempt_in(self, pipe: Any, deployment: str) -> None:
        """``count_attempt`` as commands added to ``pipe``, to go in a round trip made anyway."""
        key, ttl = self.attempt_counter(deployment)
        pipe.incr(key)
        pipe.expire(key, ttl)

    def attempt_counter(self, deployment: str) -> tuple[str, int]:
        """(key, TTL s) of this minute's attempt counter, for a caller that counts in its own step
        (the worker counts when it claims the attempt's lease: one round trip for both)."""
        return self._key(deployment, "req"), COUNTER_TTL_S

    def decide(self, *, deployment: str, attempt: int, retryable: bool, kind: str,
               retry_after_s: float | None, now: float | None = None, fallback: bool = False) -> RetryDecision:
        """Whether and when to retry on ``deployment``. ``fallback``: it is another deployment than the
        one that failed, not yet tried by this job: no backoff and no retry budget (see
        ``execution.attempt._decide_retry``)."""
        if not retryable:
            return RetryDecision(False, f"{kind} is not retryable", code="not_retryable")
        if attempt >= self.config.max_attempts:
            return RetryDecision(False, f"gave up after {attempt} attempts (the cap is {self.config.max_attempts})",
                                 code="attempts_exhausted")
        if fallback:
            return RetryDecision(True, f"{kind}: retry {attempt + 1} on the fallback {deployment}", now or time.time(),
                                 code="fallback")
        if not self._take(keys=[self._key(deployment, "req"), self._key(deployment, "ret")],
                          args=[self.config.budget_ratio, self.config.budget_floor_per_min, COUNTER_TTL_S]):
            return RetryDecision(False, f"retry budget of {deployment} exhausted (retries are capped at "
                                        f"{self.config.budget_ratio:.0%} of its recent attempts)",
                                 code="budget_exhausted")
        delay = max(self.backoff(attempt), retry_after_s or 0.0)
        return RetryDecision(True, f"{kind}: retry {attempt + 1} in {delay:.2f}s", (now or time.time()) + delay)

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^attempt)]."""
        return float(self._wait(SimpleNamespace(attempt_number=attempt)))  # type: ignore[arg-type]

    def _key(self, deployment: str, what: str) -> str:
        return self.keys.retry_counter(deployment, what, int(time.time() // 60))
