"""A streamed job's frames, in one Redis Stream per job: written by whoever runs the attempt, relayed
by the api, replayed to a caller that reconnects.

The stream holds the provider's events in the provider's dialect, as the attempt got them (tokenized
values already put back): the api translates them into the caller's dialect as it relays them
(``api.streaming``), so a resume replays exactly what the caller was sent. Each entry is one JSON
object under the field ``j``, numbered from 0 by ``s``, with its attempt's number ``a`` and its
writer's id ``w`` (an attempt sent again by recovery has the number of the one whose process died,
which never recorded it):

    {"s": 0, "t": "start", "provider": "openai"|"anthropic", "relay": {dialect, usage}, "deployment", "model",
     "prompt_tokens"}
    {"s": 1, "t": "event", "n": <SSE event name or null>, "d": <data, or null for OpenAI's [DONE]>}
    ...
    {"s": k, "t": "end", "status": "done"|"failed"|"left", "error": {type, message}?}

The start is written with the first event, so an attempt that fails before streaming anything
leaves no trace and its retry (or fallback, perhaps in the other dialect) starts the stream afresh.
Once an event is written the stream has begun: no retry may follow (``execution.attempt``). Only an
attempt sent again after its process died (recovery) writes a second start; a reader that had begun
with the first ends with an error event there (the job's stored answer is the second's).

Who is told: a worker publishes each entry on its caller's api channel (``reply_to``, the channel
the completion signal uses: one subscription per api process serves all its streams); the api's own
fast-lane attempt hands entries to its relay in memory at once, and writes them to Redis at most
every ``WRITE_EVERY_S`` (its caller has them already). Both XADD (capped, with a TTL) in the round
trip that also reads whether the caller left (``Keys.stream_left``): a caller gone past its grace
aborts the call.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import redis

from shared.config import StreamingConfig
from shared.keys import Keys
from shared.stream_translate import Event

Entry = dict[str, Any]
# An attempt whose caller is in its own process (the fast lane) writes its stream to Redis at most this
# often, several entries a round trip: the caller has them already, the stream is for a resume.
WRITE_EVERY_S = 0.1


def entry_of(fields: Any) -> Entry:
    """The entry in one XRANGE/XREAD record's fields."""
    entry: Entry = orjson.loads(fields.get("j") or fields.get(b"j") or b"{}")
    return entry


def event_of(entry: Entry) -> Event:
    return Event(entry.get("n"), entry.get("d"))


class StreamWriter:
    """One attempt's side of its job's stream (see the module docstring)."""

    def __init__(self, client: redis.Redis, keys: Keys, job_id: str, relay: dict[str, Any], config: StreamingConfig,
                 *, live_s: float, attempt: int = 1, channel: str | None = None,
                 local: Callable[[Entry], None] | None = None) -> None:
        self.client = client
        self.keys = keys
        self.job_id = job_id
        self.attempt = attempt
        self.writer = uuid.uuid4().hex[:8]
        self.relay = relay
        self.config = config
        self.live_s = live_s  # how long the stream must at least live while the call runs
        self.channel = channel
        self.local = local
        self.seq = 0
        self.start: Entry | None = None
        self.unwritten: list[Entry] = []
        self.written_at = 0.0
        self.gone = False  # the caller left and its grace is over

    @property
    def began(self) -> bool:
        """True once an event was written: the caller may have it, so nothing may be sent again."""
        return self.seq > 0

    def begin(self, provider: str, deployment: str, model: str, prompt_tokens: int = 0) -> None:
        """Who answers (and the prompt's count, for a translation that must say it first); written with
        the first event."""
        self.start = {"t": "start", "provider": provider, "relay": self.relay, "deployment": deployment,
                      "model": model, "prompt_tokens": prompt_tokens}

    def event(self, event: Event) -> bool:
        """Append one provider event; False when the caller left and its grace is over (abort the call)."""
        entries = [{"t": "event", "n": event.name, "d": event.data}]
        if not self.began and self.start is not None:
            entries.insert(0, self.start)
        self._add(entries)
        if self.local is None or time.monotonic() - self.written_at >= WRITE_EVERY_S:
            self._write(self.live_s)
        return not self.gone

    def end(self, status: str, error: dict[str, Any] | None = None) -> None:
        """The stream's last entry (only once it began: an attempt that streamed nothing says nothing)."""
        if self.began:
            self._add([{"t": "end", "status": status, **({"error": error} if error else {})}])
            self._write(self.config.keep_s)

    def _add(self, entries: list[Entry]) -> None:
        for entry in entries:
            entry["s"], entry["a"], entry["w"] = self.seq, self.attempt, self.writer
            self.seq += 1
            if self.local is not None:
                self.local(entry)
        self.unwritten += entries

    def _write(self, ttl_s: float) -> None:
        key = self.keys.job_stream(self.job_id)
        pipe = self.client.pipeline(transaction=False)
        for entry in self.unwritten:
            raw = orjson.dumps(entry)
            pipe.xadd(key, {"j": raw}, maxlen=self.config.max_frames, approximate=True)
            if self.channel:
                pipe.publish(self.channel, b'{"stream":"' + self.job_id.encode() + b'","j":' + raw + b"}")
        pipe.expire(key, max(1, int(ttl_s)))
        pipe.get(self.keys.stream_left(self.job_id))
        left = pipe.execute()[-1]
        self.unwritten, self.written_at = [], time.monotonic()
        self.gone = left is not None and float(left) <= time.time()


def caller_left(pipe: Any, keys: Keys, job_id: str, grace_s: float) -> None:
    """Add to ``pipe``: the caller of ``job_id`` left; its call is aborted after ``grace_s`` unless it resumes."""
    pipe.set(keys.stream_left(job_id), repr(time.time() + grace_s), ex=max(1, int(grace_s) + 3600))


def caller_back(pipe: Any, keys: Keys, job_id: str) -> None:
    """Add to ``pipe``: a caller resumed the stream of ``job_id``; its call goes on."""
    pipe.delete(keys.stream_left(job_id))
