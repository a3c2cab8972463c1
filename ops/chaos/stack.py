"""The storm's processes on a Redis of their own, with the ways to break them, and a supervisor.

Two workers, two schedulers (one leads) and two api processes on two ports (the callers' round
robin, ``ops.chaos.caller``, stands in for a load balancer). The gateway's Redis is a
``redis-server`` started here on a free port with no persistence, so killing it (kill -9) and
starting it again on the same port gives the gateway an empty Redis, as after a crash, without
touching the machine's shared Redis. Like the supervisor a deployment runs its processes under
(systemd, Kubernetes), ``supervise`` starts again any gateway process that exited on its own; each
such crash is recorded, since the gateway should have none.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass

import redis

from ops.bench_gateway import free_port
from ops.chaos.plan import APIS, SCHEDULERS, WORKERS, ChaosPlan
from ops.storm.stack import StormStack
from shared.keys import Keys

REDIS_UP_S = 10.0
RESTARTABLE = ("worker", "scheduler", "api")


@dataclass(frozen=True)
class Crash:
    """A gateway process that exited without being told to, and when the supervisor noticed."""

    role: str
    pid: int
    exit_code: int | None
    at: float


@dataclass(frozen=True)
class Killed:
    """A process the benchmark killed: its role and pid, when, and what it was (a leader's instance id,
    an api's port)."""

    role: str
    pid: int
    at: float
    detail: str = ""


class ChaosStack(StormStack):
    """Simulator, two workers, two schedulers and two apis (the storm's), on a private ``redis-server``."""

    def __init__(self, plan: ChaosPlan, database_url: str | None = None) -> None:
        super().__init__(plan.scenario, gateway=True, admission=True, workers=WORKERS)
        (self.tmp / "gateway.yaml").write_text(plan.gateway_yaml(self.sim_port))
        self.sim_config.write_text(plan.sim_yaml())
        if database_url:
            self.database_url = self.env["GATEWAY_DATABASE_URL"] = database_url
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.env["GATEWAY_REDIS_URL"] = self.redis_url
        self.keys = Keys(self.redis_prefix)
        self.api_ports = [self.api_port] + [free_port() for _ in range(APIS - 1)]
        self.port_of: dict[int, int] = {}  # api pid -> its port
        self.redis_proc: subprocess.Popen[bytes] | None = None
        self.killed: set[int] = set()  # pids the benchmark killed on purpose: not crashes
        self.crashes: list[Crash] = []

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.api_ports]

    def start(self) -> dict[str, str]:  # type: ignore[override]
        self.redis_proc = self._redis_server()
        keys = super().start()  # the simulator, the workers, a scheduler and the first api
        self.port_of[self._live("api")[0].pid] = self.api_port
        for _ in range(SCHEDULERS - 1):
            self.spawn_scheduler()
        for port in self.api_ports[1:]:
            self.spawn_api(port)
            self._wait_up(f"http://127.0.0.1:{port}/readyz")
        return keys

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

    # -- processes ------------------------------------------------------------------------------------

    def _live(self, role: str) -> list[subprocess.Popen[bytes]]:
        return [p for p, name in zip(self.procs, self.names, strict=False) if name == role and p.poll() is None]

    def spawn_scheduler(self) -> None:
        self._spawn("cli", "scheduler")

    def spawn_api(self, port: int) -> None:
        self._spawn("cli", "api", "--port", str(port))
        self.port_of[self.procs[-1].pid] = port

    def _kill(self, proc: subprocess.Popen[bytes], role: str, detail: str = "") -> Killed:
        self.killed.add(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        at = time.time()
        proc.wait()
        return Killed(role, proc.pid, at, detail)

    def kill_worker(self) -> Killed:
        """kill -9 the oldest live worker, calls in flight and all."""
        return self._kill(self._live("worker")[0], "worker")

    def kill_leader(self) -> Killed:
        """kill -9 the scheduler that holds the leader lease (its instance id names its pid)."""
        value = redis.Redis.from_url(self.redis_url).get(self.keys.leader)
        if not value:
            raise SystemExit("no scheduler holds the leader lease")
        holder = value.decode() if isinstance(value, bytes) else str(value)
        pid = int(holder.split("-")[-2])
        victim = next((p for p in self._live("scheduler") if p.pid == pid), None)
        if victim is None:
            raise SystemExit(f"the leader {holder} is not one of this run's schedulers")
        return self._kill(victim, "scheduler", holder)

    def kill_api(self) -> Killed:
        """kill -9 the oldest live api process, fast-lane calls in flight and all."""
        victim = self._live("api")[0]
        return self._kill(victim, "api", str(self.port_of[victim.pid]))

    def replace(self, killed: Killed) -> None:
        """What a supervisor does after a kill: start the same role again (an api on the same port)."""
        if killed.role == "api":
            self.spawn_api(int(killed.detail))
        else:
            self._respawn(killed.role)

    def supervise(self) -> list[Crash]:
        """Start again every gateway process that exited on its own; returns the new crashes."""
        found = []
        for proc, role in list(zip(self.procs, self.names, strict=False)):  # spawns may run meanwhile
            if role in RESTARTABLE and proc.poll() is not None and proc.pid not in self.killed:
                self.killed.add(proc.pid)  # seen: never restarted twice
                found.append(Crash(role, proc.pid, proc.returncode, time.time()))
                if role == "api":
                    self.spawn_api(self.port_of[proc.pid])
                else:
                    self._respawn(role)
        self.crashes += found
        return found

    def _respawn(self, role: str) -> None:
        if role == "worker":
            self.spawn_worker()
        else:
            self.spawn_scheduler()

    def restart_redis(self) -> tuple[Killed, float]:
        """kill -9 the gateway's Redis and start an empty one on the same port: (the kill, up again at)."""
        assert self.redis_proc is not None
        pid = self.redis_proc.pid
        self.redis_proc.kill()
        killed = time.time()
        self.redis_proc.wait()
        self.redis_proc = self._redis_server()
        return Killed("redis", pid, killed), time.time()

    def stop(self) -> None:
        super().stop()
        if self.redis_proc is not None:
            self.redis_proc.terminate()
            try:
                self.redis_proc.wait(10)
            except subprocess.TimeoutExpired:
                self.redis_proc.kill()
