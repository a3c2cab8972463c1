"""The admin commands as an operator runs them, against a SQLite file named by GATEWAY_DATABASE_URL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import typer
from typer.testing import CliRunner

from cli.admin import audit_app, keys_app, migrate, tenants_app
from shared.config import get_settings
from shared.db import migrate as migrations
from shared.db import tenants
from shared.db.session import get_engine, session_scope
from shared.errors import AuthError

app = typer.Typer()
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.command("migrate")(migrate)
runner = CliRunner()


@pytest.fixture
def database_url(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path}/var/gateway.db"
    monkeypatch.setenv("GATEWAY_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_engine(url).dispose()
    get_settings.cache_clear()


def gateway(*args: str, ok: bool = True) -> str:
    result = runner.invoke(app, list(args))
    assert (result.exit_code == 0) is ok, result.output
    return result.output


def test_migrate_creates_the_schema(database_url: str) -> None:
    assert migrations.head_revision() in gateway("migrate")
    assert migrations.current_revision(database_url) == migrations.head_revision()
    assert migrations.head_revision() in gateway("migrate")


def test_tenant_and_key_lifecycle(database_url: str) -> None:
    gateway("tenants", "create", "acme", "--name", "Acme Corp")
    assert "already exists" in gateway("tenants", "create", "acme", ok=False)
    assert "invalid tenant id" in gateway("tenants", "create", "Not A Slug", ok=False)
    listing = gateway("tenants", "list")
    assert "acme" in listing and "Acme Corp" in listing

    result = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--name", "ci"])
    assert result.exit_code == 0, result.output
    plaintext = next(line for line in result.stdout.splitlines() if line.startswith("gw-"))
    assert "shown only once" in result.stderr
    with session_scope(get_engine(database_url), readonly=True) as s:
        assert tenants.authenticate(s, plaintext).tenant == "acme"

    listing = gateway("keys", "list", "--tenant", "acme")
    assert "ci" in listing and plaintext not in listing

    assert "revoked API key key_" in gateway("keys", "revoke", plaintext[:12])
    with pytest.raises(AuthError, match="revoked"), session_scope(get_engine(database_url), readonly=True) as s:
        tenants.authenticate(s, plaintext)


def test_key_for_unknown_tenant_fails_with_advice(database_url: str) -> None:
    assert "gateway tenants create" in gateway("keys", "create", "--tenant", "nobody", ok=False)
    assert "no API key" in gateway("keys", "revoke", "42", ok=False)


def test_disable_and_enable_tenant(database_url: str) -> None:
    gateway("tenants", "create", "globex")
    gateway("tenants", "disable", "globex")
    assert "disabled" in gateway("tenants", "list")
    gateway("tenants", "enable", "globex")
    assert "active" in gateway("tenants", "list")


def test_every_admin_action_is_in_the_audit_log_and_its_chain_verifies(database_url: str) -> None:
    from shared.db import audit

    gateway("tenants", "create", "hooli")
    key = gateway("keys", "create", "--tenant", "hooli").splitlines()[-1]
    gateway("keys", "revoke", key[:12])
    gateway("tenants", "disable", "hooli")
    gateway("tenants", "enable", "hooli")
    engine = get_engine(database_url)
    with session_scope(engine, readonly=True) as db:
        records = audit.query(db, tenant="hooli")
    assert [r["action"] for r in records] == ["tenant.create", "key.create", "key.revoke", "tenant.disable",
                                              "tenant.enable"]
    assert all(r["kind"] == "admin" and r["actor"].startswith("cli") for r in records)
    assert records[1]["key_id"] == records[2]["key_id"] and key not in str(records)  # never the key itself
    assert "records not sealed yet" in gateway("audit", "verify")
    audit.seal(engine)
    assert "every chain verifies" in gateway("audit", "verify", "--tenant", "hooli")
    exported = gateway("audit", "export", "--tenant", "hooli").splitlines()
    assert len(exported) == 5 and all('"tenant_id":"hooli"' in line for line in exported)


def test_list_verbs_print_json_for_scripts(database_url: str) -> None:
    import json

    gateway("tenants", "create", "acme")
    gateway("keys", "create", "--tenant", "acme", "--name", "ci")
    tenants_json = json.loads(gateway("tenants", "list", "--json"))
    assert tenants_json == [{"id": "acme", "name": "acme", "disabled": False, "active_keys": 1,
                             "created_at": tenants_json[0]["created_at"]}]
    keys_json = json.loads(gateway("keys", "list", "--json", "--tenant", "acme"))
    assert [(k["tenant"], k["name"], k["revoked_at"]) for k in keys_json] == [("acme", "ci", None)]
    assert keys_json[0]["prefix"].startswith("gw-")


def test_a_key_may_be_pinned_to_models_or_kept_from_them(database_url: str) -> None:
    gateway("migrate")
    gateway("tenants", "create", "acme")
    result = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--allow-models", "gpt-4o-mini, fast@nowhere"])
    assert result.exit_code != 0 and "unknown deployments or models" in result.output
    assert "fast@nowhere" in result.output
    result = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--deny-models", "claude-haiku@sim"])
    plaintext = next(line for line in result.stdout.splitlines() if line.startswith("gw-"))
    with session_scope(get_engine(database_url), readonly=True) as s:
        identity = tenants.authenticate(s, plaintext)
    assert (identity.allow_models, identity.deny_models) == (None, ("claude-haiku@sim",))
    import json

    listed = json.loads(gateway("keys", "list", "--json", "--tenant", "acme"))
    assert [k["models"] for k in listed] == [{"allow": None, "deny": ["claude-haiku@sim"]}]
