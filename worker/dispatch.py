"""``shared.dispatch.Dispatch`` over Celery: an admitted attempt becomes a message on its lane's
execution queue, which the workers consume (``worker.tasks``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery

from shared.envelope import Envelope
from shared.keys import Keys
from worker.tasks import EXECUTE_MANY_TASK, EXECUTE_TASK

# Envelopes per message when the scheduler dispatches a round: Celery's cost per message (publish,
# delivery, three task events, ack) is ~2 ms of CPU, paid once for the chunk instead of per job.
DISPATCH_CHUNK = 16


class CeleryDispatch:
    def __init__(self, app: Celery, keys: Keys) -> None:
        self.app = app
        self.keys = keys

    def send(self, env: Envelope) -> None:
        """One attempt, one message (a fast-lane job the api did not send itself)."""
        self.app.send_task(EXECUTE_TASK, args=[env.to_dict()], queue=self.keys.exec_queue(env.lane),
                           argsrepr=f"job {env.id} attempt {env.attempt}", kwargsrepr="{}")  # not the whole request

    def send_many(self, envs: Sequence[Envelope]) -> None:
        """A scheduler round's admissions: one message per lane and chunk of ``DISPATCH_CHUNK``
        envelopes, all published over one broker connection. A worker runs the attempts of a message
        side by side, each claimed, recorded and settled on its own."""
        by_lane: dict[str, list[Envelope]] = {}
        for env in envs:
            by_lane.setdefault(env.lane, []).append(env)
        with self.app.producer_or_acquire() as producer:
            for lane, group in by_lane.items():
                for i in range(0, len(group), DISPATCH_CHUNK):
                    chunk = group[i:i + DISPATCH_CHUNK]
                    args: list[Any]
                    if len(chunk) == 1:
                        name, args = EXECUTE_TASK, [chunk[0].to_dict()]
                        shown = f"job {chunk[0].id} attempt {chunk[0].attempt}"
                    else:
                        name, args = EXECUTE_MANY_TASK, [[env.to_dict() for env in chunk]]
                        shown = "jobs " + ", ".join(f"{env.id}#{env.attempt}" for env in chunk)
                    self.app.send_task(name, args=args, queue=self.keys.exec_queue(lane), producer=producer,
                                       argsrepr=shown, kwargsrepr="{}")
