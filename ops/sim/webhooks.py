"""A webhook receiver in the simulator, for the gateway's budget alerts in tests and demos.

    POST   /sim/webhooks           record the call (body, headers, when); answers 200, or 503 while
                                   ``fail_next`` says so (to see the sender retry)
    GET    /sim/webhooks           {"received": [...], "refused": n} oldest first
    DELETE /sim/webhooks           forget them
    PUT    /sim/webhooks/config    {"fail_next": n}: the next n calls get a 503
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ops.sim.http import Reply, Request, json_response

MAX_KEPT = 1000


class WebhookSink:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_next = 0
        self.refused = 0

    async def receive(self, request: Request) -> Reply:
        if self.fail_next > 0:
            self.fail_next -= 1
            self.refused += 1
            return json_response(503, {"error": "the receiver is down (fail_next)"})
        if len(self.received) >= MAX_KEPT:
            self.received.pop(0)
        self.received.append({"at": time.time(), "headers": request.headers,
                              "body": request.body.decode("utf-8", "replace")})
        return json_response(200, {"ok": True})

    async def list(self, request: Request) -> Reply:
        return json_response(200, {"received": self.received, "refused": self.refused})

    async def clear(self, request: Request) -> Reply:
        self.received, self.refused = [], 0
        return json_response(200, {"received": []})

    async def configure(self, request: Request) -> Reply:
        body = orjson.loads(request.body or b"{}")
        fail_next = body.get("fail_next", 0) if isinstance(body, dict) else None
        if not isinstance(fail_next, int) or isinstance(fail_next, bool) or fail_next < 0:
            return json_response(400, {"error": {"message": "fail_next is a whole number >= 0",
                                                 "type": "invalid_request_error"}})
        self.fail_next = fail_next
        return json_response(200, {"fail_next": self.fail_next})
