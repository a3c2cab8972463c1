"""Tenants and keys managed through the real api with the operators' key, and through the CLI: every
change takes effect in every process at once, is audited (who, what, when), and bad input is a 400 that
names the field."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis

from shared.db import jobs
from shared.db.session import session_scope
from shared.keys import Keys
from tests.conftest import ADMIN, PREFIX, REDIS_URL, ROOT, Stack, hold_leader_lease, wait_for_status

CHAT = {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
OPERATOR = {**ADMIN, "X-Gateway-Operator": "alice"}


def _admin(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.url, headers=OPERATOR, timeout=30)


def _tenant(prefix: str = "mgmt") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _call(stack: Stack, key: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/chat/completions", json={**CHAT, **headers.pop("body", {})},  # type: ignore
                      headers={"Authorization": f"Bearer {key}", **headers}, timeout=30)


def test_a_tenant_is_created_changed_listed_and_audited(stack: Stack) -> None:
    tenant = _tenant()
    with _admin(stack) as c:
        created = c.post("/v1/admin/tenants", json={"id": tenant, "name": "Mgmt Corp", "weight": 2,
                                                    "budget": {"daily_usd": 5, "monthly_usd": 100}})
        again = c.post("/v1/admin/tenants", json={"id": tenant})
        changed = c.patch(f"/v1/admin/tenants/{tenant}", json={
            "hard_tpm": 50_000, "features": {"Search": {"budget": {"daily_usd": 1}}}, "budget": None})
        listed = c.get("/v1/admin/tenants").json()["data"]
        history = c.get("/v1/admin/actions", params={"target": f"tenant:{tenant}"}).json()["data"]
    assert created.status_code == 201, created.text
    assert created.json()["settings"]["weight"] == 2 and created.json()["settings"]["budget"]["daily_usd"] == 5
    assert again.status_code == 409
    view = changed.json()
    assert view["settings"]["hard_tpm"] == 50_000 and "budget" not in view["settings"]  # null: back to the file's
    assert view["settings"]["features"]["search"]["budget"]["daily_usd"] == 1
    assert view["overrides"] == {"weight": 2, "hard_tpm": 50_000, "features": {"search": {"budget": {
        "daily_usd": 1.0, "enforce": "hard"}}}}
    assert tenant in {t["id"] for t in listed}
    assert [(a["action"], a["actor"], a["via"].split()[0]) for a in history] == [
        ("tenant.update", "alice", "api"), ("tenant.create", "alice", "api")]


@pytest.mark.parametrize(("body", "param"), [
    ({"id": "x-1", "budget": {"daily_usd": -5}}, "budget.daily_usd"),
    ({"id": "x-2", "budget": {"daily_usd": "lots"}}, "budget.daily_usd"),
    ({"id": "x-3", "budget": {"monthly_usd": 0}}, "budget.monthly_usd"),
    ({"id": "x-4", "budget": {"daily_usd": 1, "alert_at": [0.5, 2]}}, "budget.alert_at"),
    ({"id": "x-5", "weight": -1}, "weight"),
    ({"id": "Not A Slug"}, "id"),
    ({"id": "x-6", "colour": "blue"}, "colour"),
])
def test_bad_tenant_settings_are_400s_that_name_the_field(stack: Stack, body: dict[str, Any], param: str) -> None:
    with _admin(stack) as c:
        r = c.post("/v1/admin/tenants", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_a_key_with_limits_models_features_and_lane_is_held_to_them(stack: Stack) -> None:
    tenant = _tenant()
    with _admin(stack) as c:
        assert c.post("/v1/admin/tenants", json={"id": tenant}).status_code == 201
        made = c.post("/v1/admin/keys", json={
            "tenant": tenant, "name": "search-bot", "max_lane": "standard", "rpm": 600, "tpm": 100_000,
            "budget": {"daily_usd": 2.5}, "allowed_models": ["gpt-4o-mini"], "allowed_features": ["Search"]})
    assert made.status_code == 201, made.text
    key = made.json()
    assert key["id"].startswith("key_") and key["key"].startswith("gw-") and key["status"] == "active"
    assert (key["rpm"], key["tpm"], key["budget"]["daily_usd"], key["allowed_features"]) == (600, 100_000, 2.5,
                                                                                             ["search"])
    secret = key["key"]
    ok = _call(stack, secret, **{"X-Gateway-Feature": "search", "X-Gateway-Priority": "standard"})
    wrong_model = _call(stack, secret, body={"model": "claude-haiku-4-5"}, **{"X-Gateway-Feature": "search"})
    wrong_feature = _call(stack, secret, **{"X-Gateway-Feature": "other-thing", "X-Gateway-Priority": "standard"})
    too_high = _call(stack, secret, **{"X-Gateway-Feature": "search", "X-Gateway-Priority": "interactive"})
    assert ok.status_code == 200, ok.text
    assert (wrong_model.status_code, wrong_model.json()["error"]["code"]) == (403, "model_not_allowed")
    assert (wrong_feature.status_code, wrong_feature.json()["error"]["code"]) == (403, "feature_not_allowed")
    assert (too_high.status_code, too_high.json()["error"]["code"]) == (403, "lane_not_allowed")


def test_rotate_keeps_the_key_and_replaces_its_secret_revoke_ends_it(stack: Stack) -> None:
    tenant = _tenant()
    with _admin(stack) as c:
        c.post("/v1/admin/tenants", json={"id": tenant})
        key = c.post("/v1/admin/keys", json={"tenant": tenant}).json()
        assert _call(stack, key["key"]).status_code == 200
        rotated = c.post(f"/v1/admin/keys/{key['id']}/rotate").json()
        old, new = _call(stack, key["key"]), _call(stack, rotated["key"])
        revoked = c.post(f"/v1/admin/keys/{key['id']}/revoke").json()
        after = _call(stack, rotated["key"])
        rotate_revoked = c.post(f"/v1/admin/keys/{key['id']}/rotate")
        missing = c.get("/v1/admin/keys/key_0000000000000000")
    assert rotated["id"] == key["id"] and rotated["key"] != key["key"] and rotated["prefix"] != key["prefix"]
    assert old.status_code == 401 and new.status_code == 200
    assert revoked["status"] == "revoked" and after.status_code == 401
    assert rotate_revoked.status_code == 409 and missing.status_code == 404


def test_an_expired_key_authenticates_no_more(stack: Stack) -> None:
    tenant = _tenant()
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    with _admin(stack) as c:
        c.post("/v1/admin/tenants", json={"id": tenant})
        key = c.post("/v1/admin/keys", json={"tenant": tenant, "expires_at": soon}).json()
        past = c.patch(f"/v1/admin/keys/{key['id']}", json={"expires_at": "2020-01-01T00:00:00Z"})
    assert past.status_code == 400 and past.json()["error"]["param"] == "expires_at"
    assert _call(stack, key["key"]).status_code == 200
    time.sleep(2.2)
    expired = _call(stack, key["key"])
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "expired_api_key"
    listed = httpx.get(f"{stack.url}/v1/admin/keys", params={"tenant": tenant}, headers=ADMIN).json()["data"]
    assert [k["status"] for k in listed] == ["expired"]


def test_disable_and_enable_take_effect_at_once(stack: Stack) -> None:
    tenant = _tenant()
    with _admin(stack) as c:
        c.post("/v1/admin/tenants", json={"id": tenant})
        secret = c.post("/v1/admin/keys", json={"tenant": tenant}).json()["key"]
        assert _call(stack, secret).status_code == 200
        assert c.post(f"/v1/admin/tenants/{tenant}/disable").json()["disabled"] is True
        disabled = _call(stack, secret)
        c.post(f"/v1/admin/tenants/{tenant}/enable")
        enabled = _call(stack, secret)
    assert disabled.status_code == 401 and disabled.json()["error"]["code"] == "tenant_disabled"
    assert enabled.status_code == 200


def test_disabling_a_tenant_drops_its_waiting_jobs_from_the_queues(stack: Stack) -> None:
    """Its queued jobs are cancelled in the store, and the scheduler is told to drop them from its queues'
    heads at once rather than giving them turns at the budget."""
    tenant = _tenant()
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    with _admin(stack) as c:
        c.post("/v1/admin/tenants", json={"id": tenant})
        secret = c.post("/v1/admin/keys", json={"tenant": tenant}).json()["key"]
        with hold_leader_lease():  # the scheduler stands by: the job stays queued
            job = httpx.post(f"{stack.url}/v1/jobs", headers={"Authorization": f"Bearer {secret}"}, timeout=30,
                             json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                                   "priority": "batch"}).json()
            assert c.post(f"/v1/admin/tenants/{tenant}/disable").json()["disabled"] is True
            assert r.sismember(Keys(PREFIX).cancelled, job["id"])
    with session_scope(readonly=True) as db:
        stored = jobs.get_job_any(db, job["id"])
        assert stored is not None and stored.status == "cancelled"


def test_tenant_keys_cannot_manage(stack: Stack) -> None:
    with stack.client() as c:
        assert c.get("/v1/admin/tenants").status_code == 401
        assert c.post("/v1/admin/keys", json={"tenant": "acme"}).status_code == 401


def _gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env={**os.environ, "COLUMNS": "250"},
                          text=True, capture_output=True, timeout=60)


def test_the_cli_runs_the_same_code_and_is_audited_as_itself(stack: Stack) -> None:
    tenant = _tenant("cli")
    made = _gateway("tenants", "create", tenant, "--daily-usd", "3")
    assert made.returncode == 0, made.stderr
    changed = _gateway("tenants", "update", tenant, "--monthly-usd", "50", "--weight", "4")
    assert changed.returncode == 0, changed.stderr
    bad = _gateway("tenants", "update", tenant, "--daily-usd", "-1")
    assert bad.returncode == 1 and "budget.daily_usd" in bad.stderr
    key = _gateway("keys", "create", "--tenant", tenant, "--rpm", "60", "--daily-usd", "1", "--expires", "30d")
    assert key.returncode == 0, key.stderr
    secret = next(line for line in key.stdout.splitlines() if line.startswith("gw-"))
    assert _call(stack, secret).status_code == 200  # the api sees the CLI's key and settings at once
    view = httpx.get(f"{stack.url}/v1/admin/tenants/{tenant}", headers=ADMIN).json()
    assert view["settings"]["budget"] == {"daily_usd": 3.0, "monthly_usd": 50.0, "enforce": "hard"}
    assert view["settings"]["weight"] == 4
    rotated = _gateway("keys", "rotate", secret[:12])
    assert rotated.returncode == 0 and _call(stack, secret).status_code == 401
    history = _gateway("audit", "actions", "--target", f"tenant:{tenant}")
    assert "tenant.update" in history.stdout and "cli " in history.stdout


def test_a_keys_own_rpm_holds_its_calls_in_the_queue(stack: Stack) -> None:
    """A key's RPM is a bucket of the budget tree: past it, its jobs wait for the refill."""
    tenant = _tenant()
    with _admin(stack) as c:
        c.post("/v1/admin/tenants", json={"id": tenant})
        slow = c.post("/v1/admin/keys", json={"tenant": tenant, "rpm": 1}).json()["key"]
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {slow}"}, timeout=30) as c:
        first, second = (c.post("/v1/jobs", json={**CHAT, "priority": "standard"}).json() for _ in range(2))
        first = wait_for_status(c, first["id"], {"succeeded"})
        time.sleep(1.0)  # scheduling rounds go by
        held = c.get(f"/v1/jobs/{second['id']}").json()
        c.delete(f"/v1/jobs/{second['id']}")
    assert held["status"] == "queued" and held["attempts"] == 0


