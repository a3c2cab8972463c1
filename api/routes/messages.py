"""Anthropic-compatible ``POST /v1/messages``: translated to the canonical chat format and back."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.answers import AnthropicMessage
from api.delivery import (
    STREAM_EVENTS,
    anthropic_sse,
    gateway_headers,
    raise_unless_succeeded,
    screen_headers,
)
from api.deps import GatewayDep, StreamsDep, SubmitterDep, WaiterDep, read_body
from api.openapi import BODY, JOB_HEADERS, TENANT_KEY, answer, body_of, errors, sse
from api.responses import OrjsonResponse
from api.routes.common import (
    CacheControlHeader,
    FeatureHeader,
    IdempotencyHeader,
    PriorityHeader,
    TaskHeader,
    submit_and_wait,
    submit_early,
    tags_from,
)
from api.streaming import relay
from shared.errors import InvalidRequest, clip
from shared.lanes import Lane
from shared.schemas import ChatRequest, Storable
from shared.translate import anthropic_to_openai_request, openai_to_anthropic_response

router = APIRouter()


class _Open(BaseModel):
    """Anthropic's objects, checked for what the translation reads; their other fields pass (or are dropped)."""

    model_config = ConfigDict(extra="allow")


class TextBlock(_Open):
    type: Literal["text"]
    text: str


class ImageBlock(_Open):
    type: Literal["image"]
    source: dict[str, Any] = Field(description="{type: base64, media_type, data} or {type: url, url}")


class ToolUseBlock(_Open):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(_Open):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock] | None = None


class ThinkingBlock(_Open):
    type: Literal["thinking", "redacted_thinking"]


class UserTurn(_Open):
    role: Literal["user"]
    content: str | list[Annotated[TextBlock | ImageBlock | ToolResultBlock, Field(discriminator="type")]]


class AssistantTurn(_Open):
    role: Literal["assistant"]
    content: str | list[Annotated[TextBlock | ToolUseBlock | ThinkingBlock, Field(discriminator="type")]]


class Tool(_Open):
    type: Literal["custom"] | None = Field(None, description="client tools only; server tools are not supported")
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoice(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(None, description="the tool, with type tool")
    disable_parallel_tool_use: bool | None = None


class RequestMetadata(_Open):
    user_id: str | None = None


class MessagesRequest(Storable):
    """An Anthropic Messages request: what the translation to the canonical format reads is checked here,
    so a request it cannot read is a 400 naming the field; other top-level fields are dropped."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, examples=["claude-haiku-4-5"])
    messages: list[Annotated[UserTurn | AssistantTurn, Field(discriminator="role")]] = Field(
        min_length=1, examples=[[{"role": "user", "content": "Hello"}]])
    max_tokens: int = Field(ge=1)
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    stream: bool = False
    metadata: RequestMetadata | None = None


@router.post("/v1/messages", response_model=None, openapi_extra=body_of(MessagesRequest), responses={
    200: answer(AnthropicMessage, "The finished job's answer; with `stream: true`, Anthropic's stream events",
                headers=JOB_HEADERS, content=sse("the event as JSON", list(STREAM_EVENTS))),
    **errors(*BODY, *TENANT_KEY, 404, 409, 502, 504, anthropic=True)})
async def messages(
    request: Request, caller: SubmitterDep, gw: GatewayDep, waiter: WaiterDep, streams: StreamsDep,
    x_gateway_feature: FeatureHeader = None, x_gateway_priority: PriorityHeader = None,
    idempotency_key: IdempotencyHeader = None, x_gateway_task: TaskHeader = None,
    cache_control: CacheControlHeader = None,
) -> object:
    body = await read_body(request, MessagesRequest)
    chat = _to_chat(body)
    tags = tags_from(feature=x_gateway_feature, priority=x_gateway_priority,
                     idempotency_key=idempotency_key, metadata=None, task=x_gateway_task,
                     cache_control=cache_control)
    wait_s = gw.settings.api.max_sync_wait_s
    if body.stream:  # the headers, naming the job, go out at once; the events as the provider makes them
        chat = chat.model_copy(update={"stream": True}).streamed_as("anthropic")
        stored, finish = await submit_early(gw, waiter, caller, chat, tags, wait_s, Lane.INTERACTIVE)
        events = relay(streams, stored["id"], request.url.path, finish,
                       lambda r: anthropic_sse(openai_to_anthropic_response(r, body.model)))
        return StreamingResponse(events, media_type="text/event-stream", headers=gateway_headers(stored))
    submitted, view = await submit_and_wait(gw, waiter, caller, chat, tags, wait_s, default_lane=Lane.INTERACTIVE)
    result = raise_unless_succeeded(view, submitted.view["id"])
    assert view is not None
    return OrjsonResponse(openai_to_anthropic_response(result, body.model),
                          headers=gateway_headers(view) | screen_headers(submitted.screening))


def _to_chat(body: MessagesRequest) -> ChatRequest:
    raw = body.model_dump(exclude={"stream"}, exclude_none=True)
    try:
        translated = anthropic_to_openai_request(raw)
    except (TypeError, KeyError, ValueError, AttributeError, IndexError) as exc:
        raise InvalidRequest(f"Invalid request: the message could not be read as Anthropic's format "
                             f"({type(exc).__name__}: {clip(str(exc))}).") from exc
    try:
        return ChatRequest.model_validate(translated)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = clip(".".join(str(p) for p in err.get("loc", ())))
        raise InvalidRequest(f"Invalid request: {where}: {err['msg']}", param=where) from exc
