"""The api's side of a job's stream (``api.streaming.Translation``): entries become the caller's frames,
numbered, each once, in the job's dialect; a resume leaves out what the caller has; an attempt sent
again after its process died ends the stream with an error event instead of splicing two answers; a
begun stream whose producer stopped renewing its lease ends with one too, one renewing it is waited for."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest
import redis

from api.streaming import StreamHub, Translation, relay
from shared.config import StreamingConfig
from shared.keys import Keys
from tests.conftest import PREFIX, REDIS_URL
from tests.providers.test_stream_translate import anthropic_events, openai_events


def entries(events: list[Any], provider: str, attempt: int = 1, dialect: str = "openai",
            writer: str = "w1") -> list[dict[str, Any]]:
    start = {"t": "start", "provider": provider, "relay": {"dialect": dialect, "usage": False}, "prompt_tokens": 12}
    body = [{"t": "event", "n": e.name, "d": e.data} for e in events]
    return [{**entry, "s": s, "a": attempt, "w": writer}
            for s, entry in enumerate([start, *body, {"t": "end", "status": "done"}])]


def frames_of(out: Translation, stream: list[dict[str, Any]]) -> list[bytes]:
    return [frame for entry in stream for frame in out.frames(entry)]


def test_each_entry_counts_once_and_frames_are_numbered() -> None:
    stream = entries(openai_events(["a", "b", "c"]), "openai")
    out = Translation("openai")
    frames = frames_of(out, stream + stream[2:5])  # a gap filled from Redis brings entries seen already
    assert [f.split(b"\n", 1)[0] for f in frames] == [b"id: %d" % i for i in range(len(frames))]
    assert out.ended and frames[-1].endswith(b"data: [DONE]\n\n")
    assert b'"usage"' not in b"".join(frames)  # the caller did not ask for it


def test_a_resume_sends_only_what_follows_the_last_event_id() -> None:
    stream = entries(anthropic_events(["x", "y"]), "anthropic", dialect="anthropic")
    whole = frames_of(Translation("openai"), stream)  # the job's dialect comes from its stream
    assert whole[0].split(b"\n")[1] == b"event: message_start"
    assert frames_of(Translation("openai", after=3), stream) == whole[4:]


def test_an_attempt_sent_again_ends_the_stream_with_an_error_event() -> None:
    first = entries(openai_events(["one", "two"]), "openai", attempt=1)[:3]  # its process died here
    again = entries(openai_events(["uno", "dos"]), "openai", attempt=2)
    out = Translation("openai")
    frames = frames_of(out, first + again)
    error = orjson.loads(frames[-1][len(b"data: "):])["error"]
    assert error["code"] == "stream_interrupted" and out.ended
    assert b"uno" not in b"".join(frames)


def test_an_attempt_recovery_sent_again_under_the_same_number_is_not_spliced_either() -> None:
    """The killed attempt never recorded its number, so recovery sends the job again under it: the
    writer tells the two apart."""
    first = entries(openai_events(["one", "two"]), "openai", writer="w1")[:3]
    again = entries(openai_events(["uno", "dos"]), "openai", writer="w2")
    frames = frames_of(Translation("openai"), first + again)
    assert orjson.loads(frames[-1][len(b"data: "):])["error"]["code"] == "stream_interrupted"
    assert b"dos" not in b"".join(frames)


def _hub() -> StreamHub:
    hub = StreamHub(REDIS_URL, Keys(PREFIX), StreamingConfig(), lease_late_s=3.0)
    hub.bind(asyncio.get_running_loop())
    return hub


async def _relay_one(hub: StreamHub, lease_ms: int | None, quiet_s: float) -> list[bytes]:
    """A streamed job whose first entries come, then nothing for ``quiet_s``, then the rest, its attempt's
    lease left with ``lease_ms`` (None: no lease), relayed to a caller that reads to the end (and so is
    never reported as one that left)."""
    job_id = f"job_{uuid.uuid4().hex}"
    if lease_ms is not None:
        redis.Redis.from_url(REDIS_URL).set(hub.keys.lease(job_id), "token", px=lease_ms)
    stream = entries(openai_events(["one", "two", "three"]), "openai")
    for entry in stream[:3]:
        hub.deliver(job_id, entry)
    never: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    finish = asyncio.ensure_future(never)

    async def rest() -> None:
        await asyncio.sleep(quiet_s)
        for entry in stream[3:]:
            hub.deliver(job_id, entry)
    later = asyncio.ensure_future(rest())
    frames = [frame async for frame in relay(hub, job_id, "/v1/chat/completions", finish, lambda _: iter([]))]
    later.cancel()
    finish.cancel()
    await asyncio.sleep(0.05)
    assert not await hub.redis.exists(hub.keys.stream_left(job_id))
    return frames


async def _relayed(lease_ms: int | None, quiet_s: float) -> list[bytes]:
    hub = _hub()
    try:
        return await _relay_one(hub, lease_ms, quiet_s)
    finally:
        await hub.close()


def _ended_in_error(frames: list[bytes]) -> bool:
    return b"stream_interrupted" in frames[-1] and b"three" not in b"".join(frames)


@pytest.mark.anyio
async def test_a_begun_stream_whose_producer_stopped_renewing_its_lease_ends_with_an_error_event() -> None:
    for lease_ms in (None, 1_000):  # gone, or not renewed for two heartbeats
        frames = await _relayed(lease_ms, quiet_s=30)
        error = orjson.loads(frames[-1].split(b"data: ", 1)[1])["error"]
        assert error["code"] == "stream_interrupted" and "GET /v1/jobs/" in error["message"]
        assert b"one" in b"".join(frames) and b"three" not in b"".join(frames)  # the job goes on, stored


@pytest.mark.anyio
async def test_a_quiet_stream_whose_producer_renews_its_lease_is_waited_for() -> None:
    frames = await _relayed(60_000, quiet_s=2.5)  # quiet past the first looks at the lease: still held
    assert frames[-1].endswith(b"data: [DONE]\n\n") and b"error" not in b"".join(frames)
    assert b"three" in b"".join(frames)


@pytest.mark.anyio
async def test_one_process_looks_at_all_its_quiet_streams_together_and_tells_them_apart() -> None:
    hub = _hub()
    try:
        leases = [None, 1_000, 60_000, 60_000, None, 60_000]
        streams = await asyncio.gather(*(_relay_one(hub, lease_ms, quiet_s=2.5) for lease_ms in leases))
    finally:
        await hub.close()
    assert [_ended_in_error(frames) for frames in streams] == [lease != 60_000 for lease in leases]
    assert all(frames[-1].endswith(b"data: [DONE]\n\n") for frames, lease in zip(streams, leases, strict=True)
               if lease == 60_000)
    assert not hub.watched  # every stream ended: nothing left to look at


@pytest.mark.anyio
async def test_a_stream_ended_while_redis_refuses_its_tail_still_gets_its_error_event() -> None:
    hub = _hub()

    async def refused(*_: Any, **__: Any) -> Any:
        raise redis.exceptions.MaxConnectionsError("Too many connections")
    hub.stored = refused  # type: ignore[method-assign]  # many streams ended at once: the pool is used up
    try:
        frames = await _relay_one(hub, None, quiet_s=30)
    finally:
        await hub.close()
    assert _ended_in_error(frames)
