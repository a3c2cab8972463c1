"""The ``gateway`` command: run each process, or all of them at once with ``gateway up``."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer
from rich.console import Console

from cli.admin import audit_app, cache_app, keys_app, migrate, tenants_app
from cli.health import NotReady, beating_here, wait_for_http
from cli.usage import usage_app
from ops.sim.cli import sim
from shared import tracing
from shared.config import Settings, check_provider_keys, get_settings
from shared.dispatch import Dispatch
from shared.errors import ConfigError
from shared.heartbeats import Heartbeats, Kind
from shared.keys import Keys
from shared.lanes import LANES
from shared.private_files import write_private
from shared.redis_conn import redis_answers, sync_redis

if TYPE_CHECKING:
    from fastapi import FastAPI

app = typer.Typer(help="The AI gateway: one place every LLM call goes through.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants", help="Create, list, change, disable and enable tenants.")
app.add_typer(keys_app, name="keys", help="Create, list, change, rotate and revoke API keys.")
app.add_typer(audit_app, name="audit", help="Verify and export the audit log; list the operators' changes.")
app.add_typer(cache_app, name="cache", help="Purge cached answers (a tenant's, or one feature's).")
app.add_typer(usage_app, name="usage", help="What the calls cost (from the usage rollups); `usage reconcile` "
              "checks the rollups against the attempt records.")
app.command("migrate", help="Create or upgrade the result store's tables.")(migrate)
app.command("sim", help="Run the provider simulator (OpenAI and Anthropic APIs with real rate limits).")(sim)

console = Console()
err_console = Console(stderr=True)
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file (or GATEWAY_CONFIG)")]
DEMO_TENANTS = ("acme", "globex")


def _use_config(config: Path | None) -> None:
    """Load the settings once, before anything starts: a mistake in them is a message and exit 2."""
    if config:
        os.environ["GATEWAY_CONFIG"] = str(config)
        get_settings.cache_clear()
    logging.basicConfig(level=os.environ.get("GATEWAY_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per provider call is too much
    get_settings()


def _show_version(value: bool) -> None:
    if value:
        console.print(f"gateway {version('ai-gateway')}")
        raise typer.Exit()


@app.callback()
def _options(show_version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_show_version, help="Print the gateway's version and exit.")] = False,
) -> None:
    """The AI gateway: one place every LLM call goes through."""


def main() -> None:
    """The ``gateway`` command: a configuration mistake is its message (and exit 2), never a traceback."""
    try:
        app()
    except ConfigError as exc:
        err_console.print(exc.message, markup=False, highlight=False, style="red", soft_wrap=True)
        sys.exit(2)


def _require_provider_keys() -> None:
    """The api, the workers and ``gateway up`` send provider calls: refuse to start when a provider
    beyond this machine has no API key, instead of failing every call it gets."""
    problems = check_provider_keys(get_settings())
    if problems:
        err_console.print("[red]refusing to start:[/red]" + "".join(f"\n  {p}" for p in problems), soft_wrap=True)
        raise typer.Exit(1)


def _raise_fd_limit() -> None:
    """Every call in flight holds a socket (and a streamed one at the api two): lift this process's soft
    limit on open files (often 1,024) to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _tune_gc() -> None:
    """Fewer, cheaper garbage collections in the long-running processes: the objects alive after start-up
    (modules, config, clients) are frozen out of every later collection, and the youngest generation
    is collected every 50,000 allocations instead of 700, which at a few thousand allocations per
    request took a pass every request and put collections into the fast lane's p99."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


@app.command()
def api(config: ConfigOpt = None, host: str | None = None, port: int | None = None,
        workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1) -> None:
    """Run the HTTP API."""
    import uvicorn

    from api.server import uvicorn_options

    _use_config(config)
    _require_provider_keys()
    _raise_fd_limit()  # inherited by uvicorn's --workers processes
    _tune_gc()
    s = get_settings()
    if workers > 1:
        _share_metrics_between_processes()
    uvicorn.run("cli.main:api_app", factory=True, host=host or s.api.host, port=port or s.api.port,
                workers=workers, access_log=False, log_level="warning", **uvicorn_options(s))


def api_app() -> FastAPI:
    """uvicorn's factory (each ``--workers`` process calls it): the api, with Celery as its dispatch."""
    from api.app import create_app

    settings = get_settings()
    tracing.configure("gateway-api")
    return create_app(settings, celery_dispatch(settings))


