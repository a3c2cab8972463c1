"""What the calls cost, asked through the real api and CLI: a tenant sees its own usage, the operators see
everyone's, finance gets CSV, the rollups agree with the attempt records, and bad parameters are 400s that
name them."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shared.db import tenants
from shared.db.session import session_scope
from tests.conftest import ADMIN, ROOT, Stack

CHAT = {"model": "gpt-4o-mini", "max_tokens": 12, "messages": [{"role": "user", "content": "What is a rollup?"}]}


def _tenant_with_key(prefix: str) -> tuple[str, str]:
    """A tenant of its own, so its usage is exactly what the test sent."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    with session_scope() as db:
        tenants.ensure_tenant(db, name)
        key = tenants.create_key(db, name, name="usage")[1]
    return name, key


def _client(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _send(stack: Stack, key: str, features: list[str], model: str = "gpt-4o-mini") -> list[dict[str, Any]]:
    views = []
    with _client(stack, key) as c:
        for feature in features:
            r = c.post("/v1/chat/completions", json={**CHAT, "model": model}, headers={"X-Gateway-Feature": feature})
            assert r.status_code == 200, r.text
            views.append(c.get(f"/v1/jobs/{r.headers['x-gateway-job-id']}").json())
    return views


@pytest.fixture(scope="module")
def two_tenants(stack: Stack) -> dict[str, Any]:
    first, first_key = _tenant_with_key("usage-a")
    second, second_key = _tenant_with_key("usage-b")
    return {"first": (first, first_key, _send(stack, first_key, ["search", "search", "summaries"])),
            "second": (second, second_key, _send(stack, second_key, ["search"], model="claude-haiku-4-5"))}


def test_a_tenant_sees_its_own_usage_by_feature_model_and_key(stack: Stack, two_tenants: dict[str, Any]) -> None:
    tenant, key, views = two_tenants["first"]
    with _client(stack, key) as c:
        report = c.get("/v1/usage", params={"group_by": "tenant,feature,model,deployment,key",
                                            "granularity": "hour"}).json()
    rows = report["data"]
    assert {r["tenant"] for r in rows} == {tenant}
    by_feature = {r["feature"]: r for r in rows}
    assert (by_feature["search"]["requests"], by_feature["summaries"]["requests"]) == (2, 1)
    assert {r["model"] for r in rows} == {"gpt-4o-mini"} and {r["deployment"] for r in rows} == {"gpt-4o-mini@sim"}
    assert len({r["key"] for r in rows}) == 1 and rows[0]["key"].startswith("key_")
    totals = report["totals"]
    assert totals["cost_usd"] == pytest.approx(sum(v["cost_usd"] for v in views), abs=1e-8)
    assert totals["input_tokens"] == sum(v["usage"]["prompt_tokens"] for v in views)
    assert totals["output_tokens"] == sum(v["usage"]["completion_tokens"] for v in views)
    assert (totals["attempts"], totals["failed_attempts"], totals["succeeded"]) == (3, 0, 3)
    assert report["timezone"] == "UTC" and report["granularity"] == "hour"


def test_the_operators_see_every_tenant_and_may_pick_one(stack: Stack, two_tenants: dict[str, Any]) -> None:
    first, second = two_tenants["first"][0], two_tenants["second"][0]
    everyone = httpx.get(f"{stack.url}/v1/usage", params={"group_by": "tenant,model"}, headers=ADMIN).json()
    models = {r["tenant"]: r["model"] for r in everyone["data"] if r["tenant"] in (first, second)}
    assert models == {first: "gpt-4o-mini", second: "claude-haiku-4-5"}
    one = httpx.get(f"{stack.url}/v1/usage", params={"tenant": second}, headers=ADMIN).json()
    assert one["totals"]["requests"] == 1 and one["tenant"] == second


def test_finance_gets_csv_by_accept_header_or_format(stack: Stack, two_tenants: dict[str, Any]) -> None:
    _, key, views = two_tenants["first"]
    with _client(stack, key) as c:
        by_header = c.get("/v1/usage", params={"group_by": "feature"}, headers={"Accept": "text/csv"})
        by_format = c.get("/v1/usage", params={"group_by": "feature", "format": "csv"})
    for r in (by_header, by_format):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(by_format.text)))
    assert sorted(r["feature"] for r in rows) == ["search", "summaries"]
    assert sum(float(r["cost_usd"]) for r in rows) == pytest.approx(sum(v["cost_usd"] for v in views), abs=1e-7)
    assert list(rows[0])[:3] == ["start", "end", "feature"]


