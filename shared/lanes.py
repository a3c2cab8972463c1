"""The lanes a job can wait and run in, highest priority first: one type for the whole gateway.

- ``interactive``: someone is waiting; a reserved share of every deployment, the fast lane;
- ``standard``: the default for native jobs;
- ``batch``: bulk work, drained in the gaps (under a ceiling, when one is configured).

A lane is decided once per job (``shared.tenancy.resolve_lane``) and then carried, never re-derived.
"""

from __future__ import annotations

from enum import StrEnum


class Lane(StrEnum):
    INTERACTIVE = "interactive"
    STANDARD = "standard"
    BATCH = "batch"

    @property
    def rank(self) -> int:
        """0 for the highest priority."""
        return LANES.index(self)

    def and_above(self) -> list[Lane]:
        """This lane and every lane ahead of it, highest first."""
        return list(LANES[: self.rank + 1])

    def and_below(self) -> list[Lane]:
        """This lane and every lane behind it, highest first."""
        return list(LANES[self.rank:])


LANES: tuple[Lane, ...] = tuple(Lane)
LANE_NAMES: tuple[str, ...] = tuple(lane.value for lane in LANES)  # for SQL constraints and messages
