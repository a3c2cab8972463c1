"""A streamed attempt: the provider's events go to the job's stream as they arrive (``shared.job_stream``),
with the caller's tokenized values put back, and the whole answer is assembled for the record.

Until the first event is written, a failure is like any other: the attempt may be retried or fall
back. After it the caller may have part of the answer, so the failure ends the job (``Streamed.began``):
the stream ends with the failure, the attempt is recorded, the breaker fed and the tokens settled by
what was produced (``ProviderStream.produced``). A caller that left (past its grace) aborts the call
the same way, as ``caller_left``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from execution.providers.base import ProviderAdapter, ProviderResult, Usage
from execution.providers.streaming import ProviderStream, open_stream
from shared.envelope import Envelope
from shared.errors import ProviderCallError
from shared.job_stream import StreamWriter
from shared.privacy.streamed import EventRestorer


@dataclass
class Streamed:
    """What a streamed call produced: the answer, or the failure and what was streamed before it."""

    result: ProviderResult | None = None
    error: ProviderCallError | None = None
    produced: Usage | None = None  # a stream that broke off (or was aborted) after it began


def send_streamed(adapter: ProviderAdapter, env: Envelope, writer: StreamWriter,
                  headers: dict[str, str] | None) -> Streamed:
    """Run the call (see the module docstring); the stream's end is written here too."""
    deployment = adapter.deployment
    writer.begin(adapter.kind, deployment.name, deployment.model, env.job.prompt_tokens)
    call: ProviderStream | None = None
    try:
        with open_stream(adapter, env.request, headers, dialect=env.job.dialect) as call:
            if not _relay(call, writer, EventRestorer(env.vault) if env.vault else None):
                raise _left(deployment.name)
            result = call.result()
    except ProviderCallError as err:
        return _broken(env, writer, call, err)
    writer.end("done")
    return Streamed(result=result)


def _relay(call: ProviderStream, writer: StreamWriter, restorer: EventRestorer | None) -> bool:
    """Every event to the stream; False as soon as the caller is gone for good."""
    for event in call.events():
        for out in restorer.restore(event) if restorer is not None else (event,):
            if not writer.event(out):
                return False
    return True


def _broken(env: Envelope, writer: StreamWriter, call: ProviderStream | None, err: ProviderCallError) -> Streamed:
    if not writer.began:
        return Streamed(error=err)
    left = err.kind == "caller_left"
    if not left:  # the caller has part of an answer: nothing may be sent again for it
        err = ProviderCallError(f"{err} (after the stream had begun; not retried)", kind=err.kind,
                                deployment=err.deployment, upstream_status=err.upstream_status, body=err.body,
                                headers=err.headers, retryable=False, detail=err.detail)
    writer.end("left" if left else "failed", {"type": err.kind, "message": err.public_message()})
    produced = call.produced(env.job.prompt_tokens) if call is not None else None
    return Streamed(error=err, produced=produced)


def _left(deployment: str) -> ProviderCallError:
    return ProviderCallError(f"{deployment}: the caller disconnected and did not resume by "
                             f"{time.strftime('%H:%M:%S')}; the call was aborted", kind="caller_left",
                             deployment=deployment, retryable=False)
