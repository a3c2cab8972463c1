"""The Celery application: Redis broker, one execution queue per lane, late acks, task events on.

``acks_late`` + ``task_reject_on_worker_lost``: a worker killed mid-call leaves its message
unacknowledged, so the broker redelivers it; the attempt record's unique (job, number) key keeps
that redelivery from being billed twice. Results go to the SQL store, not to a Celery backend.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery
from kombu import Exchange, Queue

from shared.config import Settings, get_settings
from shared.keys import Keys
from shared.lanes import LANES, Lane
from worker.tasks import register_tasks
from worker.transport import use_one_client_transport


def make_celery(settings: Settings) -> Celery:
    """The app every gateway process uses to publish or consume attempts, its tasks registered."""
    keys = Keys(settings.key_prefix)
    use_one_client_transport()
    app = Celery("gateway", broker=settings.redis_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        # Flower's task view comes from the worker's events (received, started, succeeded: ~0.5 ms of
        # worker CPU per task); the extra "sent" event would cost the scheduler and api one more publish.
        task_send_sent_event=False,
        worker_send_task_events=True,
        # A worker takes no message it has no thread for: with thousands of threads (``worker.concurrency``),
        # taking four times as many would let one worker hoard a round that idle workers could run.
        worker_prefetch_multiplier=1,
        worker_disable_rate_limits=True,  # no task has a rate limit: budgets live in the scheduler
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": 3600,
            "queue_order_strategy": "priority",  # interactive first, then standard, then batch
            "global_keyprefix": keys.celery_prefix,  # no clash with other apps/tests
        },
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in map(keys.exec_queue, LANES)],
        task_default_queue=keys.exec_queue(Lane.STANDARD),
    )
    register_tasks(app, settings)
    return app


def __getattr__(name: str) -> Celery:
    """``celery_app`` for the tools that find an app by name (``celery -A worker.celery_app:celery_app
    flower``), built from the process's settings (``GATEWAY_CONFIG``). The gateway's own processes
    build theirs with ``make_celery`` and pass it on."""
    if name == "celery_app":
        return _default_app()
    raise AttributeError(name)


@lru_cache(maxsize=1)
def _default_app() -> Celery:
    return make_celery(get_settings())
