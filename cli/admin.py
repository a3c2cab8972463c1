"""`gateway migrate`, `gateway tenants ...`, `gateway keys ...`, `gateway audit ...` and `gateway cache purge`:
the admin commands.

Each command brings the schema up to date first (an idempotent upgrade), so a fresh machine needs
no separate migration step before creating its first tenant. Every change is written to the audit log
in the transaction that makes it (``shared.db.audit.record_admin``), with the operator's login as actor.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from shared.config import get_settings
from shared.db import audit
from shared.db import migrate as migrations
from shared.db import tenants as store
from shared.db.session import get_engine, session_scope
from shared.errors import GatewayError
from shared.keys import Keys
from shared.redis_conn import sync_redis

tenants_app = typer.Typer(help="Create, list and disable tenants.", no_args_is_help=True)
cache_app = typer.Typer(help="Purge cached answers.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys (hashed; shown once).", no_args_is_help=True)
audit_app = typer.Typer(help="Verify and export the audit log.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (one object per row) instead of a table.")]


@contextmanager
def _admin_session() -> Iterator[Session]:
    """A migrated database and one transaction; a GatewayError becomes a message and exit code 1."""
    url = get_settings().database_url
    try:
        migrations.upgrade(url)
        with session_scope(get_engine(url)) as session:
            yield session
    except GatewayError as exc:
        err_console.print(f"error: {exc.message}", markup=False, highlight=False, style="red", soft_wrap=True)
        raise typer.Exit(1) from None


def _auth_epoch() -> store.AuthEpoch:
    """Where revocations are announced to every api process (their key caches)."""
    settings = get_settings()
    return store.AuthEpoch(sync_redis(settings.redis_url), Keys(settings.key_prefix))


def _actor() -> str:
    """Who ran the command, for the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container's anonymous uid)
        return "cli"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _print_json(rows: list[dict[str, Any]]) -> None:
    """Plain JSON on stdout, for scripts (no table, no colour)."""
    print(json.dumps(rows, indent=2))


def migrate() -> None:
    """Create or upgrade the database schema (safe to run again; safe to run from several processes)."""
    url = get_settings().database_url
    revision = migrations.upgrade(url)
    console.print(f"database at revision [bold]{revision}[/bold] ({_redacted(url)})")


def _redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@tenants_app.command("create")
def tenants_create(
    tenant_id: str = typer.Argument(..., help="Slug: lowercase letters, digits, '-' and '_'."),
    name: str | None = typer.Option(None, help="Display name (defaults to the id)."),
) -> None:
    """Create a tenant."""
    with _admin_session() as session:
        tenant = store.create_tenant(session, tenant_id, name)
        audit.record_admin(session, tenant.id, "tenant.create", _actor(), name=tenant.name)
    console.print(f"created tenant [bold]{tenant.id}[/bold]; give it a key with:")
    console.print(f"  gateway keys create --tenant {tenant.id}")


@tenants_app.command("list")
def tenants_list(as_json: JsonOpt = False) -> None:
    """List tenants with their number of active keys."""
    with _admin_session() as session:
        tenants = store.list_tenants(session)
        active = {t.id: sum(k.revoked_at is None for k in t.keys) for t in tenants}
    if as_json:
        _print_json([{"id": t.id, "name": t.name, "disabled": t.disabled, "active_keys": active[t.id],
                      "created_at": _iso(t.created_at)} for t in tenants])
        return
    table = Table("id", "name", "status", "active keys", "created")
    for t in tenants:
        status = "disabled" if t.disabled else "active"
        table.add_row(t.id, t.name, status, str(active[t.id]), _when(t.created_at))
    console.print(table)


@tenants_app.command("disable")
def tenants_disable(tenant_id: str) -> None:
    """Refuse every call of the tenant at once and cancel its queued jobs (its keys stay, `enable` restores them)."""
    with _admin_session() as session:
        store.set_tenant_disabled(session, tenant_id, _auth_epoch(), True)
        audit.record_admin(session, tenant_id, "tenant.disable", _actor())
    console.print(f"tenant [bold]{tenant_id}[/bold] disabled")


