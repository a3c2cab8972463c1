"""Several Lua scripts and plain commands in one Redis round trip.

The worker ends an attempt with five small steps (feed the breaker, settle the budget, pull it down
to the provider's headers, drop the lease, wake the scheduler): five round trips of ~0.1 ms of CPU
each on the client side. Sent as one pipeline they cost one. Scripts go as EVALSHA, not through
redis-py's ``Script`` on a pipeline, which would add a SCRIPT EXISTS round trip to every batch; a
script Redis forgot (it restarted) is loaded and run on its own after the batch, so steps put in one
batch must not rely on running in order (the worker's do not: each is atomic and independent).

The batch is sent by ``send_pipeline`` rather than ``Pipeline.execute``: redis-py's pipeline packs each
argument in Python (and looks for HIMPORT field sets on every command) where hiredis packs a whole
command in C. Measured on the attempt's last round trip (17 commands): ~350-450 -> ~190-320 us of CPU.
Replies are still read and parsed by the pipeline's own ``parse_response`` (its callbacks, its error
classes), on a connection of the client's pool, with the connection's retry policy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import NoScriptError, ResponseError

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # redis-py without hiredis: its own packer
    _hiredis_pack = None  # type: ignore[assignment]


@dataclass(frozen=True)
class ScriptCall:
    """One script invocation, ready to run alone or in a batch; ``parse`` turns its reply into a value."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Any]
    parse: Callable[[Any], Any] = lambda reply: reply

    def run(self) -> Any:
        """Alone, as a batch of one: sent as a batch is (hiredis packs it), its reply parsed."""
        got: list[Any] = []
        RedisBatch(cast(redis.Redis, self.script.registered_client)).script(self, got.append).execute()
        return got[0]


class RedisBatch:
    """Collect script calls and commands, then ``execute()`` them in one pipeline (not a transaction:
    each step is atomic on its own, as it would be sent alone). Replies go to each step's callback."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._steps: list[tuple[ScriptCall | None, Callable[[Any], Any], Callable[[Any], None] | None]] = []

    def script(self, call: ScriptCall | None, on_reply: Callable[[Any], None] | None = None) -> RedisBatch:
        if call is not None:
            self._steps.append((call, lambda pipe: pipe.evalsha(call.script.sha, len(call.keys), *call.keys,
                                                                 *call.args), on_reply))
        return self

    def command(self, add: Callable[[Any], Any], on_reply: Callable[[list[Any]], None] | None = None) -> RedisBatch:
        """``add(pipe)`` queues plain commands (e.g. ``lambda p: p.publish(channel, data)``); ``on_reply``
        gets the list of their replies."""
        self._steps.append((None, add, on_reply))
        return self

    def execute(self) -> None:
        """Run every step; the first error (after every step had its turn) is raised."""
        if not self._steps:
            return
        counts: list[int] = []
        with self.client.pipeline(transaction=False) as pipe:
            for _, add, _ in self._steps:
                before = len(pipe.command_stack)
                add(pipe)
                counts.append(len(pipe.command_stack) - before)
            replies = send_pipeline(pipe) if pipe.command_stack else []
        first_error: Exception | None = None
        at = 0
        for (call, _, on_reply), n in zip(self._steps, counts, strict=True):
            mine, at = replies[at:at + n], at + n
            try:
                _deliver(call, mine, on_reply)
            except Exception as exc:  # noqa: BLE001 - every step gets its turn; the first error is raised
                first_error = first_error or exc
        if first_error is not None:
            raise first_error


def _deliver(call: ScriptCall | None, replies: list[Any], on_reply: Callable[[Any], None] | None) -> None:
    """One step's replies to its callback: a script's parsed reply (run again alone if Redis forgot the
    script), or a command step's list of replies. A reply that is an error is raised."""
    if call is not None:
        [reply] = replies
        if isinstance(reply, NoScriptError):
            reply = call.script(keys=list(call.keys), args=list(call.args))
        elif isinstance(reply, Exception):
            raise reply
        if on_reply is not None:
            on_reply(call.parse(reply))
        return
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    if on_reply is not None:
        on_reply(replies)


def send_pipeline(pipe: Pipeline) -> list[Any]:
    """The pipeline's commands in one write, their replies (an error reply as its exception) in order:
    ``pipe.execute()`` without redis-py's per-argument packing (see the module docstring)."""
    stack = pipe.command_stack
    pool = pipe.connection_pool
    conn = pool.get_connection()
    try:
        return conn.retry.call_with_retry(lambda: _exchange(pipe, conn, stack), lambda _error: conn.disconnect())
    finally:
        pool.release(conn)


def _exchange(pipe: Pipeline, conn: Any, stack: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
    conn.send_packed_command(_packed(conn, [args for args, _ in stack]))
    replies: list[Any] = []
    for args, options in stack:
        try:
            replies.append(pipe.parse_response(conn, args[0], **options))
        except ResponseError as exc:
            replies.append(exc)
    return replies


def _packed(conn: Any, commands: list[tuple[Any, ...]]) -> list[bytes]:
    """hiredis packs a command whose name is one word and whose arguments are str, bytes or numbers;
    anything else (``SCRIPT LOAD``, a memoryview) goes through the connection's packer."""
    if _hiredis_pack is None:
        return list(conn.pack_commands(commands))
    out: list[bytes] = []
    for args in commands:
        try:
            if " " in args[0]:
                raise TypeError("a command of two words")
            out.append(_hiredis_pack(args))
        except TypeError:
            out.extend(conn.pack_commands([args]))
    return [b"".join(out)]
