"""Scheduler failover and the schedulers' Redis load at idle, measured in one run.

    .venv/bin/python ops/bench_failover.py [--kills 5] [--idle-s 20]

Starts a ``redis-server`` of its own (so nothing else's commands are counted), a temp SQLite store
and two ``gateway scheduler`` processes with the embedded config, then:

1. idle: no job anywhere for ``--idle-s`` seconds; Redis's own command counter gives the commands per
   second both schedulers cost together (the leader and its standby);
2. failover, ``--kills`` times: kill -9 the leader (its instance id names its pid) and time how long
   until the standby holds the leader lease, reading the lease key every 5 ms; the killed one is
   started again as the new standby.

``--checkout DIR --module ops.cli`` runs the schedulers of another checkout (one from before the CLI
moved to ``cli/``), so the same script measures before and after a change.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
KEY_PREFIX = "gwfail"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=log.open("ab"), stderr=subprocess.STDOUT)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc
        except redis.RedisError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def leader(client: redis.Redis) -> str | None:
    value = client.get("{" + KEY_PREFIX + "}:scheduler:leader")
    return value.decode() if isinstance(value, bytes) else value


def _taken_over(client: redis.Redis, old: str) -> bool:
    return leader(client) not in (None, old)


def wait_for(check: Callable[[], bool], timeout: float = 30.0, every: float = 0.005) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise SystemExit("timed out waiting for a leader")
        time.sleep(every)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--module", default="cli", help="the gateway command's module (ops.cli before the move)")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the checkout whose schedulers to run")
    args = parser.parse_args()
    root = args.checkout.resolve()

    tmp = Path(tempfile.mkdtemp(prefix="gw-failover-"))
    port = free_port()
    redis_proc = start_redis(port, tmp / "redis.log")
    env = {**os.environ, "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{port}/0", "GATEWAY_KEY_PREFIX": KEY_PREFIX,
           "GATEWAY_DATABASE_URL": f"sqlite:///{tmp / 'gateway.db'}", "PYTHONPATH": str(root)}
    env.pop("GATEWAY_CONFIG", None)
    subprocess.run([sys.executable, "-m", args.module, "migrate"], cwd=root, env=env, check=True,
                   stdout=subprocess.DEVNULL)

    def scheduler() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", args.module, "scheduler"], cwd=root, env=env,
                                stdout=(tmp / "schedulers.log").open("ab"), stderr=subprocess.STDOUT)

    procs = {p.pid: p for p in (scheduler(), scheduler())}
    client = redis.Redis(port=port)
    try:
        wait_for(lambda: leader(client) is not None)
        time.sleep(3)  # both up, the standby polling
        before = int(client.info("stats")["total_commands_processed"])
        time.sleep(args.idle_s)
        idle_per_s = (int(client.info("stats")["total_commands_processed"]) - before - 1) / args.idle_s
        failovers = []
        for _ in range(args.kills):
            holder = leader(client)
            assert holder is not None
            pid = int(holder.split("-")[-2])
            os.kill(pid, signal.SIGKILL)
            procs.pop(pid).wait()
            failovers.append(wait_for(partial(_taken_over, client, holder)))
            new = scheduler()
            procs[new.pid] = new
            time.sleep(3)
        print(f"command: ops/bench_failover.py {' '.join(sys.argv[1:])}")
        print(f"idle: {idle_per_s:.1f} Redis commands/s for both schedulers (leader + standby), "
              f"over {args.idle_s:.0f} s")
        print(f"failover after kill -9 of the leader, {len(failovers)} times: median "
              f"{statistics.median(failovers):.2f} s, max {max(failovers):.2f} s "
              f"({', '.join(f'{f:.2f}' for f in failovers)})")
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(10)
        redis_proc.terminate()


if __name__ == "__main__":
    main()
