"""Waiting for a freshly started process to answer, shared by `gateway up`, the benchmarks and tests."""

from __future__ import annotations

import subprocess
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