@pytest.mark.parametrize(("params", "param"), [
    ({"group_by": "tenant,colour"}, "group_by"),
    ({"group_by": "tenant,tenant"}, "group_by"),
    ({"from": "2026-12-02", "to": "2026-12-01"}, "from"),
    ({"from": "2001-01-01T00:00:00Z"}, "from"),  # further back than retention.usage_days (400)
    ({"from": "yesterday"}, "from"),
    ({"to": "0001-01-01T00:00:00+14:00"}, "to"),
    ({"granularity": "week"}, "granularity"),
    ({"format": "xlsx"}, "format"),
])
def test_bad_parameters_are_400s_that_name_them(stack: Stack, params: dict[str, str], param: str) -> None:
    with stack.client() as c:
        r = c.get("/v1/usage", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.json()


def test_a_tenant_key_cannot_read_another_tenant(stack: Stack, two_tenants: dict[str, Any]) -> None:
    _, key, _ = two_tenants["first"]
    with _client(stack, key) as c:
        r = c.get("/v1/usage", params={"tenant": two_tenants["second"][0]})
    assert r.status_code == 403 and r.json()["error"]["param"] == "tenant"


def _gateway(*args: str) -> subprocess.CompletedProcess[str]:
    wide = {**os.environ, "COLUMNS": "250"}  # rich fits its table to the terminal
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=wide, text=True, capture_output=True,
                          timeout=60)


def test_the_cli_reports_the_same_usage_and_reconciles(stack: Stack, two_tenants: dict[str, Any]) -> None:
    tenant, _, views = two_tenants["first"]
    shown = _gateway("usage", "--since", "2h", "--by", "tenant,feature", "--tenant", tenant, "--json")
    assert shown.returncode == 0, shown.stderr
    rows = {r["feature"]: r for r in json.loads(shown.stdout)["data"]}
    assert rows["search"]["requests"] == 2 and rows["summaries"]["requests"] == 1
    assert sum(r["cost_usd"] for r in rows.values()) == pytest.approx(sum(v["cost_usd"] for v in views), abs=1e-7)
    table = _gateway("usage", "--since", "2h", "--by", "feature", "--tenant", tenant)
    assert table.returncode == 0 and "summaries" in table.stdout
    as_csv = _gateway("usage", "--since", "1d", "--by", "tenant", "--csv", "--tenant", tenant)
    assert as_csv.stdout.splitlines()[0].startswith("tenant,requests")
    checked = _gateway("usage", "reconcile", "--since", "1d")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "match" in checked.stdout
    bad = _gateway("usage", "--since", "yesterday")
    assert bad.returncode == 1 and "--since" in bad.stderr


def test_window_edges_are_whole_buckets(stack: Stack, two_tenants: dict[str, Any]) -> None:
    _, key, _ = two_tenants["first"]
    now = datetime.now(UTC)
    with _client(stack, key) as c:
        r = c.get("/v1/usage", params={"from": (now - timedelta(minutes=90)).isoformat(), "to": now.isoformat(),
                                       "granularity": "hour"}).json()
    start = datetime.fromisoformat(r["from"])
    assert start.minute == 0 and start.second == 0 and datetime.fromisoformat(r["to"]) >= now
    assert r["totals"]["requests"] == 3
