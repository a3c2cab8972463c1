"""Completion signals: whoever ends a job tells the api processes that may be waiting for it.

- ``announce``: the whole view, to the api process of a sync caller (``reply_to``, its own channel);
- ``announce_end``: {id, status} on the tenant's channel, for callers long-polling ``GET /v1/jobs``
  (nobody subscribed: Redis drops it, a few microseconds). Both go in a round trip made anyway.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis

from shared.keys import Keys


def announce(client: redis.Redis, channel: str | None, view: dict[str, Any]) -> None:
    if channel:
        client.publish(channel, orjson.dumps(view, default=str))


def announce_end(client: redis.Redis, keys: Keys, tenant: str, job_id: str, status: str) -> None:
    client.publish(keys.tenant_done(tenant), orjson.dumps({"id": job_id, "status": status}))
