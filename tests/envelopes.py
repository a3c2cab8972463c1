"""Envelopes for tests that drive the queues, the scheduler or the workers directly."""

from __future__ import annotations

import time
import uuid
from typing import Any

from shared.budget import Estimate, prompt_tokens
from shared.envelope import Envelope, JobSpec
from shared.lanes import Lane


def make_envelope(tenant: str, lane: str = "batch", *, request: dict[str, Any] | None = None,
                  chain: list[str] | None = None, model: str = "m", tokens: int | None = None,
                  job_id: str | None = None, feature: str = "f", deadline_s: float = 600) -> Envelope:
    """A job as the api would accept it; ``tokens``: its estimate (input only), when the test sets one."""
    request = request or {"model": model, "messages": [{"role": "user", "content": "x"}]}
    job = JobSpec(id=job_id or f"job_{uuid.uuid4().hex}", tenant=tenant, feature=feature, lane=Lane(lane),
                  model=model, request=request, deadline=time.time() + deadline_s,
                  prompt_tokens=prompt_tokens(request), prompt_chars=prompt_tokens(request, by_chars=True))
    env = Envelope(job, chain=chain or ["d"])
    if tokens is not None:
        env.estimate = Estimate(tokens, 0)
    return env
