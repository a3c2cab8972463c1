"""The storm's callers in front of two api processes, as a load balancer and a careful client would be.

- Round robin over the api processes; one that refuses the connection (killed, not restarted yet) is
  skipped for the next, as a load balancer does on a connect error (nothing was sent, so it is safe).
- Every copilot call carries an ``Idempotency-Key`` of its own. A call whose connection drops after
  it was sent (its api was killed under it) is asked again with the same key, on the next api, up to
  ``ASKS`` times in all (a connection pooled to the api just killed may drop the next ask too): the
  gateway returns the job the first ask made (waiting for it to end) rather than a second one, which
  is how the README tells a caller to find its answer after a dropped connection.
"""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

import httpx

from ops.storm.scenario import COPILOT
from ops.storm.streamed import Streamed, read_sse
from ops.storm.traffic import Call, GatewayCaller

DROPPED = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)  # sent, then the connection went
ASKS = 3


class ChaosCaller(GatewayCaller):
    def __init__(self, api_urls: list[str], keys: dict[str, str]) -> None:
        super().__init__(api_urls[0], keys)  # the backlog's bulk submits go to the first api, at the start
        self.api_urls = api_urls
        self._turn = itertools.count()

    async def _post(self, path: str, **kwargs: Any) -> httpx.Response:
        """POST to the next api in turn; on a refused connection, to the one after it."""
        first = next(self._turn)
        for i in range(len(self.api_urls)):
            try:
                return await self.client.post(self.api_urls[(first + i) % len(self.api_urls)] + path, **kwargs)
            except httpx.ConnectError:
                if i == len(self.api_urls) - 1:
                    raise
        raise AssertionError("unreachable")

    async def stream(self, tenant: str, path: str, body: dict[str, Any], headers: dict[str, str],
                     out: Streamed) -> None:
        """Stream from the next api in turn (a refused connection goes to the next), read into ``out``."""
        first = next(self._turn)
        for i in range(len(self.api_urls)):
            url = self.api_urls[(first + i) % len(self.api_urls)] + path
            try:
                async with self.client.stream("POST", url, json=body, headers={**self._auth(tenant), **headers}) as got:
                    out.status, out.job_id = got.status_code, got.headers.get("x-gateway-job-id")
                    if got.status_code != 200:
                        out.ended, out.error = "error", {"status": got.status_code, "body": (await got.aread())[:300]}
                        return
                    await read_sse(got, path.startswith("/v1/messages"), out)
                    return
            except httpx.ConnectError:
                if i == len(self.api_urls) - 1:
                    raise

    async def copilot(self, call: Call, body: dict[str, Any]) -> None:
        call.attempts = 1
        headers = {**self._auth(call.tenant), "x-gateway-feature": COPILOT, "idempotency-key": uuid.uuid4().hex}
        try:
            response = await self._ask(call, body, headers)
        except httpx.HTTPError as exc:
            call.done, call.error = time.time(), type(exc).__name__
            return
        call.done, call.status = time.time(), response.status_code
        call.ok = response.status_code == 200
        call.job_id = response.headers.get("x-gateway-job-id")
        if call.ok:
            usage = response.json().get("usage", {})
            call.tokens_in, call.tokens_out = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        else:
            call.error = _error_code(response)

    async def _ask(self, call: Call, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        """The call, asked again with the same Idempotency-Key while its connection drops."""
        for ask in range(1, ASKS + 1):
            try:
                return await self._post("/v1/chat/completions", json=body, headers=headers)
            except DROPPED:
                if ask == ASKS:
                    raise
                call.dropped, call.attempts = call.dropped or time.time(), ask + 1
        raise AssertionError("unreachable")


def _error_code(response: httpx.Response) -> str:
    """The gateway's error code (OpenAI's shape), else its type, else the status."""
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    return str(error.get("code") or error.get("type") or response.status_code)