@tenants_app.command("enable")
def tenants_enable(tenant_id: str) -> None:
    """Accept the tenant's calls again."""
    with _admin_session() as session:
        store.set_tenant_disabled(session, tenant_id, _auth_epoch(), False)
        audit.record_admin(session, tenant_id, "tenant.enable", _actor())
    console.print(f"tenant [bold]{tenant_id}[/bold] enabled")


@keys_app.command("create")
def keys_create(
    tenant: str = typer.Option(..., "--tenant", "-t", help="The tenant the key authenticates as."),
    name: str = typer.Option("default", "--name", "-n", help="A label to recognise the key by."),
    max_lane: str | None = typer.Option(None, "--max-lane", help="The highest-priority lane the key may use "
                                        "(interactive, standard, batch); default: whatever its tenant may."),
    allow_models: str | None = typer.Option(None, "--allow-models", help="Comma-separated deployments or models "
                                            "the key's jobs may use, and nothing else (pins it to them)."),
    deny_models: str | None = typer.Option(None, "--deny-models", help="Comma-separated deployments or models "
                                           "the key's jobs may never use."),
) -> None:
    """Create an API key and print it once."""
    models = _models_policy(allow_models, deny_models)
    with _admin_session() as session:
        key, plaintext = store.create_key(session, tenant, name, max_lane=max_lane, models=models)
        audit.record_admin(session, key.tenant_id, "key.create", _actor(), key_id=key.id, prefix=key.prefix,
                           name=key.name, max_lane=key.max_lane, models=key.models)
    console.print(f"API key {key.id} ({key.name}) for tenant [bold]{key.tenant_id}[/bold]:")
    print(plaintext)  # plain stdout, no wrapping or markup, so scripts can capture it
    err_console.print(
        "[yellow]This key is shown only once: store it now. The gateway keeps only its hash.[/yellow]"
    )


def _models_policy(allow: str | None, deny: str | None) -> dict[str, Any] | None:
    """``--allow-models``/``--deny-models`` as a key's models policy; names the config does not know are refused."""
    if allow is None and deny is None:
        return None
    settings = get_settings()
    known = {d.name for d in settings.deployments} | {d.model for d in settings.deployments}
    lists = {flag: [n.strip() for n in (value or "").split(",") if n.strip()]
             for flag, value in (("--allow-models", allow), ("--deny-models", deny))}
    for flag, names in lists.items():
        unknown = [n for n in names if n not in known]
        if unknown:
            raise typer.BadParameter(f"{flag}: unknown deployments or models {unknown}; known: {sorted(known)}")
    return {"allow": lists["--allow-models"] if allow is not None else None, "deny": lists["--deny-models"]}


@keys_app.command("list")
def keys_list(
    tenant: str | None = typer.Option(None, "--tenant", "-t", help="Only this tenant's keys."),
    as_json: JsonOpt = False,
) -> None:
    """List keys by id and prefix (never the key itself)."""
    with _admin_session() as session:
        keys = store.list_keys(session, tenant)
    if as_json:
        _print_json([{"id": k.id, "tenant": k.tenant_id, "name": k.name, "prefix": k.prefix, "max_lane": k.max_lane,
                      "models": k.models, "created_at": _iso(k.created_at), "revoked_at": _iso(k.revoked_at)}
                     for k in keys])
        return
    table = Table("id", "tenant", "name", "prefix", "max lane", "models", "created", "revoked")
    for k in keys:
        revoked = _when(k.revoked_at)
        table.add_row(str(k.id), k.tenant_id, k.name, k.prefix + "…", k.max_lane or "(tenant's)",
                      _describe_models(k.models), _when(k.created_at), revoked)
    console.print(table)


