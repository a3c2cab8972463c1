"""`gateway migrate`, `gateway tenants ...`, `gateway keys ...`, `gateway audit ...` and `gateway cache purge`:
the admin commands.

Each change to tenants and keys goes through ``shared.management``, the code ``/v1/admin/*`` runs: the
same checks, an audit record (who: the login name, via the CLI; in ``admin_actions`` and in the tenant's
hash-chained audit log) and a new auth epoch, so every api, scheduler and worker sees the change. Each
command brings the schema up to date first (an idempotent upgrade), so a fresh machine needs no separate
migration step before creating its first tenant.
"""

from __future__ import annotations

import getpass
import json
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, TypeVar

import orjson
import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from shared import management
from shared.config import get_settings
from shared.db import audit
from shared.db import migrate as migrations
from shared.db import tenants as store
from shared.db.models import utcnow
from shared.db.session import get_engine, session_scope
from shared.errors import GatewayError, InvalidRequest
from shared.keys import Keys
from shared.management import Actor, KeyCreate, KeySettings, TenantCreate, TenantUpdate
from shared.redis_conn import sync_redis
from shared.usage_report import parse_since

tenants_app = typer.Typer(help="Create, list, change, disable and enable tenants.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list, change, rotate and revoke API keys (hashed; shown once).",
                       no_args_is_help=True)
cache_app = typer.Typer(help="Purge cached answers.", no_args_is_help=True)
audit_app = typer.Typer(help="Verify and export the audit log; list the operators' changes.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (one object per row) instead of a table.")]
M = TypeVar("M", bound=BaseModel)


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
    """Where changes are announced to every api process (their key caches) and every other process."""
    settings = get_settings()
    return store.AuthEpoch(sync_redis(settings.redis_url), Keys(settings.key_prefix))


def _actor() -> Actor:
    """Who ran the command, for the audit trail."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name (a container's anonymous uid)
        user = "cli"
    return Actor(user, f"cli {user}@{socket.gethostname()}")


def _body(model: type[M], data: dict[str, Any]) -> M:
    """The options as the api's request body, checked by the same model (an error names the option)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidRequest(f"{where}: {err['msg']}", param=where) from None


def _when(moment: datetime | str | None) -> str:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
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


# -- options shared by tenants and keys -----------------------------------------------------------

DailyOpt = typer.Option(None, "--daily-usd", help="dollar budget per day (billing.timezone)")
MonthlyOpt = typer.Option(None, "--monthly-usd", help="dollar budget per month")
EnforceOpt = typer.Option(None, "--budget-enforce", help="hard (refuse what could cross it) or soft (alerts only)")
AlertOpt = typer.Option(None, "--alert-at", help="shares of the budget that alert, e.g. 0.5,0.8,1")
ClearOpt = typer.Option(None, "--clear", help="a field to clear (back to the file's value / no limit); repeatable")


def _budget(current: dict[str, Any] | None, daily: float | None, monthly: float | None, enforce: str | None,
            alert_at: str | None) -> dict[str, Any] | None:
    """The budget options over the budget already set (an option not given keeps its value)."""
    given = {"daily_usd": daily, "monthly_usd": monthly, "enforce": enforce,
             "alert_at": [float(x) for x in alert_at.split(",")] if alert_at else None}
    changes = {k: v for k, v in given.items() if v is not None}
    return {**(current or {}), **changes} if changes else None


def _given(**options: Any) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


# -- tenants --------------------------------------------------------------------------------------


