"""Completion signal: a worker tells the waiting api process that a job reached a final state.

Only sync callers set ``reply_to`` (their api process's channel), so async jobs cost no publish.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis


def announce(client: redis.Redis, channel: str | None, view: dict[str, Any]) -> None:
    if channel:
        client.publish(channel, orjson.dumps(view, default=str))
