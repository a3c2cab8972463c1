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
from api.deps import read_body
from api.openapi import BODY, JOB_HEADERS, TENANT_KEY, answer, errors, sse, submit_doc
from api.responses import OrjsonResponse
from api.routes.common import submit_of
from api.streaming import relay
from shared import responses_api
from shared.schemas import Storable, StreamFlag

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
    stream: StreamFlag = False
    metadata: dict[str, str] | None = None
    previous_response_id: str | None = Field(None, description="not supported: the gateway keeps no state")

    def provider_payload(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude={"stream", "stream_options"})


@router.post("/v1/responses", response_model=None, openapi_extra=submit_doc(ResponsesRequest), responses={
    200: answer(ResponseObject, "The finished job's answer as a response; with `stream: true`, the Responses "
                "events", headers=JOB_HEADERS, content=sse("the event as JSON")),
    **errors(*BODY, *TENANT_KEY, 404, 409, 502, 504)})
async def responses(request: Request) -> object:
    submit = await submit_of(request)
    body = await read_body(request, ResponsesRequest)
    payload = body.provider_payload()
    responses_api.to_chat(payload)  # what chat cannot say is a 400 naming the field, before anything is stored
    tags = submit.tags(body.metadata)
    if body.stream:  # the headers, naming the job, go out at once; the events as the provider makes them
        stored, finish = await submit.early(body, tags)
        events = relay(submit.streams, stored["id"], request.url.path, finish,
                       lambda r: responses_api.stream_events(responses_api.from_chat(r, payload)),
                       request=responses_api.relay_request(payload))
        return StreamingResponse(events, media_type="text/event-stream", headers=gateway_headers(stored))
    submitted, view = await submit.and_wait(body, tags)
    result = raise_unless_succeeded(view, submitted.view["id"])
    assert view is not None
    return OrjsonResponse(responses_api.from_chat(result, payload),
                          headers=gateway_headers(view) | screen_headers(submitted.screening))
