from __future__ import annotations

import pytest
from sqlalchemy import select

from shared.db import tenants
from shared.db.models import ApiKey
from shared.errors import AuthError, Conflict, InvalidRequest, NotFound
from tests.conftest import EPOCH
from tests.store.conftest import Scope


def test_create_and_list_tenants(scope: Scope) -> None:
    with scope() as s:
        tenants.create_tenant(s, "globex")
        tenants.create_tenant(s, "acme", "Acme Corp")
    with scope(readonly=True) as s:
        listed = tenants.list_tenants(s)
    assert [(t.id, t.name, t.disabled) for t in listed] == [("acme", "Acme Corp", False), ("globex", "globex", False)]
    assert listed[0].created_at.tzinfo is not None


@pytest.mark.parametrize("bad", ["", "Acme", "-acme", "ac me", "a" * 64, "acme!"])
def test_tenant_id_must_be_a_slug(scope: Scope, bad: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid tenant id"), scope() as s:
        tenants.create_tenant(s, bad)


def test_duplicate_tenant_conflicts_and_ensure_is_idempotent(scope: Scope) -> None:
    with scope() as s:
        tenants.create_tenant(s, "acme")
    with pytest.raises(Conflict, match="already exists"), scope() as s:
        tenants.create_tenant(s, "acme")
    with scope() as s:
        assert tenants.ensure_tenant(s, "acme").id == "acme"
        assert tenants.ensure_tenant(s, "initech").id == "initech"
    with scope() as s:
        assert [t.id for t in tenants.list_tenants(s)] == ["acme", "initech"]


def test_key_is_shown_once_and_only_its_hash_is_stored(scope: Scope, two_tenants: tuple[str, str]) -> None:
    with scope() as s:
        key, plaintext = tenants.create_key(s, "acme", "ci")
    assert plaintext.startswith("gw-") and len(plaintext) > 40
    assert key.prefix == plaintext[:12]
    with scope() as s:
        stored = s.scalars(select(ApiKey)).one()
        values = [str(getattr(stored, c.key)) for c in ApiKey.__table__.columns]
    assert plaintext not in values
    assert stored.key_hash == tenants.hash_key(plaintext)


def test_authenticate_maps_key_to_tenant(scope: Scope, two_tenants: tuple[str, str]) -> None:
    with scope() as s:
        _, acme_key = tenants.create_key(s, "acme")
        _, globex_key = tenants.create_key(s, "globex")
    with scope(readonly=True) as s:
        assert tenants.authenticate(s, acme_key).tenant == "acme"
        assert tenants.authenticate(s, globex_key).tenant == "globex"
        with pytest.raises(AuthError, match="invalid API key"):
            tenants.authenticate(s, acme_key + "x")


def test_create_key_for_unknown_tenant_is_not_found(scope: Scope) -> None:
    with pytest.raises(NotFound, match="tenant 'nobody' does not exist"), scope() as s:
        tenants.create_key(s, "nobody")


@pytest.mark.parametrize("by", ["id", "prefix"])
def test_revoked_key_fails_at_once(scope: Scope, two_tenants: tuple[str, str], by: str) -> None:
    with scope() as s:
        key, plaintext = tenants.create_key(s, "acme")
        _, other = tenants.create_key(s, "acme", "other")
    with scope() as s:
        revoked = tenants.revoke_key(s, str(key.id) if by == "id" else key.prefix, EPOCH)
    assert revoked.revoked_at is not None
    with scope(readonly=True) as s:
        with pytest.raises(AuthError, match="API key revoked"):
            tenants.authenticate(s, plaintext)
        assert tenants.authenticate(s, other).tenant == "acme"
    with scope() as s:  # revoking again keeps the first revocation time
        assert tenants.revoke_key(s, key.prefix, EPOCH).revoked_at == revoked.revoked_at


def test_revoke_unknown_key_is_not_found(scope: Scope) -> None:
    with pytest.raises(NotFound, match="no API key"), scope() as s:
        tenants.revoke_key(s, "gw-nothere", EPOCH)


def test_list_keys_by_tenant(scope: Scope, two_tenants: tuple[str, str]) -> None:
    with scope() as s:
        tenants.create_key(s, "acme", "a1")
        tenants.create_key(s, "globex", "g1")
        tenants.create_key(s, "acme", "a2")
    with scope(readonly=True) as s:
        assert [k.name for k in tenants.list_keys(s, "acme")] == ["a1", "a2"]
        assert [k.tenant_id for k in tenants.list_keys(s)] == ["acme", "acme", "globex"]


def test_disabled_tenant_cannot_authenticate(scope: Scope, two_tenants: tuple[str, str]) -> None:
    with scope() as s:
        _, plaintext = tenants.create_key(s, "acme")
        tenants.set_tenant_disabled(s, "acme", EPOCH)
    with pytest.raises(AuthError, match="tenant disabled"), scope(readonly=True) as s:
        tenants.authenticate(s, plaintext)
    with scope() as s:
        tenants.set_tenant_disabled(s, "acme", EPOCH, False)
    with scope(readonly=True) as s:
        assert tenants.authenticate(s, plaintext).tenant == "acme"
