"""OpenAI's other endpoints the gateway forwards to: ``/v1/embeddings`` and the legacy ``/v1/completions``.

Both run through the same engine as chat (auth, faults, meters, stats): only parsing and rendering
differ. Embeddings are charged their input tokens on TPM and produce no output; their vectors are
deterministic (seeded by the input), unit length, ``dimensions`` long (1536 by default), as floats or,
with ``encoding_format: base64`` (the OpenAI SDK's default), as base64 of little-endian float32s. A
legacy completion is a chat reply to the prompt, counted without the chat framing; streamed, it is
``text_completion`` chunks of its text, as OpenAI's (the usage in a last chunk when asked for).
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
import time
from typing import Any

from ops.sim.completions import Completion
from ops.sim.http import Headers, Response, json_response
from ops.sim.openai_api import FINISH, OpenAIApi
from ops.sim.wire import ChatRequest, new_id, positive_int, require, split_for_stream, spread, sse_data
from shared.tokens import count_tokens

DIMENSIONS = 1536


def _inputs(value: Any, name: str) -> list[str | list[int]]:
    """The request's inputs: strings, or token id lists (a flat list of ids is one input)."""
    if isinstance(value, str):
        value = [value]
    require(isinstance(value, list) and bool(value), f"'{name}' must be a non-empty string or array.", name)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [value]
    require(all(isinstance(v, str) and v or isinstance(v, list) and v for v in value),
            f"Invalid '{name}': every item must be a non-empty string or token array.", name)
    return list(value)


def _text(items: list[str | list[int]]) -> str:
    return "\n".join(i if isinstance(i, str) else " ".join(map(str, i)) for i in items)


def _tokens(items: list[str | list[int]], model: str, estimate_only: bool) -> int:
    return sum(count_tokens(i, model, estimate_only=estimate_only) if isinstance(i, str) else len(i) for i in items)


def vector(item: str | list[int], model: str, dimensions: int) -> list[float]:
    """A unit vector seeded by the input and model: the same input, the same embedding."""
    seed = hashlib.blake2b(f"{model}\0{item!r}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(seed, "big"))
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


class EmbeddingsApi(OpenAIApi):
    def parse(self, body: Any) -> ChatRequest:
        require(isinstance(body, dict), "The request body must be a JSON object.")
        model = body.get("model")
        require(isinstance(model, str) and bool(model), "you must provide a model parameter", "model")
        items = _inputs(body.get("input"), "input")
        require(len(items) <= 2048, "Invalid 'input': at most 2048 inputs.", "input")
        encoding = body.get("encoding_format") or "float"
        require(encoding in ("float", "base64"), "Invalid 'encoding_format': float or base64.", "encoding_format")
        dimensions = positive_int(body, "dimensions") or DIMENSIONS
        return ChatRequest(model=model, messages=[{"role": "user", "content": _text(items)}], max_tokens=None,
                           generates=False, extra={"inputs": items, "encoding": encoding, "dimensions": dimensions})

    def prompt_tokens(self, req: ChatRequest, estimate_only: bool = False) -> int:
        return _tokens(req.extra["inputs"], req.model, estimate_only)

    def render(self, req: ChatRequest, completions: list[Completion], prompt: int, headers: Headers) -> Response:
        data = []
        for i, item in enumerate(req.extra["inputs"]):
            values = vector(item, req.model, req.extra["dimensions"])
            embedding: Any = values if req.extra["encoding"] == "float" else base64.b64encode(
                struct.pack(f"<{len(values)}f", *values)).decode()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        return json_response(200, {"object": "list", "data": data, "model": req.model,
                                   "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}, headers)


class CompletionsApi(OpenAIApi):
    def parse(self, body: Any) -> ChatRequest:
        require(isinstance(body, dict), "The request body must be a JSON object.")
        model = body.get("model")
        require(isinstance(model, str) and bool(model), "you must provide a model parameter", "model")
        items = _inputs(body.get("prompt"), "prompt")
        n = positive_int(body, "n") or 1
        require(n <= 128, "Invalid 'n': at most 128.", "n")
        options = body.get("stream_options") or {}
        return ChatRequest(model=model, messages=[{"role": "user", "content": _text(items)}], n=n,
                           max_tokens=positive_int(body, "max_tokens") or 16, stream=bool(body.get("stream")),
                           include_usage=bool(options.get("include_usage")), extra={"inputs": items})

    def prompt_tokens(self, req: ChatRequest, estimate_only: bool = False) -> int:
        return _tokens(req.extra["inputs"], req.model, estimate_only)

    def render(self, req: ChatRequest, completions: list[Completion], prompt: int, headers: Headers) -> Response:
        output = sum(c.output_tokens for c in completions)
        choices = [{"text": c.text or "", "index": i, "logprobs": None, "finish_reason": FINISH[c.finish]}
                   for i, c in enumerate(completions)]
        return json_response(200, {
            "id": new_id("cmpl-"), "object": "text_completion", "created": int(time.time()), "model": req.model,
            "choices": choices, "usage": {"prompt_tokens": prompt, "completion_tokens": output,
                                          "total_tokens": prompt + output}}, headers)

    def stream_frames(self, req: ChatRequest, completions: list[Completion], prompt: int,
                      per_event: int) -> list[tuple[int, bytes]]:
        base = {"id": new_id("cmpl-"), "object": "text_completion", "created": int(time.time()), "model": req.model}

        def chunk(index: int, text: str, finish: str | None = None) -> bytes:
            return sse_data({**base, "choices": [{"text": text, "index": index, "logprobs": None,
                                                  "finish_reason": finish}]})

        frames: list[tuple[int, bytes]] = []
        for i, c in enumerate(completions):
            pieces = split_for_stream(c.text, per_event)
            frames += [(n, chunk(i, piece)) for n, piece in zip(spread(c.output_tokens, len(pieces)), pieces,
                                                                strict=True)]
            frames.append((0, chunk(i, "", FINISH[c.finish])))
        if req.include_usage:
            output = sum(c.output_tokens for c in completions)
            frames.append((0, sse_data({**base, "choices": [], "usage": {
                "prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}})))
        return [*frames, (0, b"data: [DONE]\n\n")]
