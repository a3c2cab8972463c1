"""The storm's processes on a Redis of their own, with the three ways to break them, and a supervisor.

The gateway's Redis is a ``redis-server`` started here on a free port with no persistence, so
killing it (kill -9) and starting it again on the same port gives the gateway an empty Redis, as
after a crash, without touching the machine's shared Redis. Like the supervisor a deployment runs
its processes under (systemd, Kubernetes), ``supervise`` starts again any gateway process that
exited on its own; each such crash is recorded, since the gateway should have none.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass

import redis

from ops.bench_gateway import free_port
from ops.chaos.plan import WORKERS, ChaosPlan
from ops.storm.stack import StormStack

REDIS_UP_S = 10.0
RESTARTABLE = ("worker", "scheduler", "api")


@dataclass(frozen=True)
class Crash:
    """A gateway process that exited without being told to, and when the supervisor noticed."""

    role: str
    pid: int
    exit_code: int | None
    at: float


class ChaosStack(StormStack):
    """Simulator, two workers, scheduler and api (the storm's), on a private ``redis-server``."""

    def __init__(self, plan: ChaosPlan) -> None:
        super().__init__(plan.scenario, gateway=True, admission=True, workers=WORKERS)
        (self.tmp / "gateway.yaml").write_text(plan.gateway_yaml(self.sim_port))
        self.sim_config.write_text(plan.sim_yaml())
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.env["GATEWAY_REDIS_URL"] = self.redis_url
        self.redis_proc: subprocess.Popen[bytes] | None = None
        self.killed: set[int] = set()  # pids the benchmark killed on purpose: not crashes
        self.crashes: list[Crash] = []

    def start(self) -> dict[str, str]:  # type: ignore[override]
        self.redis_proc = self._redis_server()
        return super().start()

    def _redis_server(self) -> subprocess.Popen[bytes]:
        log = open(self.tmp / "redis-server.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.redis_port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + REDIS_UP_S
        while True:
            try:
                if client.ping():
                    return proc
            except redis.RedisError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"redis-server on port {self.redis_port} did not start; see {log.name}") from None
                time.sleep(0.05)

    def workers_alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p, name in zip(self.procs, self.names, strict=True) if name == "worker" and p.poll() is None]

    def kill_worker(self) -> int:
        """kill -9 the oldest live worker, calls in flight and all; returns its pid."""
        victim = self.workers_alive()[0]
        self.killed.add(victim.pid)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        return victim.pid

    def supervise(self) -> list[Crash]:
        """Start again every gateway process that exited on its own; returns the new crashes."""
        found = []
        for proc, role in list(zip(self.procs, self.names, strict=False)):  # spawns may run meanwhile
            if role in RESTARTABLE and proc.poll() is not None and proc.pid not in self.killed:
                self.killed.add(proc.pid)  # seen: never restarted twice
                found.append(Crash(role, proc.pid, proc.returncode, time.time()))
                self._respawn(role)
        self.crashes += found
        return found

    def _respawn(self, role: str) -> None:
        if role == "worker":
            self.spawn_worker()
        elif role == "scheduler":
            self._spawn("cli", "scheduler")
        else:
            self._spawn("cli", "api", "--port", str(self.api_port))

    def restart_redis(self) -> tuple[float, float]:
        """kill -9 the gateway's Redis and start an empty one on the same port: (killed at, up at)."""
        assert self.redis_proc is not None
        self.redis_proc.kill()
        self.redis_proc.wait()
        killed = time.time()
        self.redis_proc = self._redis_server()
        return killed, time.time()

    def stop(self) -> None:
        super().stop()
        if self.redis_proc is not None:
            self.redis_proc.terminate()
            try:
                self.redis_proc.wait(10)
            except subprocess.TimeoutExpired:
                self.redis_proc.kill()
