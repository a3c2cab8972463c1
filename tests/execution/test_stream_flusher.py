"""The streams of one process written through one thread (``shared.job_stream.Flusher``), against the
test Redis: what a resumed reader and the api's relay rely on."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import Future

import orjson
import pytest
import redis

from shared.config import StreamingConfig
from shared.job_stream import Flusher, StreamWriter, caller_left, entry_of
from shared.keys import Keys
from shared.stream_translate import Event
from tests.conftest import REDIS_URL


@pytest.fixture
def keys() -> Keys:
    return Keys(f"gwt-flush-{uuid.uuid4().hex[:8]}")


def _writer(client: redis.Redis, keys: Keys, job_id: str, channel: str | None = None) -> StreamWriter:
    writer = StreamWriter(client, keys, job_id, {"dialect": "openai"}, StreamingConfig(), live_s=60, channel=channel)
    writer.begin("openai", "gpt-4o-mini@sim", "gpt-4o-mini")
    return writer


def _stored(client: redis.Redis, keys: Keys, job_id: str) -> list[dict[str, object]]:
    return [entry_of(fields) for _, fields in client.xrange(keys.job_stream(job_id))]


def test_many_streams_written_at_once_keep_every_entry_in_order(keys: Keys) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    jobs = [f"job-{i}" for i in range(20)]

    def stream(job_id: str) -> None:
        writer = _writer(client, keys, job_id)
        for n in range(50):
            assert writer.event(Event(None, {"n": n}))
        writer.end("done")

    threads = [threading.Thread(target=stream, args=(job_id,)) for job_id in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for job_id in jobs:  # end() returned: everything before it is in Redis, numbered without a gap
        entries = _stored(client, keys, job_id)
        assert [e["s"] for e in entries] == list(range(52))
        assert [e["t"] for e in entries] == ["start"] + ["event"] * 50 + ["end"]
        assert [e["d"]["n"] for e in entries[1:-1]] == list(range(50))  # type: ignore[index]
        assert 0 < client.ttl(keys.job_stream(job_id)) <= StreamingConfig().keep_s


def test_each_entry_is_published_to_the_callers_api_as_it_is_written(keys: Keys) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    channel = f"{keys.prefix}:api-test"
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    writer = _writer(client, keys, "job-pub", channel)
    for n in range(5):
        writer.event(Event(None, {"n": n}))
    writer.end("done")
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 7 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message:
            got.append(orjson.loads(message["data"]))
    pubsub.close()
    assert [m["stream"] for m in got] == ["job-pub"] * 7
    assert [m["j"]["s"] for m in got] == list(range(7))


def test_a_caller_gone_past_its_grace_stops_the_writer(keys: Keys) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    writer = _writer(client, keys, "job-left")
    assert writer.event(Event(None, {"n": 0}))
    pipe = client.pipeline()
    caller_left(pipe, keys, "job-left", grace_s=0)
    pipe.execute()
    deadline = time.monotonic() + 5
    while writer.event(Event(None, {"n": 1})):  # the flusher reads the mark with the next write
        assert time.monotonic() < deadline, "the writer never saw that its caller left"
        time.sleep(0.01)


def test_a_redis_failure_reaches_the_attempt_that_wrote() -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)  # nothing listens there
    writer = _writer(dead, Keys("gwt-flush-dead"), "job-dead")
    writer.event(Event(None, {"n": 0}))
    with pytest.raises(redis.RedisError):
        writer.end("done")


def test_an_error_reply_fails_only_the_stream_it_belongs_to(keys: Keys) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.set(keys.job_stream("job-clobbered"), "not a stream")  # its XADD is answered WRONGTYPE
    broken, fine = _writer(client, keys, "job-clobbered", "ch"), _writer(client, keys, "job-fine", "ch")
    entries = [{"t": "event", "n": None, "d": {"n": 0}, "s": 0, "a": 1, "w": "x"}]
    done = [Future[None](), Future[None]()]
    flusher = Flusher(client)
    flusher._write([(broken, entries, 60, done[0]), (fine, entries, 60, done[1])])
    assert all(d.done() for d in done)
    assert isinstance(broken.failed, redis.ResponseError) and "WRONGTYPE" in str(broken.failed)
    assert fine.failed is None and [e["t"] for e in _stored(client, keys, "job-fine")] == ["event"]
