"""What a process knows of tenants and keys: the config file's tenants with what the management API set over
them, keys' settings by id, re-read when the auth epoch changes; and a budget's spend from the rollups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import Engine

from shared.budget.buckets import Scope
from shared.budget.windows import window_at
from shared.config import Settings
from shared.db import jobs, tenants
from shared.db.models import Tenant
from shared.db.usage import AttemptUsage
from shared.directory import Directory
from shared.keys import Keys
from tests.conftest import REDIS_URL
from tests.store.conftest import Scope as SessionScope
from tests.store.conftest import new_job

pytestmark = pytest.mark.usefixtures("two_tenants")


def _settings() -> Settings:
    return Settings(tenants={"acme": {"weight": 3, "features": {"summarizer": {"lane": "batch"}}}},
                    tenant_defaults={"weight": 1, "hard_tpm": 1000})


def _directory(settings: Settings, engine: Engine) -> Directory:
    return Directory(settings, engine, redis.Redis.from_url(REDIS_URL), Keys("gwdir-unused"))


def _set(scope: SessionScope, tenant_id: str, overrides: dict | None) -> None:
    with scope() as s:
        s.get(Tenant, tenant_id).settings = overrides  # type: ignore[union-attr]


def test_overrides_merge_over_the_file_and_go_when_cleared(scope: SessionScope, engine: Engine) -> None:
    settings = _settings()
    directory = _directory(settings, engine)
    _set(scope, "acme", {"weight": 5, "features": {"summarizer": {"hard_tpm": 10}}})
    _set(scope, "globex", {"budget": {"daily_usd": 2}})
    directory.observe("epoch-1")
    acme, globex = settings.tenant("acme"), settings.tenant("globex")
    assert acme.weight == 5 and acme.features["summarizer"].lane == "batch"
    assert acme.features["summarizer"].hard_tpm == 10
    assert globex.hard_tpm == 1000 and globex.budget is not None and globex.budget.daily_usd == 2
    _set(scope, "acme", None)
    directory.observe("epoch-1")  # the same epoch: nothing re-read
    assert settings.tenant("acme").weight == 5
    directory.observe("epoch-2")
    assert settings.tenant("acme").weight == 3 and settings.tenant("acme").features["summarizer"].hard_tpm is None


def test_keys_are_read_once_per_epoch(scope: SessionScope, engine: Engine) -> None:
    directory = _directory(_settings(), engine)
    with scope() as s:
        key, _ = tenants.create_key(s, "acme")
        key.rpm, key.budget = 30, {"monthly_usd": 9.5}
    directory.observe("e1")
    policy = directory.key(key.id)
    assert policy is not None and (policy.rpm, policy.budget.monthly_usd) == (30, 9.5)  # type: ignore[union-attr]
    with scope() as s:
        tenants.find_key(s, str(key.id)).rpm = 60
    assert directory.key(key.id).rpm == 30  # type: ignore[union-attr]
    directory.observe("e2")
    assert directory.key(key.id).rpm == 60  # type: ignore[union-attr]
    assert directory.key(99_999) is None


def test_a_budget_spent_is_read_from_the_rollups_of_its_window(scope: SessionScope, engine: Engine) -> None:
    settings = _settings()
    directory = _directory(settings, engine)
    with scope() as s:
        job, _ = new_job(s, feature="search", key_id=4)
    with scope() as s:
        jobs.record_attempt(s, job.id, 1, deployment="gpt-4o-mini@sim", status="succeeded", latency_ms=3,
                            tokens_in=1, tokens_out=1, cost_usd=0.75, usage=AttemptUsage(model="gpt-4o-mini"),
                            job_outcome={"status": "succeeded", "cost_usd": 0.75})
    day = window_at("day", datetime.now(UTC), settings.billing.zone)
    for scope_, spent in ((Scope("spend", tenant="acme", window="day"), 0.75),
                          (Scope("spend", tenant="acme", feature="search", window="day"), 0.75),
                          (Scope("spend", tenant="acme", key_id=5, window="day"), 0.0),
                          (Scope("spend", tenant="acme", window="month"), 0.75)):
        end = day.ends_at if scope_.window == "day" else window_at("month", datetime.now(UTC),
                                                                       settings.billing.zone).ends_at
        assert directory.spent_usd(scope_, end) == pytest.approx(spent)
    assert directory.spent_usd(Scope("spend", tenant="acme", window="day"),
                               (day.start - timedelta(seconds=1)).timestamp()) == 0.0  # yesterday
