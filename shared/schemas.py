"""What callers send: the OpenAI chat request (the gateway's canonical format) and the native job.

Unknown top-level fields are kept and passed through to OpenAI-style providers, so new SDK options do
not break callers; fields we can check are checked, with messages that say what to change. Every body
is also held to what the gateway can store and forward (``shared.storable``) before anything is written.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shared import responses_api
from shared.errors import echo
from shared.lanes import Lane
from shared.storable import problem_in

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
MAX_DEADLINE_S = 366 * 86_400  # a job may wait at most this long; beyond it is a caller's mistake


def _storable(data: Any) -> Any:
    """Refuse, before anything else, a body the gateway could not store or forward (``shared.storable``).
    The error's ``path`` names the field; ``api.errors`` appends it to the location."""
    found = problem_in(data)
    if found is not None:
        raise PydanticCustomError("unsupported_value", "{reason}; the gateway cannot store or forward it",
                                  {"path": found[0], "reason": found[1]})
    return data


class Storable(BaseModel):
    """A request body checked by ``_storable`` as it arrives (subclasses get the check for free)."""

    @model_validator(mode="before")
    @classmethod
    def _check_storable(cls, data: Any) -> Any:
        return _storable(data)


def _normal_feature(name: str) -> str:
    """Feature names are case-insensitive: ``Summarizer`` is ``summarizer`` (its caps, lane and metrics)."""
    return name.lower()


def _normal_task(task: str | None) -> str | None:
    """Task names are case-insensitive, as feature names are."""
    return task.lower() if task is not None else None


def _deadline_input(value: Any) -> Any:
    """Only a number of seconds or an ISO 8601 time is a deadline (JSON ``true`` is not 1 second)."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"a deadline is seconds from now or an ISO 8601 time like 2026-12-01T09:00:00Z, "
                             f"not {echo(value)}") from None
    if value is None or isinstance(value, datetime) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise ValueError(f"a deadline is seconds from now (a number) or an ISO 8601 time, not {type(value).__name__}")


def _check_deadline(value: datetime | float | None) -> datetime | float | None:
    """Seconds from now in (0, MAX_DEADLINE_S], or a time in the future at most that far away."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        left = (moment - datetime.now(UTC)).total_seconds()
        if left <= 0:
            raise ValueError(f"the deadline {moment.isoformat()} has already passed; give a future time "
                             "or seconds from now")
    else:
        left = float(value)
        if not left > 0:
            raise ValueError("a deadline in seconds must be positive")
    if left > MAX_DEADLINE_S:
        raise ValueError(f"a deadline may be at most {MAX_DEADLINE_S} seconds (366 days) away")
    return value


Feature = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$"),
                    AfterValidator(_normal_feature)]
Deadline = Annotated[datetime | StrictInt | StrictFloat | None,
                     BeforeValidator(_deadline_input), AfterValidator(_check_deadline),
                     WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DEADLINE_S},
                                               {"type": "string", "format": "date-time"}, {"type": "null"}],
                                     "description": "seconds from now, or a future ISO 8601 time; at most 366 days "
                                                    "away"})]
IdempotencyKey = Annotated[str | None, Field(min_length=1, max_length=255)]
CacheMode = Annotated[Literal["default", "no-cache", "no-store"], Field(
    description="default: served from the cache when it can be; no-cache: a fresh answer (then stored); "
                "no-store: the cache is not used at all (as the Cache-Control header says on the compatible routes)")]
Task = Annotated[str | None, Field(max_length=64, description="what the request is for (classify, extract, "
                                   "summarize, chat, code, reason ...): with model `auto`, the route it takes"),
                 AfterValidator(_normal_task)]


class Message(BaseModel):
    # The document says what ``_has_content`` checks: only an assistant message may have neither.
    model_config = ConfigDict(extra="allow", json_schema_extra={"anyOf": [
        {"properties": {"role": {"const": "assistant"}}},
        {"properties": {"content": {"not": {"type": "null"}}}, "required": ["content"]},
        {"properties": {"tool_calls": {"type": "array", "minItems": 1}}, "required": ["tool_calls"]},
    ]})

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _has_content(self) -> Message:
        if self.content is None and not self.tool_calls and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs 'content'")
        return self


