"""OpenAI-compatible ``POST /v1/embeddings`` and legacy ``POST /v1/completions``: jobs like chat calls
(the same tags, budgets, cost and exact cache), forwarded as written to OpenAI-format deployments
(``shared.dialects``); the answer is the provider's own. A completion with ``stream: true`` is the
provider's ``text_completion`` chunks as it makes them, relayed like chat's (``api.streaming``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.answers import EmbeddingList, TextCompletion
from api.delivery import completion_sse, gateway_headers, raise_unless_succeeded, screen_headers
from api.deps import read_body
from api.openapi import BODY, JOB_HEADERS, TENANT_KEY, answer, errors, sse, submit_doc
from api.responses import OrjsonResponse
from api.routes.common import Submit, submit_of
from api.streaming import relay
from shared.schemas import CompletionRequest, EmbeddingsRequest, Submittable

router = APIRouter()


@router.post("/v1/embeddings", response_model=None, openapi_extra=submit_doc(EmbeddingsRequest), responses={
    200: answer(EmbeddingList, "The provider's embeddings", headers=JOB_HEADERS),
    **errors(*BODY, *TENANT_KEY, 404, 409, 502, 504)})
async def embeddings(request: Request) -> object:
    submit = await submit_of(request)
    body = await read_body(request, EmbeddingsRequest)
    return await _answer(submit, body)


@router.post("/v1/completions", response_model=None, openapi_extra=submit_doc(CompletionRequest), responses={
    200: answer(TextCompletion, "The provider's text completion; with `stream: true`, its text_completion chunks",
                headers=JOB_HEADERS, content=sse("a text_completion chunk as JSON; `[DONE]` last")),
    **errors(*BODY, *TENANT_KEY, 404, 409, 502, 504)})
async def completions(request: Request) -> object:
    submit = await submit_of(request)
    body = await read_body(request, CompletionRequest)
    if body.stream:  # the headers, naming the job, go out at once; the chunks as the provider makes them
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        stored, finish = await submit.early(body, submit.tags())
        events = relay(submit.streams, stored["id"], request.url.path, finish,
                       lambda r: completion_sse(r, include_usage))
        return StreamingResponse(events, media_type="text/event-stream", headers=gateway_headers(stored))
    return await _answer(submit, body)


async def _answer(submit: Submit, body: Submittable) -> OrjsonResponse:
    """Submit, wait for the job and answer with its result and the gateway's headers, as chat does."""
    submitted, view = await submit.and_wait(body, submit.tags())
    result = raise_unless_succeeded(view, submitted.view["id"])
    assert view is not None
    return OrjsonResponse(result, headers=gateway_headers(view) | screen_headers(submitted.screening))
