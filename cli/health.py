"""Is a process up? Waiting for a freshly started one to answer (`gateway up`, the benchmarks, tests), and a
container's healthcheck for the processes without a port (``python -m cli.health worker|scheduler``, the
same as ``gateway health``, in a third of its start-up CPU: a check runs every few seconds)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterable

import httpx


class NotReady(RuntimeError):
    """The URL did not answer 200 in time, or a process it depends on exited first."""


def wait_for_http(url: str, procs: Iterable[subprocess.Popen[bytes]] = (), timeout: float = 60) -> None:
    """Poll ``url`` until it answers 200; fail early when one of ``procs`` has exited."""
    procs = list(procs)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = next((p for p in procs if p.poll() is not None), None)
        if dead is not None:
            raise NotReady(f"{url}: process {dead.args!r} exited with {dead.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise NotReady(f"{url} did not answer within {timeout:.0f}s")


def beating_here(kind: str) -> tuple[bool, str]:
    """Whether a process of ``kind`` on this host beat lately (``shared.heartbeats``), and what to say."""
    from shared.config import get_settings
    from shared.heartbeats import ALIVE_WITHIN_S, KINDS, Heartbeats
    from shared.keys import Keys
    from shared.redis_conn import sync_redis

    if kind not in KINDS:
        return False, f"kind must be one of {', '.join(KINDS)}, not {kind!r}"
    settings = get_settings()
    host = socket.gethostname()
    alive = Heartbeats(sync_redis(settings.redis_url), Keys(settings.key_prefix)).alive()[kind]
    mine = [name for name in alive if name.rsplit(":", 1)[0] == host]
    if not mine:
        return False, f"no {kind} on {host} beat in the last {ALIVE_WITHIN_S:.0f} s"
    return True, f"{kind} alive: {', '.join(mine)}"


if __name__ == "__main__":
    ok, said = beating_here(sys.argv[1] if len(sys.argv) > 1 else "")
    print(said, file=sys.stdout if ok else sys.stderr)
    sys.exit(0 if ok else 1)