def celery_dispatch(settings: Settings) -> Dispatch:
    """How the api and the scheduler hand attempts to the workers: Celery, on the settings' Redis."""
    from worker.celery_app import make_celery
    from worker.dispatch import CeleryDispatch

    return CeleryDispatch(make_celery(settings), Keys(settings.key_prefix))


def _share_metrics_between_processes() -> None:
    """prometheus_client's multiprocess mode: each api process writes its counters to files in one
    directory and /metrics sums them. The directory must start empty; the processes inherit it."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    Path(folder).mkdir(parents=True, exist_ok=True)
    for stale in Path(folder).glob("*.db"):  # a previous run's counters
        stale.unlink()


@app.command()
def scheduler(config: ConfigOpt = None) -> None:
    """Run the scheduler (one leader admits; extra instances wait as standbys)."""
    from scheduler.main import run_scheduler

    _use_config(config)
    _tune_gc()
    settings = get_settings()
    _beat("scheduler", settings)
    tracing.configure("gateway-scheduler")
    run_scheduler(settings, celery_dispatch(settings))


@app.command()
def worker(config: ConfigOpt = None,
           concurrency: Annotated[int | None, typer.Option(help="calls in flight (worker.concurrency)")] = None,
           pool: str | None = None) -> None:
    """Run a Celery worker on every lane's execution queue."""
    _use_config(config)
    _require_provider_keys()
    from worker.celery_app import make_celery

    s = get_settings()
    if concurrency:
        s = s.model_copy(update={"worker": s.worker.model_copy(update={"concurrency": concurrency})})
    celery_app = make_celery(s)
    _raise_fd_limit()
    _tune_gc()
    _beat("worker", s)
    tracing.configure("gateway-worker")
    queues = ",".join(Keys(s.key_prefix).exec_queue(lane) for lane in LANES)
    celery_app.worker_main(["worker", "-P", pool or s.worker.pool, "-c", str(s.worker.concurrency),
                            "-Q", queues, "-E", f"--loglevel={os.environ.get('GATEWAY_LOG_LEVEL', 'WARNING')}",
                            "--without-gossip", "--without-mingle"])


def _beat(kind: Kind, settings: Settings) -> None:
    """Say this process is alive, for /metrics, the console and ``gateway health`` (``shared.heartbeats``)."""
    Heartbeats(sync_redis(settings.redis_url), Keys(settings.key_prefix)).start(kind)


@app.command()
def health(kind: Annotated[str, typer.Argument(help="worker or scheduler")], config: ConfigOpt = None) -> None:
    """Exit 0 when a process of this kind on this host beat lately (a container's healthcheck)."""
    _use_config(config)
    ok, said = beating_here(kind)
    (console if ok else err_console).print(said, markup=False)
    if not ok:
        raise typer.Exit(1)


@app.command()
def flower(config: ConfigOpt = None, port: Annotated[int, typer.Option(help="port Flower listens on")] = 5555,
           address: Annotated[str, typer.Option(help="address Flower listens on")] = "127.0.0.1") -> None:
    """Run Flower on the execution queues and workers, behind a login (FLOWER_BASIC_AUTH=user:password)."""
    _use_config(config)
    if not (os.environ.get("FLOWER_BASIC_AUTH") or os.environ.get("FLOWER_AUTH_PROVIDER")):
        err_console.print("[red]refusing to start:[/red] Flower shows every tenant's work and can revoke tasks; "
                          "set FLOWER_BASIC_AUTH=user:password (or FLOWER_AUTH_PROVIDER and FLOWER_AUTH for OAuth)",
                          soft_wrap=True)
        raise typer.Exit(1)
    from worker.celery_app import make_celery

    make_celery(get_settings()).start(["flower", f"--port={port}", f"--address={address}"])


