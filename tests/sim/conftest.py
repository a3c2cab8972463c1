"""Simulator fixtures: a real uvicorn server on a free port, in a thread, with a clock tests can drive."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import uvicorn

from ops.sim.app import SimApp, create_app
from ops.sim.config import SimulatorConfig


class ManualClock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RunningSim:
    def __init__(self, app: SimApp, server: uvicorn.Server, thread: threading.Thread) -> None:
        self.app, self.server, self.thread = app, server, thread
        port = server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    @property
    def sim(self):  # the Simulator state
        return self.app.sim

    def client(self, key: str = "sk-test", **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {key}"}, **kw)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_sim(config: SimulatorConfig | None = None, clock: Callable[[], float] | None = None) -> RunningSim:
    app = create_app(config or SimulatorConfig(), clock=clock)
    server = uvicorn.Server(uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", log_level="warning", access_log=False,
        timeout_graceful_shutdown=1,
    ))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("simulator did not start")
        time.sleep(0.01)
    return RunningSim(app, server, thread)


@pytest.fixture
def make_sim() -> Iterator[Callable[..., RunningSim]]:
    """Start simulators with a given config (and clock); all are stopped after the test."""
    started: list[RunningSim] = []

    def make(config: SimulatorConfig | None = None, clock: Callable[[], float] | None = None) -> RunningSim:
        running = start_sim(config, clock)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[RunningSim]:
    """One default simulator for read-only format tests (generous limits, zero latency)."""
    config = SimulatorConfig.model_validate({
        "defaults": {
            "openai": {"limits": {"rpm": 100_000, "tpm": 100_000_000}},
            "anthropic": {"limits": {"rpm": 100_000, "itpm": 100_000_000, "otpm": 100_000_000}},
        },
    })
    running = start_sim(config)
    yield running
    running.stop()
