"""Celery tasks: the thin shell around ``worker.attempt``."""

from __future__ import annotations

from typing import Any

from shared.queues import Envelope
from worker.attempt import run_attempt
from worker.celery_app import EXECUTE_TASK, celery_app


@celery_app.task(name=EXECUTE_TASK)
def execute(envelope: dict[str, Any]) -> None:
    run_attempt(Envelope(**envelope))
