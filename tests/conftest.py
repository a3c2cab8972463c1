"""Test harness: real Redis, real simulator, real Celery worker, real api over HTTP.

The environment is fixed before any gateway module is imported (settings are read once per
process): a private Redis key prefix, a temp SQLite file and a config file whose providers point
at this session's simulator port. Every process the tests start inherits that environment.
Any HTTP call to a host outside loopback fails, so no test can reach a real provider.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import redis

from cli.health import wait_for_http

if TYPE_CHECKING:
    from shared.db.tenants import AuthEpoch

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_TMP = Path(tempfile.mkdtemp(prefix="gw-tests-"))
SIM_PORT = free_port()
API_PORT = free_port()
PREFIX = f"gwt{uuid.uuid4().hex[:8]}"
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def session_redis(session_prefix: str) -> Iterator[redis.Redis]:
    """A client on the test Redis for a session-scoped fixture; deletes every key under
    ``{<session_prefix>...`` when the session ends."""
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield r
    for key in r.scan_iter(match=f"{{{session_prefix}*", count=1000):
        r.delete(key)
    r.close()
CONFIG_TEMPLATE = ROOT / "tests" / "gateway.test.yaml"

CONFIG = _TMP / "gateway.yaml"
CONFIG.write_text(CONFIG_TEMPLATE.read_text().replace("${SIM_PORT}", str(SIM_PORT)))
os.environ.update({
    "GATEWAY_CONFIG": str(CONFIG),
    "GATEWAY_KEY_PREFIX": PREFIX,
    "GATEWAY_REDIS_URL": REDIS_URL,
    "GATEWAY_DATABASE_URL": f"sqlite:///{_TMP / 'gateway.db'}",
    "GATEWAY_FILES__DIR": str(_TMP / "files"),  # POST /v1/files and the batches' output
    "SIM_OPENAI_KEY": "sk-sim-openai",
    "SIM_ANTHROPIC_KEY": "sk-ant-sim",
    "GATEWAY_ADMIN_KEY": "gw-admin-tests",
    "GATEWAY_TEST_ALERT_SECRET": "whsec-tests",  # signs the budget alerts' webhooks
})
ADMIN = {"Authorization": "Bearer gw-admin-tests"}  # the operators' key (/metrics, /v1/admin/*)


def _auth_epoch() -> AuthEpoch:
    from shared.db.tenants import AuthEpoch
    from shared.keys import Keys

    return AuthEpoch(redis.Redis.from_url(REDIS_URL, decode_responses=True), Keys(PREFIX))


EPOCH = _auth_epoch()  # where the tests' revocations are announced to the stack's api processes


@pytest.fixture(autouse=True)
def _no_real_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse any HTTP request that would leave this machine."""
    original = httpx.HTTPTransport.handle_request

    def guarded(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127."):
            raise RuntimeError(f"test tried to reach {host}: only loopback is allowed")
        return original(self, request)

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", guarded)


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    wait_for_http(url, [proc] if proc is not None else [], timeout)


def spawn(*args: str, env: dict[str, str] | None = None, log: str) -> subprocess.Popen[bytes]:
    out = open(_TMP / f"{log}.log", "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})


@contextmanager
def serving(module: str, *args: str, env: dict[str, str] | None = None, log: str) -> Iterator[str]:
    """A process of its own (``python -m module *args --port P``) answering /healthz on a free port; its
    URL, and the process stopped afterwards."""
    port = free_port()
    proc = spawn(module, *args, "--port", str(port), env=env, log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", proc)
        yield url
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def sim_url() -> Iterator[str]:
    proc = spawn("ops.sim", "--host", "127.0.0.1", "--port", str(SIM_PORT),
                 "--config", str(ROOT / "tests" / "sim.test.yaml"), log="sim")
    url = f"http://127.0.0.1:{SIM_PORT}"
    wait_http(f"{url}/healthz", proc)
    yield url
    stop(proc)


@dataclass
class Stack:
    url: str
    sim_url: str
    keys: dict[str, str]
    tmp: Path
    procs: dict[str, subprocess.Popen[bytes]]

    def client(self, tenant: str = "acme", **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.keys[tenant]}"},
                            timeout=60, **kw)  # type: ignore[arg-type]


def _flush_prefix() -> None:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    for pattern in (f"{{{PREFIX}}}*", f"{PREFIX}*"):
        for key in r.scan_iter(match=pattern, count=1000):
            r.delete(key)


@pytest.fixture(scope="session")
def stack(sim_url: str) -> Iterator[Stack]:
    """The whole gateway: migrate, tenants and keys, then worker, scheduler and api processes."""
    from shared.db.migrate import upgrade
    from shared.db.session import session_scope
    from shared.db.tenants import create_key, ensure_tenant

    _flush_prefix()
    upgrade(os.environ["GATEWAY_DATABASE_URL"])
    keys = {}
    with session_scope() as db:
        for tenant in ("acme", "globex", "initech", "umbrella", "hooli"):
            ensure_tenant(db, tenant)
            keys[tenant] = create_key(db, tenant, name="tests")[1]
    procs = {
        "worker": spawn("cli", "worker", "--concurrency", "16", log="worker"),
        "scheduler": spawn("cli", "scheduler", log="scheduler"),
        "api": spawn("cli", "api", "--port", str(API_PORT), log="api"),
    }
    url = f"http://127.0.0.1:{API_PORT}"
    stack = Stack(url=url, sim_url=sim_url, keys=keys, tmp=_TMP, procs=procs)
    try:
        wait_http(f"{url}/healthz", procs["api"])
        yield stack
    finally:
        for proc in stack.procs.values():
            stop(proc)
        _flush_prefix()


def wait_for_status(client: httpx.Client, job_id: str, statuses: set[str], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/v1/jobs/{job_id}").json()
        if view.get("status") in statuses:
            return view  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {statuses} within {timeout}s: {view}")


@contextmanager
def hold_leader_lease() -> Iterator[None]:
    """Take the scheduler's leader lease under another name: the real scheduler stands by."""
    import redis

    from shared.keys import Keys

    r = redis.Redis.from_url(REDIS_URL)
    key = Keys(PREFIX).leader
    r.delete(key)
    r.set(key, "tests-hold-the-lease", px=120_000)
    time.sleep(0.05)  # a round that had already started finishes; the next one sees the lease is gone
    try:
        yield
    finally:
        r.delete(key)
