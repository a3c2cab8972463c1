"""Hold the api to its OpenAPI document: schemathesis against a real stack, then a normal call.

    .venv/bin/python ops/fuzz_api.py [--examples 100] [--seed N] [--workers 1]

Starts its own simulator, worker, scheduler and api (``ops.bench_gateway.Stack``: free ports, a private
Redis prefix, a temp SQLite store) with only the models the simulator answers normally, creates a tenant
and its key, and runs schemathesis on ``/openapi.json``: every operation, valid and invalid inputs.
Keys go by the document's security schemes (the tenant's key, the operators' key on ``/metrics`` and
``/v1/admin/*``), and ``model`` is one of the models ``GET /v1/models`` lists most of the time, so the
success paths run too, not only the 404 for an unknown model. The checks: no 5xx, every status and
content type documented, every body and header as its schema says. Prints schemathesis's report and a
summary; exits non-zero on any failure, or when the stack no longer answers a normal chat completion.
``tests/e2e/test_openapi.py`` runs the same on the test stack with a few examples per operation.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import yaml

from ops.bench_gateway import Stack, bench_config

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance")
MODEL_SHARE = 0.8  # how often a generated ``model`` is a configured one (else schemathesis's own string)
# Models of the test config the simulator answers normally (the others exist for fault tests).
HEALTHY_MODELS = ("gpt-4o-mini", "claude-haiku-4-5", "gpt-4o", "fast")
CALL = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "Still there?"}]}
# Operations that change a tenant or key that exists: with the operators' key the stateful phase follows
# GET /v1/admin/keys to the fuzzer's own key and rotates, revokes or expires it (and disables its tenant),
# after which nothing else can be tested. They are left to tests/e2e/test_management.py.
CHANGES_EXISTING = ("update_tenant", "disable_tenant", "enable_tenant", "update_key", "rotate_key", "revoke_key")


def _toml(value: object) -> str:
    return json.dumps(value)  # a JSON string or list of strings is a TOML one too


def schemathesis_config(models: Sequence[str]) -> str:
    """schemathesis.toml: a key per security scheme (read from the environment) and ``model`` drawn
    from ``models`` in every body that has one (``jobs[*].model`` in a batch)."""
    return "\n".join([
        "[auth.openapi.ApiKey]", 'bearer = "${GATEWAY_FUZZ_TENANT_KEY}"',
        "[auth.openapi.OperatorsKey]", 'bearer = "${GATEWAY_FUZZ_OPERATORS_KEY}"',
        "[dictionaries.models]", f"values = {_toml(list(models))}",
        "[parameters]",
        f'"body.model" = {{ dictionary = "models", probability = {MODEL_SHARE} }}',
        f'"body.jobs[*].model" = {{ dictionary = "models", probability = {MODEL_SHARE} }}',
        "",
    ])


def run_schemathesis(api_url: str, tenant_key: str, operators_key: str, models: Sequence[str], *,
                     examples: int, seed: int, workers: int = 1,
                     capture: bool = False, extra: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """schemathesis against ``api_url``'s own document, its output printed (or returned when ``capture``).
    The keys reach it through the environment, so they appear in no file and no command line."""
    env = {**os.environ, "GATEWAY_FUZZ_TENANT_KEY": tenant_key, "GATEWAY_FUZZ_OPERATORS_KEY": operators_key}
    with tempfile.TemporaryDirectory(prefix="gw-fuzz-") as tmp:
        config = Path(tmp) / "schemathesis.toml"
        config.write_text(schemathesis_config(models))
        command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color", "run",
                   f"{api_url}/openapi.json", "--checks", ",".join(CHECKS), "--max-examples", str(examples),
                   "--seed", str(seed), "--workers", str(workers), "--generation-database", "none",
                   "--request-timeout", "30", *_excluded(CHANGES_EXISTING), *extra]
        return subprocess.run(command, cwd=tmp, env=env, capture_output=capture, text=True)


def _excluded(operation_ids: Sequence[str]) -> list[str]:
    return [arg for op in operation_ids for arg in ("--exclude-operation-id", op)]


def still_serving(api_url: str, tenant_key: str) -> str | None:
    """None when a normal chat completion succeeds, else what went wrong."""
    try:
        r = httpx.post(f"{api_url}/v1/chat/completions", json=CALL, timeout=30,
                       headers={"Authorization": f"Bearer {tenant_key}"})
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    ok = r.status_code == 200 and r.headers.get("content-type", "").startswith("application/json")
    return None if ok and r.json().get("choices") else f"{r.status_code}: {r.text[:300]}"


def fuzz_config(sim_port: int) -> str:
    """The benchmarks' config (the test suite's, without its small caps and timeouts) with the healthy
    models only, so every model a caller can name is answered."""
    config = yaml.safe_load(bench_config(sim_port))
    config["models"] = {name: chain for name, chain in config["models"].items() if name in HEALTHY_MODELS}
    used = {d for chain in config["models"].values() for d in chain}
    config["deployments"] = [d for d in config["deployments"] if d["name"] in used]
    config.pop("routing", None)  # its tiers name the fault tests' deployments (model auto is left out)
    return yaml.safe_dump(config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=100, help="most test cases per operation")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="schemathesis's random seed")
    parser.add_argument("--workers", type=int, default=1, help="concurrent schemathesis workers")
    args, extra = parser.parse_known_args()  # anything else goes to `schemathesis run`
    stack = Stack(workers=1, concurrency=16)
    (stack.tmp / "gateway.yaml").write_text(fuzz_config(stack.sim_port))
    operators_key = stack.env["GATEWAY_ADMIN_KEY"] = f"gw-admin-{secrets.token_urlsafe(16)}"
    try:
        key = stack.start()
        models = [m["id"] for m in httpx.get(f"{stack.api_url}/v1/models", timeout=10,
                                             headers={"Authorization": f"Bearer {key}"}).json()["data"]]
        started = time.monotonic()
        result = run_schemathesis(stack.api_url, key, operators_key, models, examples=args.examples,
                                  seed=args.seed, workers=args.workers, extra=extra)
        broken = still_serving(stack.api_url, key)
        dead = [name for name, proc in zip(stack.names, stack.procs, strict=True) if proc.poll() is not None]
    finally:
        stack.stop()
    print(f"fuzz_api: schemathesis exit {result.returncode} in {time.monotonic() - started:.0f} s, seed "
          f"{args.seed}, {args.examples} examples per operation, models {', '.join(models)}; "
          f"after it: {'a chat completion ' + broken if broken else 'a chat completion succeeded'}"
          f"{', exited: ' + ', '.join(dead) if dead else ', every process up'}; logs in {stack.tmp}")
    return 1 if result.returncode or broken or dead else 0


if __name__ == "__main__":
    sys.exit(main())
