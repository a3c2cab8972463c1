"""The simulator as an ASGI app: provider routes, admin routes under /sim/, and the lifespan.

``create_app(config)`` is what the server and the tests run. Admin routes (no auth: a local tool):

    GET    /sim/stats[?series=0]   counters per key and model, bucket levels, sampled time series
    GET    /sim/config             the configuration in effect
    GET    /sim/requests           the bodies of the last 500 model requests (chat, messages, embeddings,
                                   completions), as received
    GET    /sim/faults             installed fault rules
    POST   /sim/faults             add rules: one rule object, or {"faults": [...], "replace": true}
    DELETE /sim/faults[/{id}]      remove all rules, or one
    POST   /sim/limits             {"model": ..., "api": "openai"|"anthropic", "rpm": ..., "tpm": ...}
    POST   /sim/reset              {"meters": true, "stats": true, "faults": false}
    GET    /sim/traceparents       the ``traceparent`` headers of the last 1,000 requests that sent one
    POST/GET/DELETE /sim/webhooks  a webhook receiver (``ops.sim.webhooks``: the gateway's budget alerts)
    PUT    /sim/webhooks/config    {"fail_next": n}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from ops.sim.anthropic_api import AnthropicApi
from ops.sim.config import FaultConfig, LimitsConfig, SimulatorConfig
from ops.sim.engine import Simulator
from ops.sim.http import Handler, Reply, Request, Response, json_response, read_body, send_reply
from ops.sim.limits import Clock
from ops.sim.openai_api import OpenAIApi
from ops.sim.openai_extras import CompletionsApi, EmbeddingsApi
from ops.sim.webhooks import WebhookSink
from shared.tokens import tokenizer_name

log = logging.getLogger("ops.sim")
STOCK_MODELS = ("gpt-4o-mini", "gpt-4o", "claude-haiku-4-5", "claude-sonnet-4-5")


class _FaultsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    faults: list[FaultConfig]
    replace: bool = False


class _LimitsBody(LimitsConfig):
    model: str
    api: str = "openai"


class _ResetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    meters: bool = True
    stats: bool = True
    faults: bool = False


def _admin_error(message: str) -> Response:
    return json_response(400, {"error": {"message": message, "type": "invalid_request_error"}})


def _parse(model: type[BaseModel], body: Any) -> BaseModel | Response:
    try:
        return model.model_validate(body if body is not None else {})
    except ValidationError as exc:
        return _admin_error(str(exc))


RECEIVED = 500  # requests to the model endpoints kept for GET /sim/requests
_COMPLETIONS = frozenset({"/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/v1/completions"})


def _json_or_text(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


class SimApp:
    """ASGI entry point; ``.sim`` is the simulator state (tests and benchmarks may reach in)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.openai, self.anthropic = OpenAIApi(), AnthropicApi()
        self.embeddings_api, self.completions_api = EmbeddingsApi(), CompletionsApi()
        self.webhooks = WebhookSink()
        self._sampler: asyncio.Task | None = None
        self.received: deque[tuple[str, bytes]] = deque(maxlen=RECEIVED)  # (path, body) of the last requests
        self.routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): lambda r: sim.complete(self.openai, r),
            ("POST", "/v1/messages"): lambda r: sim.complete(self.anthropic, r),
            ("POST", "/v1/embeddings"): lambda r: sim.complete(self.embeddings_api, r),
            ("POST", "/v1/completions"): lambda r: sim.complete(self.completions_api, r),
            ("POST", "/v1/messages/count_tokens"): self.count_tokens,
            ("GET", "/v1/models"): self.models,
            ("GET", "/healthz"): self.health,
            ("GET", "/sim/stats"): self.stats,
            ("GET", "/sim/requests"): self.requests,
            ("GET", "/sim/config"): self.show_config,
            ("GET", "/sim/traceparents"): self.show_traceparents,
            ("GET", "/sim/faults"): self.list_faults,
            ("POST", "/sim/faults"): self.add_faults,
            ("DELETE", "/sim/faults"): self.clear_faults,
            ("POST", "/sim/limits"): self.set_limits,
            ("POST", "/sim/reset"): self.reset,
            ("POST", "/sim/webhooks"): self.webhooks.receive,
            ("GET", "/sim/webhooks"): self.webhooks.list,
            ("DELETE", "/sim/webhooks"): self.webhooks.clear,
            ("PUT", "/sim/webhooks/config"): self.webhooks.configure,
        }

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        handler = self.routes.get((method, path.rstrip("/") or "/"))
        if handler is None and method == "DELETE" and path.startswith("/sim/faults/"):
            handler = self.remove_fault
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        body = await read_body(receive)
        if method == "POST" and path in _COMPLETIONS:
            self.received.append((path, body))
        request = Request(method, path, scope.get("query_string", b"").decode(), headers, body, send, receive)
        stats = self.sim.stats
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            await send_reply(await self._dispatch(handler, request), send)
        finally:
            stats.in_flight -= 1

    async def _dispatch(self, handler: Handler | None, request: Request) -> Reply:
        if handler is None:
            return json_response(404, {"error": {"message": f"Unknown route {request.method} {request.path}",
                                                 "type": "invalid_request_error", "code": "unknown_url"}})
        try:
            return await handler(request)
        except orjson.JSONDecodeError:
            return _admin_error("the body is not valid JSON")
        except Exception:
            log.exception("simulator error on %s %s", request.method, request.path)
            return json_response(500, {"error": {"message": "simulator bug", "type": "server_error"}})

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start_sampler()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop_sampler()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start_sampler(self) -> None:
        if self._sampler is None:
            self._sampler = asyncio.get_running_loop().create_task(self.sim.stats.sample_forever())

    async def stop_sampler(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None

    # ---- small routes

    async def health(self, request: Request) -> Reply:
        return json_response(200, {"status": "ok", "tokenizer": tokenizer_name()})

    async def models(self, request: Request) -> Reply:
        names = list(self.sim.config.models) or list(STOCK_MODELS)
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "simulator"} for name in names]
        return json_response(200, {"object": "list", "data": data})

    async def count_tokens(self, request: Request) -> Reply:
        body = request.json() or {}
        body.setdefault("max_tokens", 1)
        req = self.anthropic.parse(body)
        return json_response(200, {"input_tokens": self.anthropic.prompt_tokens(req)})

    # ---- admin

    async def stats(self, request: Request) -> Reply:
        include_series = "series=0" not in request.query and "series=false" not in request.query
        return json_response(200, self.sim.stats.snapshot(include_series))

    async def requests(self, request: Request) -> Reply:
        """The bodies of the last completion requests, newest last: what a provider would have seen."""
        return json_response(200, {"requests": [{"path": path, "body": _json_or_text(body)}
                                                for path, body in self.received]})

    async def show_config(self, request: Request) -> Reply:
        data = self.sim.config.model_dump(mode="json")
        data["faults"] = self.sim.faults.describe()
        data["tokenizer"] = tokenizer_name()
        return json_response(200, data)

    async def show_traceparents(self, request: Request) -> Reply:
        return json_response(200, {"traceparents": list(self.sim.traceparents)})

    async def list_faults(self, request: Request) -> Reply:
        return json_response(200, {"faults": self.sim.faults.describe()})

    async def add_faults(self, request: Request) -> Reply:
        body = request.json()
        if isinstance(body, dict) and "faults" not in body:
            body = {"faults": [body]}
        parsed = _parse(_FaultsBody, body)
        if isinstance(parsed, Response):
            return parsed
        assert isinstance(parsed, _FaultsBody)
        if parsed.replace:
            self.sim.faults.clear()
        added = self.sim.faults.add(parsed.faults)
        now = self.sim.clock()
        added_rules = [f.describe(now) for f in added]
        return json_response(200, {"added": added_rules, "faults": self.sim.faults.describe()})

    async def clear_faults(self, request: Request) -> Reply:
        self.sim.faults.clear()
        return json_response(200, {"faults": []})

    async def remove_fault(self, request: Request) -> Reply:
        tail = request.path.rsplit("/", 1)[-1]
        if not tail.isdigit() or not self.sim.faults.remove(int(tail)):
            return json_response(404, {"error": {"message": f"no fault {tail}", "type": "not_found"}})
        return json_response(200, {"faults": self.sim.faults.describe()})

    async def set_limits(self, request: Request) -> Reply:
        parsed = _parse(_LimitsBody, request.json())
        if isinstance(parsed, Response):
            return parsed
        assert isinstance(parsed, _LimitsBody)
        config = self.sim.config
        model = config.models.get(parsed.model)
        if model is None:
            base = config.defaults.anthropic if parsed.api == "anthropic" else config.defaults.openai
            model = config.models[parsed.model] = base.model_copy(deep=True)
        model.limits = LimitsConfig(**parsed.model_dump(exclude={"model", "api"}))
        return json_response(200, {"model": parsed.model, "limits": model.limits.model_dump()})

    async def reset(self, request: Request) -> Reply:
        parsed = _parse(_ResetBody, request.json())
        if isinstance(parsed, Response):
            return parsed
        assert isinstance(parsed, _ResetBody)
        if parsed.meters:
            self.sim.limiter.reset()
        if parsed.stats:
            self.sim.stats.reset()
        if parsed.faults:
            self.sim.faults.clear()
        return json_response(200, {"reset": parsed.model_dump()})


def create_app(config: SimulatorConfig | None = None, *, clock: Clock | None = None) -> SimApp:
    """The ASGI app for one simulated provider (built-in defaults when no config is given)."""
    return SimApp(Simulator(config or SimulatorConfig(), clock))
