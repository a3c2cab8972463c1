"""OpenAI-compatible ``POST /v1/embeddings`` and legacy ``POST /v1/completions``: jobs like chat calls
(the same tags, budgets, cost and exact cache), forwarded as written to OpenAI-format deployments
(``shared.dialects``); the answer is the provider's own."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.answers import EmbeddingList, TextCompletion
from api.auth import Caller
from api.delivery import gateway_headers, raise_unless_succeeded, screen_headers
from api.deps import GatewayDep, SubmitterDep, WaiterDep, read_body
from api.gateway import Gateway
from api.openapi import BODY, JOB_HEADERS, TENANT_KEY, answer, body_of, errors
from api.responses import OrjsonResponse
from api.routes.common import (
    CacheControlHeader,
    FeatureHeader,
    IdempotencyHeader,
    PriorityHeader,
    TaskHeader,
    submit_and_wait,
    tags_from,
)
from api.waiter import CompletionWaiter
from shared.errors import InvalidRequest
from shared.lanes import Lane
from shared.schemas import CompletionRequest, EmbeddingsRequest, JobTags, Submittable

router = APIRouter()


@router.post("/v1/embeddings", response_model=None, openapi_extra=body_of(EmbeddingsRequest), responses={
    200: answer(EmbeddingList, "The provider's embeddings", headers=JOB_HEADERS),
    **errors(*BODY, *TENANT_KEY, 404, 409, 502, 504)})
async def embeddings(
    request: Request, caller: SubmitterDep, gw: GatewayDep, waiter: WaiterDep,
    x_gateway_feature: FeatureHeader = None, x_gateway_priority: PriorityHeader = None,
    idempotency_key: IdempotencyHeader = None, x_gateway_task: TaskHeader = None,
    cache_control: CacheControlHeader = None,
) -> object:
    body = await read_body(request, EmbeddingsRequest)
    tags = tags_from(feature=x_gateway_feature, priority=x_gateway_priority, idempotency_key=idempotency_key,
                     metadata=None, task=x_gateway_task, cache_control=cache_control)
    return await _answer(gw, waiter, caller, body, tags)


@router.post("/v1/completions", response_model=None, openapi_extra=body_of(CompletionRequest), responses={
    200: answer(TextCompletion, "The provider's text completion", headers=JOB_HEADERS),
    **errors(*BODY, *TENANT_KEY, 404, 409, 502, 504)})
async def completions(
    request: Request, caller: SubmitterDep, gw: GatewayDep, waiter: WaiterDep,
    x_gateway_feature: FeatureHeader = None, x_gateway_priority: PriorityHeader = None,
    idempotency_key: IdempotencyHeader = None, x_gateway_task: TaskHeader = None,
    cache_control: CacheControlHeader = None,
) -> object:
    body = await read_body(request, CompletionRequest)
    if body.stream:
        raise InvalidRequest("stream: the legacy completions route answers whole; send stream false, or use "
                             "/v1/chat/completions to stream", param="stream")
    tags = tags_from(feature=x_gateway_feature, priority=x_gateway_priority, idempotency_key=idempotency_key,
                     metadata=None, task=x_gateway_task, cache_control=cache_control)
    return await _answer(gw, waiter, caller, body, tags)


async def _answer(gw: Gateway, waiter: CompletionWaiter, caller: Caller, body: Submittable,
                  tags: JobTags) -> OrjsonResponse:
    """Submit, wait for the job and answer with its result and the gateway's headers, as chat does."""
    submitted, view = await submit_and_wait(gw, waiter, caller, body, tags, gw.settings.api.max_sync_wait_s,
                                            default_lane=Lane.INTERACTIVE)
    result = raise_unless_succeeded(view, submitted.view["id"])
    assert view is not None
    return OrjsonResponse(result, headers=gateway_headers(view) | screen_headers(submitted.screening))
