"""One round trip for several steps: replies reach their callbacks, a script Redis does not know
(it restarted and forgot it) is loaded and run, and a failing step does not stop the others."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis

from shared.redis_batch import RedisBatch, ScriptCall
from tests.conftest import REDIS_URL


@pytest.fixture
def client() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, decode_responses=True)


def _fresh_script(client: redis.Redis) -> Any:
    """A script this Redis has never seen: its first EVALSHA answers NOSCRIPT, as after a restart."""
    return client.register_script(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")


def test_every_step_reports_its_reply_and_a_forgotten_script_is_loaded_and_run_once(client: redis.Redis) -> None:
    key = f"gwt-batch:{uuid.uuid4().hex}"
    script = _fresh_script(client)
    got: list[Any] = []
    (RedisBatch(client)
     .command(lambda pipe: pipe.set(key, 10), got.append)
     .script(ScriptCall(script, [key], [5], lambda reply: int(reply) * 2), got.append)
     .command(lambda pipe: pipe.get(key), got.append)
     .execute())
    # The forgotten script ran once, loaded after the batch: the GET in the batch came before it.
    assert got == [[True], 30, ["10"]]
    assert client.get(key) == "15"
    client.delete(key)


def test_a_failing_step_is_raised_after_the_others_ran(client: redis.Redis) -> None:
    key, other = f"gwt-batch:{uuid.uuid4().hex}", f"gwt-batch:{uuid.uuid4().hex}"
    client.set(key, "not a number")
    script = _fresh_script(client)
    batch = (RedisBatch(client)
             .script(ScriptCall(script, [key], [1]))
             .command(lambda pipe: pipe.set(other, "ran")))
    with pytest.raises(redis.ResponseError):
        batch.execute()
    assert client.get(other) == "ran"
    client.delete(key, other)


def test_commands_hiredis_cannot_pack_go_through_the_connection_s_packer(client: redis.Redis) -> None:
    """A memoryview argument and a two-word command (``CLIENT SETNAME``) reach Redis as redis-py sends them."""
    key = f"gwt-batch:{uuid.uuid4().hex}"
    got: list[Any] = []
    (RedisBatch(client)
     .command(lambda pipe: pipe.set(key, memoryview(b"bytes")), got.append)
     .command(lambda pipe: pipe.execute_command("CLIENT SETNAME", "gwt-batch"), got.append)
     .command(lambda pipe: pipe.hincrbyfloat(key + ":h", "sum", 0.25).get(key), got.append)
     .execute())
    assert got == [[True], [True], [0.25, "bytes"]]
    client.delete(key, key + ":h")


def test_a_batch_survives_a_connection_redis_closed(client: redis.Redis) -> None:
    """A pooled connection Redis dropped (a restart, an idle timeout) is reconnected and the batch sent."""
    key = f"gwt-batch:{uuid.uuid4().hex}"
    RedisBatch(client).command(lambda pipe: pipe.set(key, "1")).execute()
    pooled = client.client_id()  # the pool's one idle connection, which the batch will borrow
    assert redis.Redis.from_url(REDIS_URL).client_kill_filter(_id=pooled) == 1
    got: list[Any] = []
    RedisBatch(client).command(lambda pipe: pipe.get(key), got.append).execute()
    assert got == [["1"]]
    client.delete(key)
