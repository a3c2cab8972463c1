"""Slow, stalled and oversized clients cannot hold or break the api.

A bad value the caller sent is not echoed back whole in the error.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Stack

GOOD = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("field", "headers", "body"), [
    ("priority", {"X-Gateway-Priority": "u" * 10_000}, GOOD),
    ("feature", {"X-Gateway-Feature": "f" * 10_000}, GOOD),
    ("model", {}, {**GOOD, "model": "m" * 10_000}),
])
def test_a_long_bad_value_is_not_echoed_back_whole(stack: Stack, field: str, headers: dict[str, str],
                                                   body: dict[str, Any]) -> None:
    with stack.client() as c:
        r = c.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code in (400, 404), r.text
    message = r.json()["error"]["message"]
    assert len(message) < 400 and "10000 characters" in message and field in message
