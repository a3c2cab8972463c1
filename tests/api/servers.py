"""A real uvicorn server, on uvloop with the api's HTTP protocol, serving a test's ASGI app in a thread."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from api.server import GatewayHttpProtocol

PATIENCE_S = 15


@contextlib.contextmanager
def serving(app: Any) -> Iterator[int]:
    """The port ``app`` is served on while the block runs."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, loop="uvloop", http=GatewayHttpProtocol,
                            log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + PATIENCE_S
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(PATIENCE_S)