class Submittable(Protocol):
    """A request a compatible route submits as a job: in its ``dialect`` (``shared.dialects``), which
    ``provider_payload`` keeps."""

    dialect: ClassVar[str]

    @property
    def model(self) -> str: ...

    @property
    def stream(self) -> bool: ...

    def provider_payload(self) -> dict[str, Any]: ...


def relay_of(request: Submittable) -> dict[str, Any] | None:
    """How a streamed answer reaches its caller (``JobSpec.stream``): relayed as the provider makes it in
    the caller's dialect, with the usage when the caller asked for it (OpenAI's
    ``stream_options.include_usage``; Anthropic's events always carry it; the Responses API's final
    event does, with what of the request its ``response`` repeats). None when it does not stream."""
    if not request.stream or request.dialect not in ("openai", "anthropic", "responses", "completions"):
        return None
    if request.dialect == "responses":
        return {"dialect": "responses", "usage": True,
                "response": responses_api.relay_request(request.provider_payload())}
    options = getattr(request, "stream_options", None) or {}
    return {"dialect": request.dialect, "usage": request.dialect == "anthropic" or bool(options.get("include_usage"))}


MAX_CHOICES = 128  # OpenAI's own limit on ``n``
# ``stream`` as the providers take it: true, or false or null (the default); "yes" or 1 is a 400, never
# a stream the caller cannot parse or a whole answer it did not ask for.
StreamFlag = Annotated[bool, Field(strict=True), BeforeValidator(lambda value: False if value is None else value)]


def check_stream_options(stream: bool, options: dict[str, Any] | None) -> None:
    """As OpenAI checks it: ``stream_options`` only on a streamed call, ``include_usage`` a boolean."""
    if options is None:
        return
    if not stream:
        raise ValueError("stream_options is only allowed with stream: true")
    if not isinstance(options.get("include_usage", False), bool):
        raise ValueError("stream_options.include_usage must be true or false")


class ChatRequest(Storable):
    """An OpenAI ``POST /v1/chat/completions`` body."""

    model_config = ConfigDict(extra="allow")
    dialect: ClassVar[str] = "openai"

    model: str = Field(min_length=1, examples=["gpt-4o-mini"])
    messages: list[Message] = Field(min_length=1, examples=[[{"role": "user", "content": "Hello"}]])
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=MAX_CHOICES, description="choices to generate; more than 1 only on "
                          "deployments that speak OpenAI's API (budgeted as n outputs)")
    stream: StreamFlag = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None

    @model_validator(mode="after")
    def _stream_options_with_stream(self) -> ChatRequest:
        check_stream_options(self.stream, self.stream_options)
        return self

    def provider_payload(self) -> dict[str, Any]:
        """The request as the job keeps it: no gateway-only fields, no streaming, no Nones; every other
        field as the caller sent it (``shared.dialects`` removes the tags in ``metadata`` on the way out)."""
        return self.model_dump(exclude_none=True, exclude={"stream", "stream_options"})

    def output_cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


MAX_INPUTS = 2048  # OpenAI's own limit on the inputs of one embeddings request
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
Texts = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=MAX_INPUTS)]
Prompt = (Annotated[str, Field(min_length=1)] | Texts | TokenIds
          | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_INPUTS)])