@tenants_app.command("create")
def tenants_create(
    tenant_id: str = typer.Argument(..., help="Slug: lowercase letters, digits, '-' and '_'."),
    name: str | None = typer.Option(None, help="Display name (defaults to the id)."),
    weight: float | None = typer.Option(None, help="fair share against other tenants"),
    hard_tpm: int | None = typer.Option(None, "--hard-tpm"),
    soft_tpm: int | None = typer.Option(None, "--soft-tpm"),
    max_lane: str | None = typer.Option(None, "--max-lane"),
    daily_usd: float | None = DailyOpt, monthly_usd: float | None = MonthlyOpt,
    budget_enforce: str | None = EnforceOpt, alert_at: str | None = AlertOpt,
) -> None:
    """Create a tenant (its settings: the config file's, or tenant_defaults, with these over them)."""
    data = _given(id=tenant_id, name=name, weight=weight, hard_tpm=hard_tpm, soft_tpm=soft_tpm, max_lane=max_lane,
                  budget=_budget(None, daily_usd, monthly_usd, budget_enforce, alert_at))
    with _admin_session() as session:
        view = management.create_tenant(session, get_settings().tenant, _auth_epoch(), _actor(),
                                        _body(TenantCreate, data))
    console.print(f"created tenant [bold]{view['id']}[/bold]; give it a key with:")
    console.print(f"  gateway keys create --tenant {view['id']}")


@tenants_app.command("update")
def tenants_update(
    tenant_id: str,
    name: str | None = typer.Option(None),
    weight: float | None = typer.Option(None),
    hard_tpm: int | None = typer.Option(None, "--hard-tpm"),
    soft_tpm: int | None = typer.Option(None, "--soft-tpm"),
    max_lane: str | None = typer.Option(None, "--max-lane"),
    daily_usd: float | None = DailyOpt, monthly_usd: float | None = MonthlyOpt,
    budget_enforce: str | None = EnforceOpt, alert_at: str | None = AlertOpt,
    feature: str | None = typer.Option(None, help="apply --hard-tpm, --lane and the budget options to this "
                                                  "feature of the tenant"),
    lane: str | None = typer.Option(None, help="the lane the --feature always runs in"),
    clear: list[str] | None = ClearOpt,
) -> None:
    """Change a tenant's settings over the config file (weight, limits, lanes, dollar budgets)."""
    settings, epoch = get_settings(), _auth_epoch()
    with _admin_session() as session:
        current = store.get_tenant(session, tenant_id).settings or {}
        if feature is not None:
            feature_now = (current.get("features") or {}).get(feature.lower(), {})
            changes = _given(hard_tpm=hard_tpm, lane=lane,
                             budget=_budget(feature_now.get("budget"), daily_usd, monthly_usd, budget_enforce,
                                            alert_at))
            data: dict[str, Any] = _given(name=name, weight=weight, soft_tpm=soft_tpm, max_lane=max_lane,
                                          features={feature: changes})
        else:
            data = _given(name=name, weight=weight, hard_tpm=hard_tpm, soft_tpm=soft_tpm, max_lane=max_lane,
                          budget=_budget(current.get("budget"), daily_usd, monthly_usd, budget_enforce, alert_at))
        data.update(dict.fromkeys(clear or [], None))
        view = management.update_tenant(session, settings.tenant, epoch, _actor(), tenant_id, _body(TenantUpdate, data))
    console.print(f"tenant [bold]{tenant_id}[/bold] now: {view['settings']}")


@tenants_app.command("list")
def tenants_list(as_json: JsonOpt = False) -> None:
    """List tenants with their number of active keys and their settings set over the file."""
    with _admin_session() as session:
        views = management.list_tenants(session, get_settings().tenant)
    if as_json:
        _print_json([{"id": t["id"], "name": t["name"], "disabled": t["disabled"], "active_keys": t["active_keys"],
                      "created_at": t["created_at"]} for t in views])
        return
    table = Table("id", "name", "status", "active keys", "created", "set here")
    for t in views:
        table.add_row(t["id"], t["name"], "disabled" if t["disabled"] else "active", str(t["active_keys"]),
                      _when(t["created_at"]), str(t["overrides"] or "-"))
    console.print(table)


@tenants_app.command("disable")
def tenants_disable(tenant_id: str) -> None:
    """Refuse every call of the tenant at once and cancel its queued jobs (its keys stay, `enable` restores them)."""
    with _admin_session() as session:
        management.set_tenant_disabled(session, get_settings().tenant, _auth_epoch(), _actor(), tenant_id, True)
    console.print(f"tenant [bold]{tenant_id}[/bold] disabled")


