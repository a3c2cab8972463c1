"""The processes of one mode: the simulator alone (direct) or simulator + worker + scheduler + api.

Built on ``ops.bench_gateway.Stack`` (private Redis prefix, temp SQLite, free ports); only the configs
and the start-up differ: the storm's own simulator YAML, a gateway config that mirrors it, and 20
tenants with one API key each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from cli.health import NotReady, wait_for_http
from ops.bench_gateway import ROOT, Stack
from ops.storm.scenario import GATEWAY_SIM_KEY, Scenario

_CREATE_KEYS = """
import json, sys
from shared.db.session import session_scope
from shared.db.tenants import ensure_tenant, create_key
keys = {}
with session_scope() as db:
    for tenant in sys.argv[1:]:
        ensure_tenant(db, tenant)
        keys[tenant] = create_key(db, tenant)[1]
print(json.dumps(keys))
"""


def direct_key(tenant: str) -> str:
    """The provider key a feature of ``tenant`` uses when it calls the provider itself."""
    return f"sk-direct-{tenant}"


class StormStack(Stack):
    """One mode's processes; ``gateway=False`` starts only the simulator. ``workers`` Celery worker
    processes share ``scenario.worker_concurrency`` threads (the chaos benchmark kills one of two)."""

    def __init__(self, scenario: Scenario, *, gateway: bool, admission: bool = True, workers: int = 1) -> None:
        super().__init__(workers=workers, concurrency=max(1, scenario.worker_concurrency // workers))
        self.scenario = scenario
        self.gateway = gateway
        (self.tmp / "gateway.yaml").write_text(scenario.gateway_yaml(self.sim_port, admission))
        self.sim_config = self.tmp / "sim.yaml"
        self.sim_config.write_text(scenario.sim_yaml([direct_key(t) for t in scenario.tenant_ids]))
        self.env["SIM_OPENAI_KEY"] = GATEWAY_SIM_KEY
        self.env["GATEWAY_FILES__DIR"] = str(self.tmp / "files")  # the Batch API's files, not the checkout's var/
        self.redis_prefix = self.env["GATEWAY_KEY_PREFIX"]

    def start(self) -> dict[str, str]:  # type: ignore[override]
        """Start the processes; returns tenant -> gateway API key (empty without the gateway)."""
        self._spawn("ops.sim", "--port", str(self.sim_port), "--config", str(self.sim_config))
        keys: dict[str, str] = {}
        if self.gateway:
            subprocess.run([sys.executable, "-m", "cli", "migrate"], cwd=ROOT, env=self.env, check=True,
                           capture_output=True)
            out = subprocess.run([sys.executable, "-c", _CREATE_KEYS, *self.scenario.tenant_ids], cwd=ROOT,
                                 env=self.env, check=True, capture_output=True, text=True).stdout
            keys = json.loads(out.strip().splitlines()[-1])
            for _ in range(self.workers):
                self.spawn_worker()
            self._spawn("cli", "scheduler")
            self._spawn("cli", "api", "--port", str(self.api_port))
        self._wait_up(f"{self.sim_url}/healthz")
        if self.gateway:
            self._wait_up(f"{self.api_url}/readyz")
            time.sleep(2)  # let the worker finish connecting to its queues
        return keys

    def spawn_worker(self) -> None:
        """One more Celery worker process (threads pool) with this stack's environment."""
        self._spawn("cli", "worker", "--concurrency", str(self.concurrency), "--pool", "threads")

    def _wait_up(self, url: str, timeout: float = 60) -> None:
        try:
            wait_for_http(url, timeout=timeout)
        except NotReady as exc:
            raise SystemExit(f"{exc}; logs in {self.tmp}") from exc
