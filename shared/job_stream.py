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

The writes of every stream a process runs go through one thread (``Flusher``): an attempt hands its
entries over and reads on, and whatever the streams produced while a round trip was out goes in the
next one. One pipeline per chunk per stream was the largest share of a streaming worker's CPU; idle,
the hand-over adds a thread wake-up. A stream's end waits until everything before it is written.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import orjson
import redis

from shared.config import StreamingConfig
from shared.keys import Keys
from shared.redis_batch import send_pipeline
from shared.stream_translate import Event

log = logging.getLogger("gateway.stream")
Entry = dict[str, Any]
# An attempt whose caller is in its own process (the fast lane) writes its stream to Redis at most this
# often, several entries a round trip: the caller has them already, the stream is for a resume.
WRITE_EVERY_S = 0.25


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
        self.gone = False  # the caller left and its grace is over (set by the flusher)
        self.failed: BaseException | None = None  # a write the flusher could not make (set by it)

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
        """The stream's last entry (only once it began: an attempt that streamed nothing says nothing),
        returning once it and everything before it are written."""
        if self.began:
            self._add([{"t": "end", "status": status, **({"error": error} if error else {})}])
            self._write(self.config.keep_s).result()
            self._raise_failed()

    def _add(self, entries: list[Entry]) -> None:
        for entry in entries:
            entry["s"], entry["a"], entry["w"] = self.seq, self.attempt, self.writer
            self.seq += 1
            if self.local is not None:
                self.local(entry)
        self.unwritten += entries

    def _write(self, ttl_s: float) -> Future[None]:
        """Hand what is unwritten to the process's flusher; a redis error it met is raised here, later."""
        self._raise_failed()
        done = flusher_for(self.client).put(self, self.unwritten, ttl_s)
        self.unwritten, self.written_at = [], time.monotonic()
        return done

    def _raise_failed(self) -> None:
        if self.failed is not None:
            raise self.failed

    def add_writes(self, pipe: Any, entries: list[Entry], ttl_s: float) -> None:
        """Add the commands that write ``entries`` to ``pipe``; ``wrote`` reads their last reply."""
        key = self.keys.job_stream(self.job_id)
        for entry in entries:
            raw = orjson.dumps(entry)
            pipe.xadd(key, {"j": raw}, maxlen=self.config.max_frames, approximate=True)
            if self.channel:
                pipe.publish(self.channel, b'{"stream":"' + self.job_id.encode() + b'","j":' + raw + b"}")
        pipe.expire(key, max(1, int(ttl_s)))
        pipe.get(self.keys.stream_left(self.job_id))

    def wrote(self, left: Any) -> None:
        self.gone = left is not None and float(left) <= time.time()


class Flusher:
    """The one thread of a process that writes its streams' entries (see the module docstring)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._queue: queue.SimpleQueue[tuple[StreamWriter, list[Entry], float, Future[None]]] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="stream-flusher", daemon=True).start()

    def put(self, writer: StreamWriter, entries: list[Entry], ttl_s: float) -> Future[None]:
        done: Future[None] = Future()
        self._queue.put((writer, entries, ttl_s, done))
        return done

    def _run(self) -> None:
        while True:
            group = [self._queue.get()]
            while len(group) < MAX_GROUP:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._write(group)

    def _write(self, group: list[tuple[StreamWriter, list[Entry], float, Future[None]]]) -> None:
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for writer, entries, ttl_s, _ in group:
                    writer.add_writes(pipe, entries, ttl_s)
                replies = send_pipeline(pipe)  # hiredis packs: 20 streams' writes 0.42 -> 0.29 ms of CPU
        except Exception as exc:  # noqa: BLE001 - each writer raises it in its own attempt's thread
            log.warning("could not write %d stream updates: %r", len(group), exc)
            for writer, _, _, done in group:
                writer.failed = exc
                done.set_result(None)
            return
        at = 0
        for writer, entries, _, done in group:  # an error reply (a clobbered key) fails its own writer only
            count = len(entries) * (2 if writer.channel else 1) + 2  # as ``add_writes`` queues them
            mine, at = replies[at:at + count], at + count
            if error := next((reply for reply in mine if isinstance(reply, Exception)), None):
                writer.failed = error
            else:
                writer.wrote(mine[-1])
            done.set_result(None)


MAX_GROUP = 256  # stream updates in one round trip at most
_flushers: dict[tuple[int, int], Flusher] = {}
_flushers_lock = threading.Lock()


def flusher_for(client: redis.Redis) -> Flusher:
    """The flusher of ``client`` in this process (one thread per client, started on first use)."""
    at = (os.getpid(), id(client))  # a forked child starts its own thread
    flusher = _flushers.get(at)
    if flusher is None or flusher.client is not client:
        with _flushers_lock:
            flusher = _flushers.get(at)
            if flusher is None or flusher.client is not client:
                flusher = _flushers[at] = Flusher(client)
    return flusher


def caller_left(pipe: Any, keys: Keys, job_id: str, grace_s: float) -> None:
    """Add to ``pipe``: the caller of ``job_id`` left; its call is aborted after ``grace_s`` unless it resumes."""
    pipe.set(keys.stream_left(job_id), repr(time.time() + grace_s), ex=max(1, int(grace_s) + 3600))


def caller_back(pipe: Any, keys: Keys, job_id: str) -> None:
    """Add to ``pipe``: a caller resumed the stream of ``job_id``; its call goes on."""
    pipe.delete(keys.stream_left(job_id))
