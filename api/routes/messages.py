"""Anthropic-compatible ``POST /v1/messages``: the job keeps the request as written (``shared.dialects``):
an Anthropic deployment receives it unchanged, an OpenAI one a translation; the answer is Anthropic's."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from api.answers import AnthropicMessage, TokenCount
from api.delivery import (
    STREAM_EVENTS,
    anthropic_sse,
    gateway_headers,
    raise_unless_succeeded,
    screen_headers,
)
from api.deps import CallerDep, GatewayDep, read_body
from api.openapi import BODY, JOB_HEADERS, TENANT_KEY, answer, body_of, errors, sse, submit_doc
from api.responses import OrjsonResponse
from api.routes.common import submit_of
from api.streaming import relay
from shared.budget import prompt_tokens
from shared.dialects import chat_view
from shared.errors import PermissionDenied, echo
from shared.routing import chain_for
from shared.schemas import Storable, StreamFlag
from shared.translate import openai_to_anthropic_response

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
    """An Anthropic Messages request: what the gateway reads is checked here, so a request it cannot read
    is a 400 naming the field; every other field (``top_k``, ``thinking``, ``cache_control`` ...) is kept
    and reaches an Anthropic deployment as written (across dialects, ``shared.dialects`` decides)."""

    model_config = ConfigDict(extra="allow")
    dialect: ClassVar[str] = "anthropic"

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
    stream: StreamFlag = False
    metadata: RequestMetadata | None = None

    def provider_payload(self) -> dict[str, Any]:
        """The request as the job keeps it: every field the caller set, ``stream`` aside (the gateway's)."""
        return self.model_dump(exclude_unset=True, exclude={"stream"})


class CountTokensRequest(MessagesRequest):
    """``POST /v1/messages/count_tokens``: a Messages request without ``max_tokens``."""

    max_tokens: int = Field(1, ge=1, description="not needed to count")


@router.post("/v1/messages/count_tokens", response_model=None, openapi_extra=body_of(CountTokensRequest),
             responses={200: answer(TokenCount, "The prompt's tokens, counted by the gateway (no provider call)"),
                        **errors(*BODY, *TENANT_KEY, 404, anthropic=True)})
async def count_tokens(request: Request, caller: CallerDep, gw: GatewayDep) -> dict[str, int]:
    """Answered here from the estimator that budgets the call (``shared.budget.prompt_tokens``), for a
    model this gateway serves: no provider call, no job, no budget spent."""
    body = await read_body(request, CountTokensRequest)
    chain_for(gw.settings, body.model)  # an unknown model is a 404, as on /v1/messages
    if body.model not in gw.model_names(caller):  # as GET /v1/models lists them for this key
        raise PermissionDenied(f"This key may not use the model {echo(body.model)}; GET /v1/models lists those "
                               "it may.", param="model", code="model_not_allowed")
    return {"input_tokens": prompt_tokens(chat_view(body.provider_payload(), "anthropic"))}


@router.post("/v1/messages", response_model=None, openapi_extra=submit_doc(MessagesRequest), responses={
    200: answer(AnthropicMessage, "The finished job's answer; with `stream: true`, Anthropic's stream events",
                headers=JOB_HEADERS, content=sse("the event as JSON", list(STREAM_EVENTS))),
    **errors(*BODY, *TENANT_KEY, 404, 409, 502, 504, anthropic=True)})
async def messages(request: Request) -> object:
    submit = await submit_of(request)
    body = await read_body(request, MessagesRequest)
    tags = submit.tags()
    if body.stream:  # the headers, naming the job, go out at once; the events as the provider makes them
        stored, finish = await submit.early(body, tags)
        events = relay(submit.streams, stored["id"], request.url.path, finish,
                       lambda r: anthropic_sse(openai_to_anthropic_response(r, body.model)))
        return StreamingResponse(events, media_type="text/event-stream", headers=gateway_headers(stored))
    submitted, view = await submit.and_wait(body, tags)
    result = raise_unless_succeeded(view, submitted.view["id"])
    assert view is not None
    return OrjsonResponse(openai_to_anthropic_response(result, body.model),
                          headers=gateway_headers(view) | screen_headers(submitted.screening))

