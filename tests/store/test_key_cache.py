"""The api's key cache: trusted only under the auth epoch that revocations and disables replace."""

from __future__ import annotations

import pytest
import redis

from shared.config import get_settings
from shared.db import tenants
from shared.keys import Keys
from tests.conftest import EPOCH
from tests.store.conftest import Scope


@pytest.fixture
def epoch() -> redis.Redis:
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    return lambda: client.get(Keys(settings.key_prefix).auth_epoch)  # type: ignore[return-value]


ACME = tenants.Identity("acme", 1)


def test_revoking_a_key_replaces_the_epoch_once_committed(scope: Scope, two_tenants: tuple[str, str],
                                                          epoch: object) -> None:
    with scope() as s:
        key, _ = tenants.create_key(s, "acme")
    before = epoch()  # type: ignore[operator]
    with scope() as s:
        tenants.revoke_key(s, str(key.id), EPOCH)
        assert epoch() == before  # type: ignore[operator]  # not before the commit: an api could re-cache
    assert epoch() != before  # type: ignore[operator]


def test_disabling_a_tenant_replaces_the_epoch_and_a_rollback_does_not(scope: Scope, two_tenants: tuple[str, str],
                                                                       epoch: object) -> None:
    before = epoch()  # type: ignore[operator]
    with pytest.raises(RuntimeError), scope() as s:
        tenants.set_tenant_disabled(s, "acme", EPOCH)
        raise RuntimeError("rolled back")
    assert epoch() == before  # type: ignore[operator]
    with scope() as s:
        tenants.set_tenant_disabled(s, "acme", EPOCH)
    assert epoch() != before  # type: ignore[operator]


def test_the_cache_answers_only_under_the_epoch_it_was_filled_in() -> None:
    cache = tenants.KeyCache()
    digest = tenants.hash_key("gw-secret")
    assert cache.identity(digest, "e1") is None
    cache.remember(digest, ACME, "e1")
    assert cache.identity(digest, "e1") == ACME
    assert cache.peek(digest) == (ACME, "e1")
    assert cache.identity(digest, "e2") is None  # something was revoked since: ask the store


def test_the_cache_forgets_after_its_ttl() -> None:
    cache = tenants.KeyCache(ttl_s=0.0)
    digest = tenants.hash_key("gw-secret")
    cache.remember(digest, ACME, "e1")
    assert cache.identity(digest, "e1") is None
    assert cache.peek(digest) is None
