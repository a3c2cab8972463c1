"""The scheduler process: moves jobs from waiting queues to the Celery execution queues.

It holds the leader lease, sleeps on the wake list (arrivals push to it) instead of polling, and
admits in batches: one SQL transaction marks a batch admitted (a job cancelled meanwhile is skipped
by the conditional update), then each admitted envelope is sent to its lane's execution queue.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from scheduler.lease import LeaderLease
from scheduler.policy import RoundRobin
from shared.config import Settings, get_settings
from shared.db import jobs
from shared.db.session import session_scope
from shared.keys import Keys
from shared.queues import Envelope, WaitingQueues
from shared.redis_conn import sync_redis
from worker.celery_app import send_attempt

log = logging.getLogger("gateway.scheduler")

BATCH = 256


class Scheduler:
    def __init__(self, settings: Settings | None = None, instance: str | None = None) -> None:
        self.settings = settings or get_settings()
        self.keys = Keys(self.settings.key_prefix)
        client = sync_redis(self.settings.redis_url)
        self.queues = WaitingQueues(client, self.keys)
        self.instance = instance or f"scheduler-{uuid.uuid4().hex[:8]}"
        self.lease = LeaderLease(client, self.keys.leader, self.instance)
        self.policy = RoundRobin()

    def run(self, stop: threading.Event) -> None:
        log.info("scheduler %s started", self.instance)
        leading = False
        while not stop.is_set():
            if not self.lease.hold():
                if leading:
                    log.warning("scheduler %s lost the leader lease", self.instance)
                leading = False
                stop.wait(1.0)
                continue
            if not leading:
                log.info("scheduler %s is the leader", self.instance)
                leading = True
            if self.step() == 0:
                self.queues.wait_for_wake(timeout=1.0)
        self.lease.release()

    def step(self) -> int:
        """Admit one batch; returns how many jobs left the waiting queues."""
        if not self.lease.still_valid():
            return 0
        picked = self.policy.pick(self.queues, BATCH)
        if picked:
            for env in self.admit(picked):
                send_attempt(env)
        return len(picked)

    def admit(self, picked: list[Envelope]) -> list[Envelope]:
        """Mark the batch admitted (or expired) in SQL; returns those to send."""
        now = time.time()
        to_send = []
        with session_scope() as db:
            for env in picked:
                if env.expired(now):
                    jobs.expire_job(db, env.id, "deadline passed while waiting for admission")
                    continue
                env.deployment = env.deployment or env.chain[0]
                queued_ms = int((now - env.enqueued_at) * 1000)
                if jobs.mark_admitted(db, env.id, env.deployment, queued_ms):
                    to_send.append(env)
        return to_send


def run_scheduler(settings: Settings | None = None) -> None:
    stop = threading.Event()
    try:
        Scheduler(settings).run(stop)
    except KeyboardInterrupt:
        stop.set()