@tenants_app.command("enable")
def tenants_enable(tenant_id: str) -> None:
    """Accept the tenant's calls again."""
    with _admin_session() as session:
        management.set_tenant_disabled(session, get_settings().tenant, _auth_epoch(), _actor(), tenant_id, False)
    console.print(f"tenant [bold]{tenant_id}[/bold] enabled")


# -- keys -----------------------------------------------------------------------------------------


def _expiry(value: str | None) -> str | None:
    """``--expires``: an ISO 8601 time, or how long from now (30d, 12h)."""
    if value is None:
        return None
    now = utcnow()
    try:
        ago = parse_since(value, now)
    except GatewayError:
        return value  # an ISO 8601 time: the model checks it
    return (now + (now - ago)).isoformat()


def _key_options(name: str | None, max_lane: str | None, rpm: int | None, tpm: int | None, expires: str | None,
                 allow_model: list[str] | None, allow_feature: list[str] | None) -> dict[str, Any]:
    return _given(name=name, max_lane=max_lane, rpm=rpm, tpm=tpm, expires_at=_expiry(expires),
                  allowed_models=allow_model or None, allowed_features=allow_feature or None)


ExpiresOpt = typer.Option(None, "--expires", help="when the key stops working: ISO 8601 time, or 30d, 12h ...")
ModelOpt = typer.Option(None, "--allow-model", help="a model the key may use (repeat; default: any)")
FeatureOpt = typer.Option(None, "--allow-feature", help="a feature the key may be used for (repeat; default: any)")


@keys_app.command("create")
def keys_create(
    tenant: str = typer.Option(..., "--tenant", "-t", help="The tenant the key authenticates as."),
    name: str = typer.Option("default", "--name", "-n", help="A label to recognise the key by."),
    max_lane: str | None = typer.Option(None, "--max-lane", help="The highest-priority lane the key may use "
                                        "(interactive, standard, batch); default: whatever its tenant may."),
    rpm: int | None = typer.Option(None, help="the key's own requests per minute"),
    tpm: int | None = typer.Option(None, help="the key's own tokens per minute"),
    daily_usd: float | None = DailyOpt, monthly_usd: float | None = MonthlyOpt,
    budget_enforce: str | None = EnforceOpt, alert_at: str | None = AlertOpt,
    expires: str | None = ExpiresOpt, allow_model: list[str] | None = ModelOpt,
    allow_feature: list[str] | None = FeatureOpt,
    allow_models: str | None = typer.Option(None, "--allow-models", help="Comma-separated deployments or models "
                                            "the key's jobs may be routed to, and nothing else (pins it to them)."),
    deny_models: str | None = typer.Option(None, "--deny-models", help="Comma-separated deployments or models "
                                           "the key's jobs may never be routed to."),
) -> None:
    """Create an API key and print it once."""
    data = {"tenant": tenant, **_key_options(name, max_lane, rpm, tpm, expires, allow_model, allow_feature),
            **_given(budget=_budget(None, daily_usd, monthly_usd, budget_enforce, alert_at),
                     models=_models_policy(allow_models, deny_models))}
    settings = get_settings()
    with _admin_session() as session:
        view, plaintext = management.create_key(session, settings, _auth_epoch(), _actor(), _body(KeyCreate, data))
    console.print(f"API key {view['id']} ({view['name']}) for tenant [bold]{view['tenant']}[/bold]:")
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


