"""OpenAI-compatible Files and Batches APIs: ``client.files.create(...)`` and ``client.batches.create(...)``
work unchanged. Files live in ``shared.files`` (a directory per tenant); a batch's lines are jobs in the
batch lane (``api.batches``). A tenant sees only its own files and batches."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.batches import expires_after
from api.deps import CallerDep, GatewayDep, SubmitterDep
from api.openapi import TENANT_KEY, errors
from shared.errors import InvalidRequest, echo

router = APIRouter()
PURPOSES = ("batch",)


@router.post("/v1/files", responses={**errors(400, 408, 413, *TENANT_KEY)})
async def upload_file(caller: SubmitterDep, gw: GatewayDep, file: Annotated[UploadFile, File()],
                      purpose: Annotated[str, Form(max_length=32)],
                      anchor: Annotated[str | None, Form(alias="expires_after[anchor]", max_length=32)] = None,
                      seconds: Annotated[str | None, Form(alias="expires_after[seconds]", max_length=16)] = None,
                      ) -> dict[str, Any]:
    """Keep an uploaded file (JSONL of batch requests, ``purpose=batch``), copied in chunks; it expires
    after ``expires_after`` (anchor ``created_at``, 1 hour to 30 days), else ``files.expires_s``."""
    if purpose not in PURPOSES:
        raise InvalidRequest(f"purpose: {echo(purpose)}; this gateway keeps files for batches only "
                             "(purpose 'batch')", param="purpose")
    expiry = None
    if anchor is not None or seconds is not None:
        number = int(seconds) if seconds is not None and seconds.isdigit() else seconds
        expiry = expires_after({"anchor": anchor, "seconds": number}, "expires_after")
    name = (file.filename or "upload.jsonl")[:255]
    return await run_in_threadpool(gw.batches.files.save, caller.tenant, file.file, purpose=purpose,
                                   filename=name, max_bytes=gw.settings.files.max_bytes, expires_s=expiry)


@router.get("/v1/files", responses={**errors(*TENANT_KEY)})
async def list_files(caller: CallerDep, gw: GatewayDep, purpose: str | None = None) -> dict[str, Any]:
    found = await run_in_threadpool(gw.batches.files.list, caller.tenant, purpose)
    return {"object": "list", "data": found, "has_more": False}


@router.get("/v1/files/{file_id}", responses={**errors(404, *TENANT_KEY)})
async def get_file(file_id: str, caller: CallerDep, gw: GatewayDep) -> dict[str, Any]:
    return await run_in_threadpool(gw.batches.files.meta, caller.tenant, file_id)


@router.get("/v1/files/{file_id}/content", response_class=StreamingResponse, responses={
    200: {"description": "the file's bytes, as uploaded or written",
          "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    **errors(404, *TENANT_KEY)})
async def file_content(file_id: str, caller: CallerDep, gw: GatewayDep) -> StreamingResponse:
    await run_in_threadpool(gw.batches.files.meta, caller.tenant, file_id)  # a 404 before the stream starts
    return StreamingResponse(gw.batches.files.chunks(caller.tenant, file_id), media_type="application/octet-stream")


@router.delete("/v1/files/{file_id}", responses={**errors(404, *TENANT_KEY)})
async def delete_file(file_id: str, caller: CallerDep, gw: GatewayDep) -> dict[str, Any]:
    return await run_in_threadpool(gw.batches.files.delete, caller.tenant, file_id)


@router.post("/v1/batches", responses={**errors(400, 404, 408, 413, *TENANT_KEY)})
async def create_batch(request: Request, caller: SubmitterDep, gw: GatewayDep) -> dict[str, Any]:
    """Each line of the input file becomes a job in the batch lane (``api.batches``)."""
    try:
        body = await request.json()
    except ValueError:
        raise InvalidRequest("the body must be a JSON object: input_file_id, endpoint, completion_window") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object: input_file_id, endpoint, completion_window")
    return await run_in_threadpool(gw.batches.create, caller, body)


@router.get("/v1/batches", responses={**errors(400, *TENANT_KEY)})
async def list_batches(caller: CallerDep, gw: GatewayDep, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                       after: Annotated[str | None, Query(max_length=40)] = None) -> dict[str, Any]:
    return await run_in_threadpool(gw.batches.list, caller, limit, after)


@router.get("/v1/batches/{batch_id}", responses={**errors(404, *TENANT_KEY)})
async def get_batch(batch_id: str, caller: CallerDep, gw: GatewayDep) -> dict[str, Any]:
    return await run_in_threadpool(gw.batches.retrieve, caller, batch_id)


@router.post("/v1/batches/{batch_id}/cancel", responses={**errors(404, *TENANT_KEY)})
async def cancel_batch(batch_id: str, caller: SubmitterDep, gw: GatewayDep) -> dict[str, Any]:
    return await run_in_threadpool(gw.batches.cancel, caller, batch_id)
