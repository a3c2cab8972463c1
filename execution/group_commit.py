"""Group commit: the attempts a worker finishes at about the same time are written in one transaction.

Sixty-four threads finishing attempts would each pay a transaction of their own: BEGIN IMMEDIATE,
the commit, and on SQLite a turn on the store's single writer lock, shared with the api and the
scheduler. Here a thread queues its write and takes the process's writer lock; whoever holds it
writes everything queued (up to ``MAX_GROUP``) in one transaction, and a thread whose write was
taken by an earlier holder finds it done and leaves. When idle a write is done by its own thread at
once (no hand-off); under load the cost per record falls with the group size.

A write that raises spoils its group's transaction: the group is then written again one by one, so
only the faulty record fails, with its own exception, and every other record lands exactly once.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from sqlalchemy.orm import Session

log = logging.getLogger("gateway.attempt")
T = TypeVar("T")
MAX_GROUP = 64

Write = Callable[[Session], Any]


class GroupCommit:
    def __init__(self, scope: Callable[[], AbstractContextManager[Session]], max_group: int = MAX_GROUP) -> None:
        self.scope = scope
        self.max_group = max_group
        self._queue: queue.SimpleQueue[tuple[Write, Future[Any]]] = queue.SimpleQueue()
        self._writer = threading.Lock()

    def write(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in a transaction shared with other waiting writes; its result, once committed."""
        done: Future[T] = Future()
        self._queue.put((fn, done))
        while not done.done():
            with self._writer:
                if not done.done():  # nobody took it while this thread waited for the lock
                    self._write_group(self._take())
        return done.result()

    def _take(self) -> list[tuple[Write, Future[Any]]]:
        group: list[tuple[Write, Future[Any]]] = []
        while len(group) < self.max_group:
            try:
                group.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return group

    def _write_group(self, group: list[tuple[Write, Future[Any]]]) -> None:
        if not group:
            return
        try:
            with self.scope() as db:
                results = [fn(db) for fn, _ in group]
        except Exception:  # noqa: BLE001 - one bad write: retry them one by one so only it fails
            if len(group) > 1:
                log.info("a group of %d writes failed; writing them one by one", len(group))
            for fn, done in group:
                self._write_alone(fn, done)
            return
        for (_, done), result in zip(group, results, strict=True):
            done.set_result(result)

    def _write_alone(self, fn: Write, done: Future[Any]) -> None:
        try:
            with self.scope() as db:
                result = fn(db)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread, which raises it
            done.set_exception(exc)
        else:
            done.set_result(result)

