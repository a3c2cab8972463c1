"""OpenAI-compatible ``POST /v1/chat/completions`` and ``GET /v1/models``: the synchronous fast lane."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.answers import ChatCompletion, ModelList
from api.delivery import gateway_headers, openai_sse, raise_unless_succeeded, screen_headers
from api.deps import CallerDep, GatewayDep, StreamsDep, SubmitterDep, WaiterDep, read_body
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
from shared.lanes import Lane
from shared.schemas import ChatRequest

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None, openapi_extra=body_of(ChatRequest), responses={
    200: answer(ChatCompletion, "The finished job's answer; with `stream: true`, OpenAI's chat.completion.chunk events",
                headers=JOB_HEADERS,
                content=sse("a chat.completion.chunk as JSON; `[DONE]` last")),
    **errors(*BODY, *TENANT_KEY, 404, 409, 502, 504)})
async def chat_completions(
    request: Request, caller: SubmitterDep, gw: GatewayDep, waiter: WaiterDep, streams: StreamsDep,
    x_gateway_feature: FeatureHeader = None, x_gateway_priority: PriorityHeader = None,
    idempotency_key: IdempotencyHeader = None, x_gateway_task: TaskHeader = None,
    cache_control: CacheControlHeader = None,
) -> object:
    body = await read_body(request, ChatRequest)
    tags = tags_from(feature=x_gateway_feature, priority=x_gateway_priority,
                     idempotency_key=idempotency_key, metadata=body.metadata, task=x_gateway_task,
                     cache_control=cache_control)
    wait_s = gw.settings.api.max_sync_wait_s
    if body.stream:  # the headers, naming the job, go out at once; the events as the provider makes them
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        stored, finish = await submit_early(gw, waiter, caller, body, tags, wait_s, Lane.INTERACTIVE)
        events = relay(streams, stored["id"], request.url.path, finish, lambda r: openai_sse(r, include_usage))
        return StreamingResponse(events, media_type="text/event-stream", headers=gateway_headers(stored))
    submitted, view = await submit_and_wait(gw, waiter, caller, body, tags, wait_s, default_lane=Lane.INTERACTIVE)
    result = raise_unless_succeeded(view, submitted.view["id"])
    assert view is not None
    return OrjsonResponse(result, headers=gateway_headers(view) | screen_headers(submitted.screening))


@router.get("/v1/models", response_model=None,
            responses={200: answer(ModelList, "The models this gateway serves"), **errors(*TENANT_KEY)})
async def list_models(caller: CallerDep, gw: GatewayDep) -> dict[str, object]:
    names = gw.model_names(caller)
    return {"object": "list",
            "data": [{"id": n, "object": "model", "created": 0, "owned_by": "gateway"} for n in names]}
