"""Run the simulator under uvicorn in one process (uvloop and httptools when installed)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import Callable

import uvicorn

from ops.sim.app import create_app
from ops.sim.config import SimulatorConfig


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:
        return asyncio.new_event_loop


def _http_impl() -> str:
    try:
        import httptools  # noqa: F401

        return "httptools"
    except ImportError:
        return "h11"


def raise_fd_limit() -> int:
    """Thousands of open connections need thousands of file descriptors: lift the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


async def run_server(config: SimulatorConfig, host: str, port: int) -> None:
    """Serve until interrupted; prints the ready line with the real port (``--port 0`` picks one)."""
    server = uvicorn.Server(uvicorn.Config(
        create_app(config), host=host, port=port, http=_http_impl(), loop="none", lifespan="on",
        access_log=False, log_level="warning", backlog=4096, timeout_keep_alive=120,
        timeout_graceful_shutdown=2, server_header=False,
    ))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise SystemExit("simulator failed to start")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    print(f"simulator listening on http://{host}:{bound}", flush=True)
    await task


def serve(config: SimulatorConfig, host: str = "127.0.0.1", port: int = 9100) -> None:
    raise_fd_limit()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(run_server(config, host, port))
