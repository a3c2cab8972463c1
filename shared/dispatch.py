"""Handing admitted attempts to whoever runs them.

The api (a fast-lane job it does not send itself) and the scheduler (every round's admissions) only
need to hand envelopes over; the worker package implements this with Celery (``worker.dispatch``),
and each process's entry point (``cli``) injects it. So neither the api nor the scheduler imports
the workers, and a test can inject a dispatch of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from shared.envelope import Envelope


class Dispatch(Protocol):
    def send(self, env: Envelope) -> None:
        """Hand one admitted attempt to the executors of its lane."""

    def send_many(self, envs: Sequence[Envelope]) -> None:
        """Hand a round's admissions over, in as few messages as the transport allows."""
