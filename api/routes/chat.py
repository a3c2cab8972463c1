"""OpenAI-compatible ``POST /v1/chat/completions`` and ``GET /v1/models``: the synchronous fast lane."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.answers import ChatCompletion, ModelList
from api.delivery import gateway_headers, openai_sse, raise_unless_succeeded, screen_headers
from api.deps import CallerDep, GatewayDep, read_body
from api.openapi import BODY, JOB_HEADERS, TENANT_KEY, answer, errors, sse, submit_doc
from api.responses import OrjsonResponse
from api.routes.common import submit_of
from api.streaming import relay
from shared.schemas import ChatRequest

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None, openapi_extra=submit_doc(ChatRequest), responses={
    200: answer(ChatCompletion, "The finished job's answer; with `stream: true`, OpenAI's chat.completion.chunk events",
                headers=JOB_HEADERS,
                content=sse("a chat.completion.chunk as JSON; `[DONE]` last")),
    **errors(*BODY, *TENANT_KEY, 404, 409, 502, 504)})
async def chat_completions(request: Request) -> object:
    submit = await submit_of(request)
    body = await read_body(request, ChatRequest)
    tags = submit.tags(body.metadata)
    if body.stream:  # the headers, naming the job, go out at once; the events as the provider makes them
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        stored, finish = await submit.early(body, tags)
        events = relay(submit.streams, stored["id"], request.url.path, finish, lambda r: openai_sse(r, include_usage))
        return StreamingResponse(events, media_type="text/event-stream", headers=gateway_headers(stored))
    submitted, view = await submit.and_wait(body, tags)
    result = raise_unless_succeeded(view, submitted.view["id"])
    assert view is not None
    return OrjsonResponse(result, headers=gateway_headers(view) | screen_headers(submitted.screening))


@router.get("/v1/models", response_model=None,
            responses={200: answer(ModelList, "The models this gateway serves"), **errors(*TENANT_KEY)})
async def list_models(caller: CallerDep, gw: GatewayDep) -> dict[str, object]:
    names = gw.model_names(caller)
    return {"object": "list",
            "data": [{"id": n, "object": "model", "created": 0, "owned_by": "gateway"} for n in names]}
