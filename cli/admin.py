"""`gateway migrate`, `gateway tenants ...`, `gateway keys ...` and `gateway cache purge`: admin commands.

Each command brings the schema up to date first (an idempotent upgrade), so a fresh machine needs
no separate migration step before creating its first tenant.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from shared.config import get_settings
from shared.db import migrate as migrations
from shared.db import tenants as store
from shared.db.session import get_engine, session_scope
from shared.errors import GatewayError
from shared.keys import Keys
from shared.redis_conn import sync_redis

tenants_app = typer.Typer(help="Create, list and disable tenants.", no_args_is_help=True)
cache_app = typer.Typer(help="Purge cached answers.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys (hashed; shown once).", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


@contextmanager
def _admin_session() -> Iterator[Session]:
    """A migrated database and one transaction; a GatewayError becomes a message and exit code 1."""
    url = get_settings().database_url
    try:
        migrations.upgrade(url)
        with session_scope(get_engine(url)) as session:
            yield session
    except GatewayError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None


def _auth_epoch() -> store.AuthEpoch:
    """Where revocations are announced to every api process (their key caches)."""
    settings = get_settings()
    return store.AuthEpoch(sync_redis(settings.redis_url), Keys(settings.key_prefix))


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


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
    console.print(f"created tenant [bold]{tenant.id}[/bold]; give it a key with:")
    console.print(f"  gateway keys create --tenant {tenant.id}")


@tenants_app.command("list")
def tenants_list() -> None:
    """List tenants with their number of active keys."""
    with _admin_session() as session:
        tenants = store.list_tenants(session)
        active = {t.id: sum(k.revoked_at is None for k in t.keys) for t in tenants}
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
    console.print(f"tenant [bold]{tenant_id}[/bold] disabled")


@tenants_app.command("enable")
def tenants_enable(tenant_id: str) -> None:
    """Accept the tenant's calls again."""
    with _admin_session() as session:
        store.set_tenant_disabled(session, tenant_id, _auth_epoch(), False)
    console.print(f"tenant [bold]{tenant_id}[/bold] enabled")


@keys_app.command("create")
def keys_create(
    tenant: str = typer.Option(..., "--tenant", "-t", help="The tenant the key authenticates as."),
    name: str = typer.Option("default", "--name", "-n", help="A label to recognise the key by."),
    max_lane: str | None = typer.Option(None, "--max-lane", help="The highest-priority lane the key may use "
                                        "(interactive, standard, batch); default: whatever its tenant may."),
) -> None:
    """Create an API key and print it once."""
    with _admin_session() as session:
        key, plaintext = store.create_key(session, tenant, name, max_lane=max_lane)
    console.print(f"API key {key.id} ({key.name}) for tenant [bold]{key.tenant_id}[/bold]:")
    print(plaintext)  # plain stdout, no wrapping or markup, so scripts can capture it
    err_console.print(
        "[yellow]This key is shown only once: store it now. The gateway keeps only its hash.[/yellow]"
    )


@keys_app.command("list")
def keys_list(
    tenant: str | None = typer.Option(None, "--tenant", "-t", help="Only this tenant's keys."),
) -> None:
    """List keys by id and prefix (never the key itself)."""
    with _admin_session() as session:
        keys = store.list_keys(session, tenant)
    table = Table("id", "tenant", "name", "prefix", "max lane", "created", "revoked")
    for k in keys:
        revoked = _when(k.revoked_at)
        table.add_row(str(k.id), k.tenant_id, k.name, k.prefix + "…", k.max_lane or "(tenant's)",
                      _when(k.created_at), revoked)
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key: str = typer.Argument(..., metavar="KEY_ID_OR_PREFIX")) -> None:
    """Revoke a key by id or displayed prefix: it fails authentication from now on; its queued jobs are cancelled."""
    with _admin_session() as session:
        revoked = store.revoke_key(session, key, _auth_epoch())
    console.print(f"revoked API key {revoked.id} ({revoked.prefix}…) of tenant {revoked.tenant_id}")


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
