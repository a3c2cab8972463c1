"""Fixtures the end-to-end tests share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Stack


@pytest.fixture
def faults(stack: Stack) -> Iterator[Any]:
    """``faults(kind=..., model=..., ...)`` installs a simulator fault rule; all are removed after the test."""
    added: list[int] = []

    def add(**rule: Any) -> None:
        r = httpx.post(f"{stack.sim_url}/sim/faults", json=rule)
        assert r.status_code in (200, 201), r.text
        body = r.json()
        added.extend(f["id"] for f in body.get("faults", [body]) if isinstance(f, dict) and "id" in f)

    yield add
    for fault_id in added:
        httpx.delete(f"{stack.sim_url}/sim/faults/{fault_id}")
