"""Anthropic-compatible Message Batches API: ``client.messages.batches.create(...)``, ``retrieve``, ``list``,
``cancel`` and ``results`` work unchanged (``api.message_batches``). A tenant sees only its own batches."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.answers import MessageBatch, MessageBatchList
from api.deps import CallerDep, GatewayDep, SubmitterDep, read_body
from api.gateway import Gateway
from api.message_batches import MessageBatches
from api.message_requests import MessageBatchCreate
from api.openapi import BODY, TENANT_KEY, answer, body_of, errors
from api.routes.common import FeatureHeader, tags_from

router = APIRouter()
BatchId = Annotated[str | None, Query(max_length=40, pattern=r"^[A-Za-z0-9_]+$")]


def _batches(gw: Gateway) -> MessageBatches:
    return MessageBatches(gw.batches)


@router.post("/v1/messages/batches", response_model=None, openapi_extra=body_of(MessageBatchCreate), responses={
    200: answer(MessageBatch, "The batch, in progress: its requests are jobs in the batch lane"),
    **errors(*BODY, *TENANT_KEY, anthropic=True)})
async def create_message_batch(request: Request, caller: SubmitterDep, gw: GatewayDep,
                               x_gateway_feature: FeatureHeader = None) -> dict[str, Any]:
    """Every request checked (as ``POST /v1/messages`` checks one, not streamed, custom_ids unique, models
    this key may use) before anything is written; at most ``files.max_lines`` requests."""
    body = await read_body(request, MessageBatchCreate, {"max_requests": gw.settings.files.max_lines})
    feature = tags_from(feature=x_gateway_feature, priority=None, idempotency_key=None, metadata=None).feature
    return await run_in_threadpool(_batches(gw).create, caller, body, feature, str(request.base_url))


@router.get("/v1/messages/batches", response_model=None, responses={
    200: answer(MessageBatchList, "The tenant's message batches, newest first"),
    **errors(400, *TENANT_KEY, anthropic=True)})
async def list_message_batches(request: Request, caller: CallerDep, gw: GatewayDep,
                               limit: Annotated[int, Query(ge=1, le=1000)] = 20, before_id: BatchId = None,
                               after_id: BatchId = None) -> dict[str, Any]:
    return await run_in_threadpool(_batches(gw).list, caller, limit, before_id, after_id, str(request.base_url))


@router.get("/v1/messages/batches/{message_batch_id}", response_model=None, responses={
    200: answer(MessageBatch, "The batch, its request counts current"), **errors(404, *TENANT_KEY, anthropic=True)})
async def get_message_batch(message_batch_id: str, request: Request, caller: CallerDep,
                            gw: GatewayDep) -> dict[str, Any]:
    return await run_in_threadpool(_batches(gw).retrieve, caller, message_batch_id, str(request.base_url))


@router.post("/v1/messages/batches/{message_batch_id}/cancel", response_model=None, responses={
    200: answer(MessageBatch, "The batch, canceling: what is not yet sent is cancelled, what is in flight ends"),
    **errors(404, *TENANT_KEY, anthropic=True)})
async def cancel_message_batch(message_batch_id: str, request: Request, caller: SubmitterDep,
                               gw: GatewayDep) -> dict[str, Any]:
    return await run_in_threadpool(_batches(gw).cancel, caller, message_batch_id, str(request.base_url))


@router.get("/v1/messages/batches/{message_batch_id}/results", response_class=StreamingResponse, responses={
    200: {"description": "one JSON line per request, in the order sent: {custom_id, result: {type: succeeded, "
                         "message} | {type: errored, error} | {type: canceled} | {type: expired}}",
          "content": {"application/x-jsonl": {"schema": {"type": "string"}}}},
    **errors(404, 409, *TENANT_KEY, anthropic=True)})
async def message_batch_results(message_batch_id: str, caller: CallerDep, gw: GatewayDep) -> StreamingResponse:
    """Once the batch has ended (a 409 before); streamed, read from the jobs a page at a time."""
    lines = await run_in_threadpool(_batches(gw).results, caller, message_batch_id)
    return StreamingResponse(lines, media_type="application/x-jsonl")
