"""The requests of an Anthropic Message Batch (``POST /v1/messages/batches``), checked whole before anything
is written, then kept as lines of an OpenAI batch input file for the endpoint ``/v1/messages``
(``{custom_id, method, url, body: params}``): the background ingest (``api.batch_ingest``) reads them as it
reads any batch's file, and each becomes a job of the bulk path (``api.bulk``) in Anthropic's dialect, so
an Anthropic deployment receives the params exactly as written.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from api.routes.messages import MessagesRequest
from shared.config import Settings
from shared.errors import InvalidRequest, PermissionDenied, UnknownModel, echo
from shared.routing import chain_for
from shared.schemas import JobTags

MESSAGES = "/v1/messages"  # the endpoint of every Message Batch (``Batch.endpoint``)


class BatchedRequest(BaseModel):
    """One request of a Message Batch: its custom_id, and what ``POST /v1/messages`` takes (not streamed)."""

    model_config = ConfigDict(extra="forbid")

    custom_id: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$",
                           description="names the request's result; unique within the batch")
    params: MessagesRequest


class MessageBatchCreate(BaseModel):
    """``POST /v1/messages/batches``: at most ``files.max_lines`` requests (validate with
    ``context={"max_requests": n}``; the count is checked before any request is)."""

    model_config = ConfigDict(extra="forbid")

    requests: list[BatchedRequest] = Field(min_length=1)

    @field_validator("requests", mode="before")
    @classmethod
    def _at_most_max_requests(cls, value: Any, info: ValidationInfo) -> Any:
        limit = (info.context or {}).get("max_requests")
        if limit is not None and isinstance(value, list) and len(value) > limit:
            raise ValueError(f"a batch holds at most {limit} requests, this one has {len(value)}; split it")
        return value


def check_requests(body: MessageBatchCreate, settings: Settings, allowed: Collection[str]) -> None:
    """What the schema cannot say, as a 4xx naming the request: none streamed, each custom_id once, each
    model one this gateway serves and the key may use (``allowed``, as ``GET /v1/models`` lists them)."""
    first: dict[str, int] = {}
    known: set[str] = set()
    for index, request in enumerate(body.requests):
        where = f"requests.{index}"
        if request.params.stream:
            raise InvalidRequest(f"{where}.params.stream: a request of a batch is not streamed",
                                 param=f"{where}.params.stream")
        if first.setdefault(request.custom_id, index) != index:
            raise InvalidRequest(f"{where}.custom_id: {echo(request.custom_id)} is also the custom_id of "
                                 f"requests.{first[request.custom_id]}; each request needs its own",
                                 param=f"{where}.custom_id", code="duplicate_custom_id")
        model = request.params.model
        if model not in known:
            _check_model(settings, allowed, model, f"{where}.params.model")
            known.add(model)


def _check_model(settings: Settings, allowed: Collection[str], model: str, param: str) -> None:
    try:
        chain_for(settings, model)
    except UnknownModel as exc:  # a 400 naming the request, as a bad item of a bulk submit
        raise InvalidRequest(f"{param}: {exc.message}", param=param, code=exc.code) from exc
    if model not in allowed:
        raise PermissionDenied(f"{param}: this key may not use the model {echo(model)}; GET /v1/models lists "
                               "those it may.", param=param, code="model_not_allowed")


def line_of(request: BatchedRequest) -> bytes:
    """The request as a line of the batch's file: the params as the job will keep them."""
    return orjson.dumps({"custom_id": request.custom_id, "method": "POST", "url": MESSAGES,
                         "body": request.params.provider_payload()}) + b"\n"


@dataclass(frozen=True)
class MessagesLine:
    """A line of a Message Batch as a job of the bulk path (``shared.schemas.BulkItem``): the params in
    Anthropic's dialect, the tags apart, so no field of the params is read as a tag."""

    dialect: ClassVar[str] = "anthropic"

    params: MessagesRequest
    job_tags: JobTags

    @classmethod
    def of(cls, body: dict[str, Any], tags: dict[str, Any]) -> MessagesLine:
        """Raises ``ValidationError`` as ``JobRequest.model_validate`` does."""
        return cls(MessagesRequest.model_validate(body), JobTags.model_validate(tags))

    @property
    def model(self) -> str:
        return self.params.model

    @property
    def task(self) -> str | None:
        return self.job_tags.task

    @property
    def idempotency_key(self) -> str | None:
        return self.job_tags.idempotency_key

    @property
    def stream(self) -> bool:
        return self.params.stream

    def tags(self) -> JobTags:
        return self.job_tags

    def payload(self) -> dict[str, Any]:
        return self.params.provider_payload()
