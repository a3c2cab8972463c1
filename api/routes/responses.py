"""OpenAI-compatible ``POST /v1/responses``: a job like a chat call (the same tags, budgets, cost and exact
cache), sent through chat completions on whichever deployment serves it (``shared.responses_api``), and
answered as a ``response``; with ``stream: true``, the Responses events as the provider streams (``api.streaming``)."""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field

from api.answers import ResponseObject
from api.delivery import gateway_headers, raise_unless_succeeded, screen_headers
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
from shared import responses_api
from shared.lanes import Lane
from shared.schemas import Storable

router = APIRouter()


class ResponsesRequest(Storable):
    """An OpenAI Responses request: what the translation to chat reads is checked there (a 400 naming
    the field); every field is kept with the job."""

    model_config = ConfigDict(extra="allow")
    dialect: ClassVar[str] = "responses"

    model: str = Field(min_length=1, examples=["gpt-4o-mini"])
    input: str | list[dict[str, Any]] = Field(min_length=1, examples=["Hello"])
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    stream: bool = False
    metadata: dict[str, str] | None = None
    previous_response_id: str | None = Field(None, description="not supported: the gateway keeps no state")

    def provider_payload(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude={"stream", "stream_options"})


@router.post("/v1/responses", response_model=None, openapi_extra=body_of(ResponsesRequest), responses={
    200: answer(ResponseObject, "The finished job's answer as a response; with `stream: true`, the Responses "
                "events", headers=JOB_HEADERS, content=sse("the event as JSON")),
    **errors(*BODY, *TENANT_KEY, 404, 409, 502, 504)})
async def responses(
    request: Request, caller: SubmitterDep, gw: GatewayDep, waiter: WaiterDep, streams: StreamsDep,
    x_gateway_feature: FeatureHeader = None, x_gateway_priority: PriorityHeader = None,
    idempotency_key: IdempotencyHeader = None, x_gateway_task: TaskHeader = None,
    cache_control: CacheControlHeader = None,
) -> object:
    body = await read_body(request, ResponsesRequest)
    payload = body.provider_payload()
    responses_api.to_chat(payload)  # what chat cannot say is a 400 naming the field, before anything is stored
    tags = tags_from(feature=x_gateway_feature, priority=x_gateway_priority, idempotency_key=idempotency_key,
                     metadata=body.metadata, task=x_gateway_task, cache_control=cache_control)
    wait_s = gw.settings.api.max_sync_wait_s
    if body.stream:  # the headers, naming the job, go out at once; the events as the provider makes them
        stored, finish = await submit_early(gw, waiter, caller, body, tags, wait_s, Lane.INTERACTIVE)
        events = relay(streams, stored["id"], request.url.path, finish,
                       lambda r: responses_api.stream_events(responses_api.from_chat(r, payload)))
        return StreamingResponse(events, media_type="text/event-stream", headers=gateway_headers(stored))
    submitted, view = await submit_and_wait(gw, waiter, caller, body, tags, wait_s, default_lane=Lane.INTERACTIVE)
    result = raise_unless_succeeded(view, submitted.view["id"])
    assert view is not None
    return OrjsonResponse(responses_api.from_chat(result, payload),
                          headers=gateway_headers(view) | screen_headers(submitted.screening))
