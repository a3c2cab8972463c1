"""What callers send: the OpenAI chat request (the gateway's canonical format) and the native job.

Unknown top-level fields are kept and passed through to OpenAI-style providers, so new SDK options do
not break callers; fields we can check are checked, with messages that say what to change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

Priority = Literal["interactive", "standard", "batch"]
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

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


class ChatRequest(BaseModel):
    """An OpenAI ``POST /v1/chat/completions`` body."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=1, description="only n=1 is supported")
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None

    def provider_payload(self) -> dict[str, Any]:
        """The request as providers get it: no gateway-only fields, no streaming, no Nones."""
        body = self.model_dump(exclude_none=True, exclude={"stream", "stream_options", "metadata"})
        return body

    def output_cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def _positive_deadline(value: datetime | float | None) -> datetime | float | None:
    if isinstance(value, int | float) and value <= 0:
        raise ValueError("deadline in seconds must be positive")
    return value


class JobTags(BaseModel):
    """How the native API and the headers tag a job (the tenant always comes from the API key)."""

    feature: str = Field("default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    priority: Priority | None = None
    task: str | None = Field(None, max_length=64)
    deadline: datetime | float | None = Field(
        None, description="an ISO 8601 time, or seconds from now"
    )
    idempotency_key: str | None = Field(None, min_length=1, max_length=255)

    def deadline_at(self, default_s: float, now: datetime | None = None) -> datetime:
        now = now or datetime.now(UTC)
        if self.deadline is None:
            return now + timedelta(seconds=default_s)
        if isinstance(self.deadline, int | float):
            return now + timedelta(seconds=float(self.deadline))
        deadline = self.deadline if self.deadline.tzinfo else self.deadline.replace(tzinfo=UTC)
        return deadline

    _deadline_in_future = field_validator("deadline")(_positive_deadline)


class JobRequest(ChatRequest):
    """``POST /v1/jobs``: the chat request plus the job's tags."""

    feature: str = Field("default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    priority: Priority | None = None
    task: str | None = Field(None, max_length=64)
    deadline: datetime | float | None = None
    idempotency_key: str | None = Field(None, min_length=1, max_length=255)

    # Checked here too, so a bad deadline is a 400 naming the field, not an error in tags() later.
    _deadline_in_future = field_validator("deadline")(_positive_deadline)

    def tags(self) -> JobTags:
        return JobTags(feature=self.feature, priority=self.priority, task=self.task,
                       deadline=self.deadline, idempotency_key=self.idempotency_key)

    def chat(self) -> ChatRequest:
        data = self.model_dump(exclude={"feature", "priority", "task", "deadline", "idempotency_key"},
                               exclude_none=True)
        return ChatRequest.model_validate(data)

    def payload(self) -> dict[str, Any]:
        """``self.chat().provider_payload()`` without validating the chat request a second time."""
        return self.model_dump(exclude_none=True, exclude=_NOT_IN_PAYLOAD)


# The job's tags, and what ``provider_payload`` leaves out.
_NOT_IN_PAYLOAD = {"feature", "priority", "task", "deadline", "idempotency_key", "stream", "stream_options",
                   "metadata"}


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
