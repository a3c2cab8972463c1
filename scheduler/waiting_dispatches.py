"""Dispatches still waiting in the broker keep their leases; a lost one runs out within seconds.

A dispatch's lease is short (``admission.dispatch_lease_s``). While its Celery message waits in an
execution queue, the leading scheduler extends it every recovery round: it reads the queues and finds
each message's jobs and tokens in the ``gw_leases`` header the dispatch wrote (``worker.dispatch``).
Once a worker has received the message (prefetched or running) that worker's heartbeat keeps the lease
(``worker.tasks``). A message in neither place was lost: kombu's Redis transport pops a message before
it records it as unacknowledged, so one that reaches a worker as it dies is gone and nothing redelivers
it. Its lease is extended by nobody, runs out, and recovery dispatches the job again.
"""

from __future__ import annotations

import logging
import re

from shared.attempt_leases import LEASES_HEADER, AttemptLeases, parse_leases
from shared.lanes import LANES

log = logging.getLogger("gateway.recovery")

_IN_MESSAGE = re.compile(rb'"' + LEASES_HEADER.encode() + rb'": ?"([^"]*)"')
READ_AT_ONCE = 500  # messages per LRANGE: a long queue is read in slices, never in one reply
MOST_READ = 20_000  # messages per round; beyond that the rest keep the lease they have until next round


class WaitingDispatches:
    def __init__(self, leases: AttemptLeases) -> None:
        self.leases = leases
        self.r = leases.r
        self.keys = leases.keys

    def queue_keys(self) -> list[str]:
        """The execution queues as the broker stores them (kombu prefixes every key it writes)."""
        return [self.keys.celery_prefix + self.keys.exec_queue(lane) for lane in LANES]

    def waiting(self) -> list[tuple[str, str]]:
        """The (job id, token) of every dispatch whose message is still in an execution queue: one round
        trip for the queues' first slices (at idle, all there is), more only for a long queue."""
        keys = self.queue_keys()
        with self.r.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.lrange(key, 0, READ_AT_ONCE - 1)
            first = pipe.execute()
        found: list[tuple[str, str]] = []
        for key, messages in zip(keys, first, strict=True):
            read = 0
            while True:
                found += _dispatches_in(messages)
                read += len(messages)
                if len(messages) < READ_AT_ONCE or read >= MOST_READ:
                    break
                messages = self.r.lrange(key, read, read + READ_AT_ONCE - 1)
        return found

    def extend(self, ttl_s: float) -> int:
        """Extend the leases of the waiting dispatches to ``ttl_s``; how many were extended."""
        pairs = self.waiting()
        extended = 0
        for start in range(0, len(pairs), READ_AT_ONCE):
            chunk = pairs[start:start + READ_AT_ONCE]
            job_ids, tokens = [job_id for job_id, _ in chunk], [token for _, token in chunk]
            extended += sum(self.leases.extend_waiting(job_ids, tokens, ttl_s))
        return extended

def _dispatches_in(messages: list[bytes | str]) -> list[tuple[str, str]]:
    """The dispatches named in these raw broker messages' ``gw_leases`` headers (the body is not decoded)."""
    found: list[tuple[str, str]] = []
    for raw in messages:
        match = _IN_MESSAGE.search(raw if isinstance(raw, bytes) else raw.encode())
        if match:
            found += parse_leases(match.group(1).decode(errors="replace"))
    return found
