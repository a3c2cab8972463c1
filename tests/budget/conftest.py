"""Budget tests run against the real Redis (db 15), each test in a keyspace of its own.

Every key a test makes lives under ``{<session prefix>-<test id>}``; the session's keys are deleted
at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from shared.budget import BudgetStore, BudgetTree
from shared.config import Settings
from shared.keys import Keys
from tests.conftest import session_redis

SESSION = f"gwb{uuid.uuid4().hex[:8]}"


def fresh_keys() -> Keys:
    return Keys(f"{SESSION}-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def client() -> Iterator[redis.Redis]:
    yield from session_redis(SESSION)


@pytest.fixture
def keys() -> Keys:
    return fresh_keys()


@pytest.fixture
def store(client: redis.Redis, keys: Keys) -> BudgetStore:
    return BudgetStore(client, keys)


def make_settings(**overrides: object) -> Settings:
    """A small account: one OpenAI-style and one Anthropic-style deployment with round numbers."""
    data: dict[str, object] = {
        "providers": {
            "oa": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"},
            "an": {"kind": "anthropic", "base_url": "http://127.0.0.1:1"},
        },
        "deployments": [
            {"name": "gpt@oa", "provider": "oa", "model": "gpt-4o-mini", "headroom": 0.9,
             "limits": {"rpm": 600, "tpm": 60_000}},
            {"name": "claude@an", "provider": "an", "model": "claude-haiku-4-5", "headroom": 1.0,
             "limits": {"rpm": 60, "itpm": 6_000, "otpm": 1_200}},
        ],
        "models": {"fast": ["gpt@oa", "claude@an"]},
        "lanes": {"interactive": {"reserve": 0.3}, "batch": {"ceiling": 0.6}},
        "tenants": {
            "acme": {"weight": 3, "soft_tpm": 6_000, "hard_tpm": 12_000,
                     "features": {"summarizer": {"lane": "batch", "hard_tpm": 3_000}}},
            "globex": {"weight": 1},
        },
    }
    data.update(overrides)
    return Settings(**data)  # type: ignore[arg-type]


@pytest.fixture
def tree(keys: Keys) -> BudgetTree:
    return BudgetTree(make_settings(), keys)