@app.command()
def up(config: ConfigOpt = None,
       workers: Annotated[int, typer.Option(min=1, help="worker processes (one per core for throughput)")] = 1) -> None:
    """Run everything (Redis if needed, simulator, api, scheduler, workers); Ctrl-C stops all."""
    _use_config(config)
    _require_provider_keys()
    s = get_settings()
    children: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops the children too, like Ctrl-C
    try:
        children += _ensure_redis(s.redis_url)
        migrate()
        keys = _demo_keys()
        _ensure_admin_key(s.api.admin_key_env)
        base = [sys.executable, "-m", "cli"]
        if s.sim.enabled:
            children.append(subprocess.Popen(base + ["sim", "--host", s.sim.host, "--port", str(s.sim.port),
                                                     "--rpm", str(s.sim.rpm), "--tpm", str(s.sim.tpm)]))
        children.append(subprocess.Popen(base + ["api"]))
        children.append(subprocess.Popen(base + ["scheduler"]))
        children += [subprocess.Popen(base + ["worker"]) for _ in range(workers)]
        _wait_healthy(f"http://{s.api.host}:{s.api.port}/healthz", children)
        _print_welcome(s.api.host, s.api.port, keys)
        while all(c.poll() is None for c in children):
            time.sleep(0.5)
        console.print("[red]a gateway process exited; stopping the others[/red]")
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        _stop(children)


def _ensure_redis(url: str) -> list[subprocess.Popen[bytes]]:
    if redis_answers(url):
        return []
    server = shutil.which("redis-server")
    if not server:
        console.print(f"[red]No Redis answers at {url} and redis-server is not installed.[/red]\n"
                      "Install it (Debian/Ubuntu: 'sudo apt-get install redis-server', macOS: "
                      "'brew install redis') or point GATEWAY_REDIS_URL at a running Redis.")
        raise typer.Exit(1)
    port = httpx.URL(url.replace("redis://", "http://")).port or 6379
    console.print(f"starting redis-server on port {port} (no persistence)")
    proc = subprocess.Popen([server, "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if time.monotonic() > deadline:
            raise typer.Exit(1)
        time.sleep(0.1)
    return [proc]


def _demo_keys() -> dict[str, str]:
    """Demo tenants and one key each, kept in ./var/demo-keys.json (600, in a 700 ./var made here if
    missing) so restarts print the same keys."""
    from shared.db.session import session_scope
    from shared.db.tenants import authenticate, create_key, ensure_tenant

    path = Path("var/demo-keys.json")
    saved: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    keys = {}
    with session_scope() as db:
        for tenant in DEMO_TENANTS:
            ensure_tenant(db, tenant)
            key = saved.get(tenant)
            try:
                if key and authenticate(db, key).tenant == tenant:
                    keys[tenant] = key
                    continue
            except Exception:  # revoked or from another database: make a new one
                pass
            keys[tenant] = create_key(db, tenant, name="demo")[1]
    write_private(path, json.dumps(keys, indent=2))
    return keys


def _ensure_admin_key(env_var: str) -> None:
    """Local runs get an operators' key for /v1/admin/*, kept in ./var so restarts print the same."""
    if os.environ.get(env_var):
        return
    path = Path("var/admin-key")
    if not path.exists():
        write_private(path, "gw-admin-" + secrets.token_urlsafe(24))
    os.environ[env_var] = path.read_text().strip()  # the children inherit it


def _wait_healthy(url: str, children: list[subprocess.Popen[bytes]]) -> None:
    try:
        wait_for_http(url, children)
    except NotReady as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc


def _print_welcome(host: str, port: int, keys: dict[str, str]) -> None:
    key = keys[DEMO_TENANTS[0]]
    console.print(f"\n[bold green]gateway up[/bold green] on http://{host}:{port}")
    for tenant, k in keys.items():
        console.print(f"  tenant [bold]{tenant}[/bold] API key: {k}")
    console.print("\nTry it:")
    print(f"  curl -s http://{host}:{port}/v1/chat/completions -H 'Authorization: Bearer {key}' "  # no wrapping
          "-H 'Content-Type: application/json' "
          "-d '{\"model\": \"gpt-4o-mini\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}'")
    console.print(f"The console (queues, budgets, breakers, jobs, cost): http://{host}:{port}/console, log in with "
                  f"the operators' key {os.environ.get('GATEWAY_ADMIN_KEY', '$GATEWAY_ADMIN_KEY')}\n"
                  "Ctrl-C stops everything.", soft_wrap=True)


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for child in reversed(children):
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()


if __name__ == "__main__":
    main()