@keys_app.command("update")
def keys_update(
    key: str = typer.Argument(..., metavar="KEY", help="the key's id (key_...), number or prefix"),
    name: str | None = typer.Option(None, "--name", "-n"),
    max_lane: str | None = typer.Option(None, "--max-lane"),
    rpm: int | None = typer.Option(None), tpm: int | None = typer.Option(None),
    daily_usd: float | None = DailyOpt, monthly_usd: float | None = MonthlyOpt,
    budget_enforce: str | None = EnforceOpt, alert_at: str | None = AlertOpt,
    expires: str | None = ExpiresOpt, allow_model: list[str] | None = ModelOpt,
    allow_feature: list[str] | None = FeatureOpt, clear: list[str] | None = ClearOpt,
) -> None:
    """Change a key's limits, budget, expiry, models or features."""
    settings = get_settings()
    with _admin_session() as session:
        current = store.find_key(session, key)
        data = {**_key_options(name, max_lane, rpm, tpm, expires, allow_model, allow_feature),
                **_given(budget=_budget(current.budget, daily_usd, monthly_usd, budget_enforce, alert_at)),
                **dict.fromkeys(clear or [], None)}
        view = management.update_key(session, settings, _auth_epoch(), _actor(), key, _body(KeySettings, data))
    console.print(f"API key {view['id']} of tenant {view['tenant']} now: rpm {view['rpm']}, tpm {view['tpm']}, "
                  f"budget {view['budget']}, expires {view['expires_at']}")


@keys_app.command("list")
def keys_list(
    tenant: str | None = typer.Option(None, "--tenant", "-t", help="Only this tenant's keys."),
    as_json: JsonOpt = False,
) -> None:
    """List keys by id and prefix (never the key itself)."""
    with _admin_session() as session:
        views = management.list_keys(session, tenant)
    if as_json:
        _print_json(views)
        return
    table = Table("id", "tenant", "name", "prefix", "status", "max lane", "rpm", "tpm", "budget", "models",
                  "expires", "created", "revoked")
    for k in views:
        table.add_row(k["id"], k["tenant"], k["name"], k["prefix"] + "…", k["status"], k["max_lane"] or "(tenant's)",
                      str(k["rpm"] or "-"), str(k["tpm"] or "-"), str(k["budget"] or "-"),
                      _describe_models(k["models"]), _when(k["expires_at"]), _when(k["created_at"]),
                      _when(k["revoked_at"]))
    console.print(table)


@keys_app.command("rotate")
def keys_rotate(key: str = typer.Argument(..., metavar="KEY", help="the key's id (key_...), number or prefix")) -> None:
    """Give a key a new secret and print it once: the old secret fails from now on; the key keeps its id,
    limits, budget and usage history."""
    with _admin_session() as session:
        view, plaintext = management.rotate_key(session, _auth_epoch(), _actor(), key)
    console.print(f"API key {view['id']} of tenant [bold]{view['tenant']}[/bold], new secret:")
    print(plaintext)
    err_console.print("[yellow]This key is shown only once: store it now.[/yellow]")


@keys_app.command("revoke")
def keys_revoke(key: str = typer.Argument(..., metavar="KEY", help="the key's id (key_...), number or prefix")) -> None:
    """Revoke a key: it fails authentication from now on; its queued jobs are cancelled."""
    with _admin_session() as session:
        view = management.revoke_key(session, _auth_epoch(), _actor(), key)
    console.print(f"revoked API key {view['id']} ({view['prefix']}…) of tenant {view['tenant']}")


@audit_app.command("actions")
def audit_actions(
    target: str | None = typer.Option(None, help="only changes to this tenant:<id> or key:<id>"),
    since: str = typer.Option("30d", help="how far back"),
    limit: int = typer.Option(100, help="at most this many, newest first"),
) -> None:
    """What the operators changed: who, what, when (the api's and the CLI's changes alike)."""
    with _admin_session() as session:
        actions = management.list_actions(session, target=target, limit=limit)
        oldest = parse_since(since, utcnow())
    table = Table("at", "actor", "via", "action", "target", "details")
    for a in actions:
        if a["at"] and datetime.fromisoformat(a["at"]) < oldest:
            continue
        table.add_row(_when(a["at"]), a["actor"], a["via"], a["action"], a["target"], str(a["details"] or ""))
    console.print(table)


def _describe_models(models: dict[str, Any] | None) -> str:
    if not models:
        return "(tenant's)"
    parts = [f"only {', '.join(models['allow'])}"] if models.get("allow") is not None else []
    parts += [f"not {', '.join(models['deny'])}"] if models.get("deny") else []
    return "; ".join(parts) or "(tenant's)"


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