class EmbeddingsRequest(Storable):
    """An OpenAI ``POST /v1/embeddings`` body; fields it does not name go to the provider as written."""

    model_config = ConfigDict(extra="allow")
    dialect: ClassVar[str] = "embeddings"

    model: str = Field(min_length=1, examples=["text-embedding-3-small"])
    input: Prompt = Field(description="a string, a list of strings, token ids, or a list of token id lists")
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @property
    def stream(self) -> bool:
        return False

    def provider_payload(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class CompletionRequest(Storable):
    """An OpenAI legacy ``POST /v1/completions`` body; fields it does not name go to the provider as written."""

    model_config = ConfigDict(extra="allow")
    dialect: ClassVar[str] = "completions"

    model: str = Field(min_length=1, examples=["gpt-3.5-turbo-instruct"])
    prompt: Prompt
    max_tokens: int | None = Field(None, ge=1, description="16 when not given, as OpenAI's")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)
    stop: str | list[str] | None = None
    stream: StreamFlag = Field(False, description="true: the provider's text_completion chunks as it "
                         "makes them, `[DONE]` last")
    stream_options: dict[str, Any] | None = Field(None, description="`include_usage`: a last chunk with the usage")
    user: str | None = None

    @model_validator(mode="after")
    def _stream_options_with_stream(self) -> CompletionRequest:
        check_stream_options(self.stream, self.stream_options)
        return self

    def provider_payload(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude={"stream", "stream_options"})


class _Tags(BaseModel):
    """How a job is tagged: the native API's fields, and the compatible routes' headers."""

    feature: Feature = "default"
    priority: Lane | None = None
    task: Task = None
    deadline: Deadline = None
    idempotency_key: IdempotencyKey = None
    cache: CacheMode = "default"


class JobTags(_Tags, Storable):
    """A job's tags on their own (the tenant always comes from the API key)."""

    def deadline_at(self, default_s: float, now: datetime | None = None) -> datetime:
        now = now or datetime.now(UTC)
        if self.deadline is None:
            return now + timedelta(seconds=default_s)
        if isinstance(self.deadline, int | float):
            return now + timedelta(seconds=float(self.deadline))
        return self.deadline if self.deadline.tzinfo else self.deadline.replace(tzinfo=UTC)


class JobRequest(ChatRequest, _Tags):
    """``POST /v1/jobs``: the chat request plus the job's tags."""

    def tags(self) -> JobTags:
        return JobTags.model_construct(feature=self.feature, priority=self.priority, task=self.task,
                                       deadline=self.deadline, idempotency_key=self.idempotency_key, cache=self.cache)

    def chat(self) -> ChatRequest:
        data = self.model_dump(exclude={"feature", "priority", "task", "deadline", "idempotency_key", "cache"},
                               exclude_none=True)
        return ChatRequest.model_validate(data)

    def payload(self) -> dict[str, Any]:
        """``self.chat().provider_payload()`` without validating the chat request a second time."""
        return self.model_dump(exclude_none=True, exclude=_NOT_IN_PAYLOAD)


class BulkItem(Protocol):
    """One job of a bulk submit (``api.bulk``): a ``JobRequest``, or a request of a Message Batch
    (``api.message_requests``); ``payload`` is the request in its ``dialect``, as the job keeps it."""

    dialect: ClassVar[str]

    @property
    def model(self) -> str: ...

    @property
    def task(self) -> str | None: ...

    @property
    def idempotency_key(self) -> str | None: ...

    def tags(self) -> JobTags: ...

    def payload(self) -> dict[str, Any]: ...


# The job's tags, and what ``provider_payload`` leaves out.
_NOT_IN_PAYLOAD = {"feature", "priority", "task", "deadline", "idempotency_key", "cache", "stream",
                   "stream_options"}


class JobBatchRequest(BaseModel):
    """``POST /v1/jobs/batch``: up to ``api.max_batch_jobs`` jobs, each exactly what ``POST /v1/jobs`` takes."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[JobRequest] = Field(min_length=1)

    # Validate with ``context={"max_jobs": n}``: the count is checked before any item is, so an
    # oversized batch costs a JSON parse, not thousands of item validations.
    @field_validator("jobs", mode="before")
    @classmethod
    def _at_most_max_jobs(cls, value: Any, info: ValidationInfo) -> Any:
        limit = (info.context or {}).get("max_jobs")
        if limit is not None and isinstance(value, list) and len(value) > limit:
            raise ValueError(f"a batch holds at most {limit} jobs, this one has {len(value)}; "
                             "split it into several requests")
        return value
