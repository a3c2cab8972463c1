"""The FastAPI application: routes, error dialects, body limit, the shared completion waiter and stream hub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.gateway import Gateway
from api.limits import BodyGuard
from api.metrics import AUTH_FAILURES, HttpMetrics, install_collector
from api.openapi import install_openapi
from api.routes import (
    admin,
    audit,
    chat,
    console,
    embeddings,
    files,
    health,
    jobs,
    message_batches,
    messages,
    responses,
    usage,
)
from api.routes.common import size_submit_threads
from api.streaming import StreamHub
from api.tracing import TraceContext
from api.waiter import CompletionWaiter
from execution.context import AttemptContext
from shared.config import Settings
from shared.dispatch import Dispatch


def create_app(settings: Settings, dispatch: Dispatch) -> FastAPI:
    """The api, handing the attempts it does not send itself to ``dispatch`` (``cli`` injects Celery's)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The api sends fast-lane attempts itself: its first caller should not pay for their set-up.
        gateway = Gateway(settings, dispatch, AttemptContext(settings).warm_up())
        gateway.attempts.cache.warm_up()  # the semantic cache's model, just after the api is up
        gateway.auth.on_failure = lambda reason: AUTH_FAILURES.labels(reason=reason).inc()
        size_submit_threads(gateway)
        waiter = CompletionWaiter(settings.redis_url, gateway.keys.reply_channel, gateway.keys.tenant_done)
        admission = settings.admission  # a lease renewed on time has more left than its life less two beats
        streams = StreamHub(settings.redis_url, gateway.keys, settings.streaming,
                            lease_late_s=admission.attempt_lease_s - 2 * admission.heartbeat_s)
        streams.bind(asyncio.get_running_loop())
        waiter.on_stream = streams.deliver_message
        gateway.streams = streams
        await waiter.start()
        app.state.gateway, app.state.waiter, app.state.streams = gateway, waiter, streams
        install_collector(gateway)
        gateway.batches.start_housekeeping()  # batches whose reader died (another api's, this one's), expired files
        yield
        gateway.batches.stop_housekeeping()
        await waiter.stop()
        await streams.close()

    # Operation ids are the route functions' names (get_job, not get_job_v1_jobs__job_id__get): links
    # in the document and clients generated from it use them.
    app = FastAPI(title="AI gateway", version="0.1.0", lifespan=lifespan,
                  generate_unique_id_function=lambda route: route.name)
    install_error_handlers(app)
    install_openapi(app)
    for module in (chat, messages, message_batches, embeddings, responses, files, jobs, usage, admin, audit, health,
                   console):
        app.include_router(module.router)
    app.add_middleware(BodyGuard, max_bytes=settings.api.max_body_bytes,
                       batch_max_bytes=settings.api.max_batch_body_bytes, timeout_s=settings.api.body_timeout_s,
                       files_max_bytes=settings.files.max_bytes + 64 * 1024)  # the multipart framing on top
    app.add_middleware(TraceContext)
    app.add_middleware(HttpMetrics)  # outermost: counts every answer, the body guard's 413s and 408s too
    console.install_static(app)
    return app
