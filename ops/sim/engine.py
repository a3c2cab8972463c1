"""One completion request through the simulated provider: auth, faults, meter, reply, pacing, stats.

The flow is the same for both API formats; the format objects (``OpenAIApi``, ``AnthropicApi``) only
parse and render. Every answer after the key check carries the rate-limit headers of the meter the
request was charged on, so a client can sync to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

import orjson

from ops.sim.completions import (
    Completion,
    complete_json,
    complete_text,
    complete_tool_call,
    last_user_text,
    request_seed,
)
from ops.sim.config import ModelConfig, SimulatorConfig
from ops.sim.faults import FaultBoard, Outcome
from ops.sim.http import SSE_TYPE, Headers, Reply, Request, Reset, Response, Stream, StreamCut
from ops.sim.latency import Pace, pace_for
from ops.sim.limits import OUTPUT, REQUESTS, AxisState, Clock, Decision, Limiter, Meter, admission_charges
from ops.sim.stats import Counters, Stats
from ops.sim.weakness import weaken
from ops.sim.wire import ChatRequest, new_id
from shared.errors import InvalidRequest
from shared.tokens import count_tokens

MALFORMED_BODY = b'{"id": "sim-malformed", "object": "chat.completion", "choices": [{"index": 0, "mess'
STREAM_HEADERS: Headers = [SSE_TYPE, (b"cache-control", b"no-cache")]


class ProviderApi(Protocol):
    name: str

    def api_key(self, headers: dict[str, str]) -> str | None: ...
    def parse(self, body: object) -> ChatRequest: ...
    def prompt_tokens(self, req: ChatRequest, estimate_only: bool = False) -> int: ...
    def ratelimit_headers(self, state: list[AxisState]) -> Headers: ...
    def rate_limited(self, decision: Decision, req: ChatRequest, org: str, headers: Headers) -> Response: ...
    def fault_error(self, outcome: Outcome, model: str, headers: Headers) -> Response: ...
    def invalid(self, message: str, param: str | None, headers: Headers) -> Response: ...
    def unauthorized(self, key: str | None) -> Response: ...
    def unknown_model(self, model: str) -> Response: ...
    def render(self, req: ChatRequest, completions: list[Completion], prompt: int,
               headers: Headers) -> Response: ...
    def stream_frames(self, req: ChatRequest, completions: list[Completion], prompt: int,
                      per_event: int) -> list[tuple[int, bytes]]: ...


class Settlement:
    """Output charged after admission: as produced (Anthropic today) or reserve-then-refund (older)."""

    __slots__ = ("meter", "rule", "metered", "reserved", "produced", "clock", "done")

    def __init__(self, meter: Meter, config: ModelConfig, reserved: int, clock: Clock) -> None:
        self.meter, self.clock, self.reserved = meter, clock, reserved
        self.rule = config.limits.output_rule
        self.metered = OUTPUT in meter.buckets
        self.produced = 0
        self.done = False

    def produce(self, tokens: int) -> None:
        self.produced += tokens
        if self.metered and self.rule == "produced":
            self.meter.debit(OUTPUT, tokens, self.clock())

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.metered and self.rule == "estimate":
            self.meter.refund(OUTPUT, max(0, self.reserved - self.produced), self.clock())


async def wait_for_disconnect(request: Request, timeout: float) -> None:
    """Hold the request open until the client gives up or ``timeout`` passes."""
    async def disconnected() -> None:
        while request.receive is not None:
            message = await request.receive()
            if message.get("type") == "http.disconnect":
                return
        await asyncio.sleep(timeout)

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(disconnected(), timeout)


class Simulator:
    """The state of one simulated provider: config, meters, faults and stats."""

    def __init__(self, config: SimulatorConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or time.monotonic
        self.limiter = Limiter(self.clock)
        self.faults = FaultBoard(self.clock, config.seed)
        self.faults.add(config.faults)
        self.stats = Stats(self.clock, self.limiter, config.stats)
        # The W3C trace context callers sent with their last requests (GET /sim/traceparents).
        self.traceparents: deque[dict[str, str]] = deque(maxlen=1000)

    def model_config(self, model: str, api: str) -> ModelConfig | None:
        found = self.config.models.get(model)
        if found is not None or self.config.unknown_models == "reject":
            return found
        return self.config.defaults.anthropic if api == "anthropic" else self.config.defaults.openai

    def org_for(self, key: str | None) -> str | None:
        """The org whose limits a key spends; None when the key is refused."""
        if not key:
            return None
        org = self.config.org_of(key)
        if org is None and self.config.require_known_keys:
            return None
        return org or key

    async def complete(self, api: ProviderApi, request: Request) -> Reply:
        key = api.api_key(request.headers)
        org = self.org_for(key)
        if key is None or org is None:
            return api.unauthorized(key)
        try:
            req = api.parse(request.json())
        except orjson.JSONDecodeError:
            return api.invalid("We could not parse the JSON body of your request.", None, [])
        except InvalidRequest as exc:
            return api.invalid(exc.message, exc.param, [])
        config = self.model_config(req.model, api.name)
        if config is None:
            return api.unknown_model(req.model)
        if traceparent := request.headers.get("traceparent"):
            self.traceparents.append({"model": req.model, "traceparent": traceparent})
        return await self._serve(api, request, req, key, org, config)

    async def _serve(self, api: ProviderApi, request: Request, req: ChatRequest, key: str, org: str,
                     config: ModelConfig) -> Reply:
        counters = self.stats.counters(key, req.model)
        counters.requests += 1
        meter = self.limiter.meter(org, req.model, config)
        outcome = self.faults.decide(req.model, key)
        if outcome is not None and outcome.early:
            return self._early_fault(api, outcome, req, meter, counters, key)
        prompt = api.prompt_tokens(req)
        max_tokens = (req.max_tokens or config.max_output_tokens) if req.generates else 0
        if prompt + max_tokens > config.context_window:
            message = (f"This model's maximum context length is {config.context_window} tokens. However, you "
                       f"requested {prompt + max_tokens} tokens ({prompt} in the messages, {max_tokens} in "
                       "the completion). Please reduce the length of the messages or completion.")
            return api.invalid(message, "messages", [])
        charged = api.prompt_tokens(req, True) if config.limits.prompt_estimate == "chars" else prompt
        charges = admission_charges(config.limits, prompt=charged, uncached_input=prompt,
                                    max_output=max_tokens * req.n)
        decision = meter.admit(charges, self.clock())
        headers = api.ratelimit_headers(decision.state)
        if not decision.admitted:
            counters.rate_limited[decision.reason or "unknown"] += 1
            return api.rate_limited(decision, req, org, headers)
        counters.admitted += 1
        counters.input_tokens += prompt
        counters.charged_tokens += int(sum(c.take for c in charges if c.axis != REQUESTS))
        completions = self._generate(api, req, config)
        settle = Settlement(meter, config, max_tokens, self.clock)
        pace = pace_for(config.latency, outcome.slowdown if outcome else 1.0)
        if outcome is not None and outcome.kind == "cut" and req.stream:
            counters.faults["cut"] += 1
            frames = api.stream_frames(req, completions, prompt, pace.tokens_per_event())[:outcome.after_events]
            return Stream(200, self._cut(self._paced(frames, pace, settle, counters)), headers + STREAM_HEADERS)
        if outcome is not None and outcome.kind is not None:
            return await self._late_fault(outcome, request, pace, settle, counters, headers)
        if req.stream:
            frames = api.stream_frames(req, completions, prompt, pace.tokens_per_event())
            return Stream(200, self._paced(frames, pace, settle, counters), headers + STREAM_HEADERS)
        output = sum(c.output_tokens for c in completions)
        if not pace.is_zero:
            await asyncio.sleep(pace.total_s(output))
        settle.produce(output)
        settle.finish()
        counters.output_tokens += output
        counters.succeeded += 1
        return api.render(req, completions, prompt, headers)

    def _generate(self, api: ProviderApi, req: ChatRequest, config: ModelConfig) -> list[Completion]:
        if not req.generates:
            return []
        seed = request_seed(req.model, req.system, req.messages)
        tool = req.forced_tool_name()
        max_tokens = req.max_tokens or config.max_output_tokens
        prefix = "toolu_" if api.name == "anthropic" else "call_"
        if config.output.dist == "echo" and tool is None:
            text = last_user_text(req.messages)
            return [Completion(text, count_tokens(text), "stop") for _ in range(req.n)]
        return [
            complete_tool_call(seed + i, tool, req.tool_schema(tool), new_id(prefix)) if tool is not None
            else weaken(self._reply(req, config, seed + i, max_tokens), req, config.weakness, seed + i)
            for i in range(req.n)
        ]

    @staticmethod
    def _reply(req: ChatRequest, config: ModelConfig, seed: int, max_tokens: int) -> Completion:
        if req.response_schema is not None:
            return complete_json(seed, req.response_schema, max_tokens)
        return complete_text(seed, config.output, max_tokens)

    def _early_fault(self, api: ProviderApi, outcome: Outcome, req: ChatRequest, meter: Meter,
                     counters: Counters, key: str) -> Response:
        counters.faults[f"{outcome.kind}:{outcome.status}"] += 1
        if outcome.status == 401:  # the provider's own words, with the tail of the key it was sent
            return api.unauthorized(key)
        if outcome.kind == "storm":
            counters.rate_limited["storm"] += 1
        for bucket in meter.buckets.values():
            bucket.refresh(self.clock())
        return api.fault_error(outcome, req.model, api.ratelimit_headers(meter.state()))

    async def _late_fault(self, outcome: Outcome, request: Request, pace: Pace, settle: Settlement,
                          counters: Counters, headers: Headers) -> Reply:
        counters.faults[outcome.kind or "unknown"] += 1
        settle.finish()
        if outcome.kind == "hang":
            await wait_for_disconnect(request, outcome.hang_s)
            return Reset()
        if pace.ttft_s > 0:
            await asyncio.sleep(pace.ttft_s)
        if outcome.kind == "malformed":
            return Response(200, MALFORMED_BODY, [(b"content-type", b"application/json"), *headers])
        return Reset()

    @staticmethod
    async def _cut(frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The first frames of a stream, then its connection reset (the ``cut`` fault)."""
        async for frame in frames:
            yield frame
        raise StreamCut

    async def _paced(self, frames: list[tuple[int, bytes]], pace: Pace, settle: Settlement,
                     counters: Counters) -> AsyncIterator[bytes]:
        first = True
        try:
            for tokens, data in frames:
                if tokens:
                    delay = tokens * pace.per_token_s + (pace.ttft_s if first else 0.0)
                    first = False
                    if delay > 0:
                        await asyncio.sleep(delay)
                    settle.produce(tokens)
                yield data
            counters.succeeded += 1
        finally:
            settle.finish()
            counters.output_tokens += settle.produced