def test_models_lists_what_the_key_may_use(stack: Stack) -> None:
    tenant = _tenant()
    with _admin(stack) as c:
        assert c.post("/v1/admin/tenants", json={"id": tenant}).status_code == 201
        asks = c.post("/v1/admin/keys", json={"tenant": tenant, "allowed_models": ["gpt-4o-mini", "gpt-4o"]})
        routed = c.post("/v1/admin/keys", json={"tenant": tenant, "models": {"deny": ["claude-haiku@sim"]}})
        bad = c.post("/v1/admin/keys", json={"tenant": tenant, "models": {"deny": ["nowhere@sim"]}})
    assert asks.status_code == 201 and routed.status_code == 201, (asks.text, routed.text)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "models"

    def listed(key: str) -> set[str]:
        r = httpx.get(f"{stack.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)
        return {m["id"] for m in r.json()["data"]}

    assert listed(asks.json()["key"]) == {"gpt-4o-mini", "gpt-4o"}
    names = listed(routed.json()["key"])
    assert "claude-haiku@sim" not in names and "claude-haiku-4-5" not in names  # its only deployment is denied
    assert {"gpt-4o-mini", "gpt-4o-mini@sim"} <= names  # a chain with another deployment stays
    assert _call(stack, routed.json()["key"], body={"model": "claude-haiku-4-5"}).status_code == 403
    counted = httpx.post(f"{stack.url}/v1/messages/count_tokens", timeout=30, headers={"x-api-key": asks.json()["key"]},
                         json={"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]})
    assert counted.status_code == 403 and counted.json()["error"]["type"] == "permission_error"