def _describe_models(models: dict[str, Any] | None) -> str:
    if not models:
        return "(tenant's)"
    parts = [f"only {', '.join(models['allow'])}"] if models.get("allow") is not None else []
    parts += [f"not {', '.join(models['deny'])}"] if models.get("deny") else []
    return "; ".join(parts) or "(tenant's)"


@keys_app.command("revoke")
def keys_revoke(key: str = typer.Argument(..., metavar="KEY_ID_OR_PREFIX")) -> None:
    """Revoke a key by id or displayed prefix: it fails authentication from now on; its queued jobs are cancelled."""
    with _admin_session() as session:
        revoked = store.revoke_key(session, key, _auth_epoch())
        audit.record_admin(session, revoked.tenant_id, "key.revoke", _actor(), key_id=revoked.id,
                           prefix=revoked.prefix)
    console.print(f"revoked API key {revoked.id} ({revoked.prefix}…) of tenant {revoked.tenant_id}")


@audit_app.command("verify")
def audit_verify(tenant: str | None = typer.Option(None, "--tenant", "-t", help="Only this tenant's chain.")) -> None:
    """Check every tenant's hash chain (or one's): exit 1 and list the records that were changed, removed or added."""
    url = get_settings().database_url
    migrations.upgrade(url)
    found = audit.verify(get_engine(url), tenant)
    for name, count in sorted(found.records.items()):
        console.print(f"tenant [bold]{name}[/bold]: {count} records, head {found.heads[name]}")
    if found.unsealed:
        console.print(f"{found.unsealed} records not sealed yet (the leading scheduler seals them within seconds)")
    for problem in found.problems:
        err_console.print(f"[red]tampered:[/red] {problem}", soft_wrap=True)
    if not found.ok:
        raise typer.Exit(1)
    console.print("[green]every chain verifies[/green]")


@audit_app.command("export")
def audit_export(
    tenant: str | None = typer.Option(None, "--tenant", "-t", help="Only this tenant's records."),
    feature: str | None = typer.Option(None, "--feature", "-f"),
    since: datetime | None = typer.Option(None, "--from", help="Records at or after this time (ISO 8601)."),
    until: datetime | None = typer.Option(None, "--to", help="Records before this time (ISO 8601)."),
) -> None:
    """Write the audit records as JSON lines to stdout, oldest first."""
    url = get_settings().database_url
    migrations.upgrade(url)
    after = 0
    while True:
        with session_scope(get_engine(url), readonly=True) as db:
            page = audit.query(db, tenant=tenant, feature=feature, since=since, until=until, after_id=after,
                               limit=audit.BATCH_ROWS)
        for record in page:
            sys.stdout.buffer.write(orjson.dumps(record) + b"\n")
        if len(page) < audit.BATCH_ROWS:
            return
        after = page[-1]["id"]


@cache_app.command("purge")
def cache_purge(
    tenant: str = typer.Option(..., "--tenant", "-t", help="The tenant whose cached answers go."),
    feature: str | None = typer.Option(None, "--feature", "-f", help="Only the answers this feature stored."),
) -> None:
    """Delete a tenant's cached answers (exact and semantic), or one feature's; every api stops serving them at once."""
    from shared.cache.store import ResponseCache

    if not store.TENANT_ID_PATTERN.fullmatch(tenant):
        err_console.print(f"[red]error:[/red] {tenant!r} is not a tenant id (lowercase letters, digits, '-', '_')")
        raise typer.Exit(1)
    settings = get_settings()
    cache = ResponseCache.from_settings(settings, Keys(settings.key_prefix), sync_redis(settings.redis_url))
    purged = cache.purge(tenant, feature.lower() if feature else None)
    where = f"tenant {tenant}" + (f", feature {feature.lower()}" if feature else "")
    console.print(f"purged {purged['exact']} exact entries and {purged['semantic_scopes']} semantic scopes of {where}")
