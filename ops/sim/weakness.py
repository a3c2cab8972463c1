"""A model's failure profile: how often its answers fail the checks a caller cares about.

A cheap model gets hard prompts wrong more often than easy ones. The simulator cannot judge difficulty,
so the workload says it: a prompt holding ``[[difficulty:hard]]`` (or ``medium``, ``easy``; none means
easy) fails on this model with the rate configured for that difficulty, in one of ``modes``:

- ``length``: cut at max_tokens (``finish_reason: length``);
- ``schema``: content that is not JSON (only when the request asked for a JSON schema; otherwise
  the next mode applies);
- ``refusal``: a refusal and no content;
- ``empty``: no content at all.

The dice are seeded by the request's content, so the same request to the same model fails the same way.
A prompt holding ``[[sim-fail:<mode>]]`` fails that way on every model with ``obey_markers`` (tests).
"""

from __future__ import annotations

import random
import re

from ops.sim.completions import Completion
from ops.sim.config import WeaknessConfig
from ops.sim.wire import ChatRequest

_DIFFICULTY = re.compile(r"\[\[difficulty:(easy|medium|hard)\]\]")
_FORCED = re.compile(r"\[\[sim-fail:(length|schema|refusal|empty)\]\]")
REFUSAL = "I'm sorry, but I can't help with that request."


def weaken(completion: Completion, req: ChatRequest, weakness: WeaknessConfig, seed: int) -> Completion:
    """``completion`` as this model would really answer: the same, or failing in one of its modes."""
    if completion.tool_call is not None:
        return completion
    mode = _mode(req, weakness, seed)
    if mode is None:
        return completion
    if mode == "schema" and req.response_schema is None:
        mode = next((m for m in weakness.modes if m != "schema"), "length")
    return _failed(completion, mode, req)


def _mode(req: ChatRequest, weakness: WeaknessConfig, seed: int) -> str | None:
    text = req.text()
    if weakness.obey_markers and (forced := _FORCED.search(text)):
        return forced.group(1)
    found = _DIFFICULTY.search(text)
    difficulty = found.group(1) if found else "easy"
    rate = next((r for name, r in weakness.fail_rate.items() if name == difficulty), 0.0)
    rng = random.Random(seed ^ 0x5EED)
    if rate <= 0 or rng.random() >= rate or not weakness.modes:
        return None
    return rng.choice(weakness.modes)


def _failed(completion: Completion, mode: str, req: ChatRequest) -> Completion:
    if mode == "length":
        return Completion(completion.text, completion.output_tokens, "length")
    if mode == "schema":
        return Completion(completion.text.replace("{", "", 1) or "not json", completion.output_tokens, "stop")
    if mode == "refusal":
        return Completion("", 12, "stop", refusal=REFUSAL)
    return Completion("", 1, "stop")
