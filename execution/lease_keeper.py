"""The heartbeat of a process's calls in flight: their attempt leases stay short, and alive while the call is.

An attempt's lease lives ``admission.attempt_lease_s`` (seconds) unless renewed. Every process that
holds leases (a Celery worker, an api sending fast-lane calls) renews all of them every
``admission.heartbeat_s`` in one round trip, from a thread of its own. A process killed mid-call
stops renewing, its leases run out within seconds, and recovery sends the jobs again, whatever the
calls' length. A call that runs past its deployment's total timeout plus ``admission.lease_margin_s``
is not renewed any more either: a process alive but stuck is treated like a dead one.

No leases held, no round trip: an idle process costs Redis nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import redis

from shared.attempt_leases import AttemptLeases
from shared.config import AdmissionConfig
from shared.envelope import Envelope

log = logging.getLogger("gateway.attempt")


@dataclass
class _Held:
    token: str
    until: float  # monotonic: renewed no longer than this (the call's timeout and a margin)
    started: bool = True  # False: a message received, not started (its lease is extended, never taken back)


class LeaseKeeper:
    def __init__(self, leases: AttemptLeases, config: AdmissionConfig) -> None:
        self.leases = leases
        self.config = config
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def hold(self, env: Envelope, for_s: float) -> None:
        """Keep ``env``'s lease (under its current token) alive for up to ``for_s`` seconds."""
        with self._lock:
            self._held[env.id] = _Held(env.token, time.monotonic() + for_s)
            self._start()

    def hold_dispatch(self, job_id: str, token: str, for_s: float) -> None:
        """A message this process received and has not started yet: its lease is extended while Redis
        holds it, never taken back (a Redis that restarted empty lost the message, and Celery drops what
        it had prefetched: recovery must see the job as orphaned)."""
        with self._lock:
            self._held[job_id] = _Held(token, time.monotonic() + for_s, started=False)
            self._start()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
            self._thread.start()

    def drop(self, env: Envelope) -> None:
        """The attempt ended (or was handed on): stop renewing its lease."""
        with self._lock:
            held = self._held.get(env.id)
            if held is not None and held.token == env.token:
                del self._held[env.id]

    def held(self) -> int:
        return len(self._held)

    def stop(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        while not self._stop.wait(self.config.heartbeat_s):
            try:
                self.renew()
            except (redis.RedisError, OSError) as exc:  # Redis restarting: the next beat takes the leases back
                log.warning("lease heartbeat failed (%s); retrying in %.1fs", exc, self.config.heartbeat_s)

    def renew(self) -> None:
        """One heartbeat: renew every live lease (calls in flight: taken back if Redis forgot it; messages
        not started yet: extended only), forget the stuck and the lost ones."""
        now = time.monotonic()
        with self._lock:
            stuck = [job_id for job_id, held in self._held.items() if held.until < now]
            for job_id in stuck:
                if self._held[job_id].started:
                    log.error("the call of job %s outlived its timeout; its lease is left to run out", job_id)
                del self._held[job_id]
            beat = list(self._held.items())
        calls = [(job_id, held) for job_id, held in beat if held.started]
        waiting = [(job_id, held) for job_id, held in beat if not held.started]
        ttl = self.config.attempt_lease_s
        kept = [*(self.leases.renew([j for j, _ in calls], [h.token for _, h in calls], ttl) if calls else []),
                *(self.leases.extend_waiting([j for j, _ in waiting], [h.token for _, h in waiting], ttl)
                  if waiting else [])]
        with self._lock:
            for (job_id, held), ok in zip([*calls, *waiting], kept, strict=True):
                if not ok and self._held.get(job_id) is held:
                    del self._held[job_id]  # dispatched again meanwhile (or forgotten): not this process's now
