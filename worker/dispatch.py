"""``shared.dispatch.Dispatch`` over Celery: an admitted attempt becomes a message on its lane's
execution queue, which the workers consume (``worker.tasks``).

Each message says whose work it is where Flower shows and searches it: ``kwargsrepr`` is a dict of
tenant, feature, lane and deployment (Flower's ``kwargs:tenant=acme`` finds every message of a
tenant), ``argsrepr`` lists the jobs and attempts (never the request itself). A round's admissions
are grouped per lane, tenant and feature before they are chunked, so those three are exact on every
message; a chunk's deployments, when a fallback put several in it, are joined with ``,``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery

from shared.attempt_leases import LEASES_HEADER, leases_header
from shared.envelope import Envelope
from shared.keys import Keys
from worker.tasks import EXECUTE_MANY_TASK, EXECUTE_TASK

# Envelopes per message when the scheduler dispatches a round: Celery's cost per message (publish,
# delivery, three task events, ack) is ~2 ms of CPU, paid once for the chunk instead of per job.
DISPATCH_CHUNK = 16


def shown_tags(envs: Sequence[Envelope]) -> str:
    """What Flower shows as the message's kwargs: whose work it is (a dict literal Flower can search)."""
    first = envs[0]
    deployments = ",".join(sorted({env.deployment or "" for env in envs}))
    return repr({"tenant": first.tenant, "feature": first.feature, "lane": str(first.lane),
                 "deployment": deployments})


def shown_jobs(envs: Sequence[Envelope]) -> str:
    """What Flower shows as the message's args: the jobs and attempt numbers, not the requests."""
    if len(envs) == 1:
        return f"job {envs[0].id} attempt {envs[0].attempt}"
    return "jobs " + ", ".join(f"{env.id}#{env.attempt}" for env in envs)


def _leases(envs: Sequence[Envelope]) -> dict[str, str]:
    """The message's dispatches, where the scheduler (while it waits in the broker) and the worker that
    receives it (until it runs) find the leases to keep alive (``scheduler.waiting_dispatches``)."""
    return {LEASES_HEADER: leases_header((env.id, env.token) for env in envs)}


def _by_whose(envs: Sequence[Envelope]) -> dict[tuple[str, str, str], list[Envelope]]:
    groups: dict[tuple[str, str, str], list[Envelope]] = {}
    for env in envs:
        groups.setdefault((env.lane, env.tenant, env.feature), []).append(env)
    return groups


class CeleryDispatch:
    def __init__(self, app: Celery, keys: Keys) -> None:
        self.app = app
        self.keys = keys

    def send(self, env: Envelope) -> None:
        """One attempt, one message (a fast-lane job the api did not send itself)."""
        self.app.send_task(EXECUTE_TASK, args=[env.to_dict()], queue=self.keys.exec_queue(env.lane),
                           argsrepr=shown_jobs([env]), kwargsrepr=shown_tags([env]), headers=_leases([env]))

    def send_many(self, envs: Sequence[Envelope]) -> None:
        """A scheduler round's admissions: one message per lane, tenant, feature and chunk of
        ``DISPATCH_CHUNK`` envelopes, all published over one broker connection. A worker runs the
        attempts of a message side by side, each claimed, recorded and settled on its own."""
        with self.app.producer_or_acquire() as producer:
            for (lane, _, _), group in _by_whose(envs).items():
                for i in range(0, len(group), DISPATCH_CHUNK):
                    chunk = group[i:i + DISPATCH_CHUNK]
                    args: list[Any]
                    if len(chunk) == 1:
                        name, args = EXECUTE_TASK, [chunk[0].to_dict()]
                    else:
                        name, args = EXECUTE_MANY_TASK, [[env.to_dict() for env in chunk]]
                    self.app.send_task(name, args=args, queue=self.keys.exec_queue(lane), producer=producer,
                                       argsrepr=shown_jobs(chunk), kwargsrepr=shown_tags(chunk),
                                       headers=_leases(chunk))
