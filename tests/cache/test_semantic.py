"""The semantic cache's parts on their own: the canonical form, the guard against near misses (on the
labeled set, ops/cache_eval/pairs.py), and a process's copy of a scope."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ops.cache_eval.pairs import HELD_OUT, ITEMS, Item, pairs
from shared.cache.canonical import canonical, digest
from shared.cache.embedder import StaticEmbedder
from shared.cache.guard import near_miss
from shared.cache.plan import plan_for
from shared.cache.semantic import Record, SemanticIndex
from shared.config import CacheConfig, Settings
from shared.translate import anthropic_to_openai_request


@pytest.fixture(scope="module")
def embedder() -> StaticEmbedder:
    return StaticEmbedder()


@pytest.mark.parametrize("items", [ITEMS, HELD_OUT], ids=["built-with", "held-out"])
def test_precision_and_recall_on_the_labeled_sets(embedder: StaticEmbedder, items: tuple[Item, ...]) -> None:
    threshold = CacheConfig().semantic_threshold
    labeled = pairs(items)
    served = [(same, kind) for a, b, same, kind in labeled
              if float(embedder.embed(a) @ embedder.embed(b)) >= threshold and near_miss(b, a) is None]
    true_hits = sum(1 for same, _ in served if same)
    assert true_hits / len(served) >= 0.99, [kind for same, kind in served if not same]
    assert true_hits / sum(1 for _, _, same, _ in labeled if same) >= 0.6


@pytest.mark.parametrize(("cached", "asked", "reason"), [
    ("Convert 100 USD to EUR", "Convert 200 USD to EUR", "number"),
    ("What is 15% of 80?", "What is 80% of 15?", "number"),
    ("Flights from Paris to London", "Flights from London to Paris", "direction"),
    ("Is a cat bigger than a dog?", "Is a dog bigger than a cat?", "direction"),
    ("Is it safe to take ibuprofen with alcohol?", "Is it not safe to take ibuprofen with alcohol?", "negation"),
    ("What is the price of the Pro plan?", "What is the price of the Enterprise plan?", "words"),
    ("How do I sort a list in Python?", "How do I sort a list in Rust?", "words"),
    ("Write a haiku about autumn", "Write a haiku about autumn for children", "words"),
    ("Status of ticket #4521?", "Status of ticket #4522?", "number"),
    ("Book a table for Monday", "Book a table for Tuesday", "number"),
    ("I like the beer", "I like the bear", "words"),  # both real words: no typo match
    ("Trip to Austria", "Trip to Australia", "words"),  # names: no typo match
])
def test_the_guard_refuses_near_misses(cached: str, asked: str, reason: str) -> None:
    assert near_miss(asked, cached) == reason


@pytest.mark.parametrize(("cached", "asked"), [
    ("How do I reset my password?", "how do i reset my pasword"),
    ("How do I reset my password?", "Hi! Could you please tell me how do I reset my password? Thanks"),
    ("What is the weather in Tokyo tomorrow?", "Tokyo weather tomorow?"),
    ("How do I cancel my subscription?", "How can I cancel my membership?"),
    ("In Python, how do I sort a list?", "How do I sort a list in Python?"),
])
def test_the_guard_passes_paraphrases(cached: str, asked: str) -> None:
    assert near_miss(asked, cached) is None


def test_the_dialect_and_the_formatting_do_not_change_the_key() -> None:
    openai = {"model": "fast", "temperature": 0, "max_tokens": 50, "stop": "END",
              "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi there "}]}
    anthropic = anthropic_to_openai_request({
        "model": "fast", "max_tokens": 50, "temperature": 0.0, "system": [{"type": "text", "text": "Be brief."}],
        "stop_sequences": ["END"], "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}]})
    assert digest(canonical(openai)) == digest(canonical(anthropic))
    assert digest(canonical({**openai, "max_completion_tokens": 50, "max_tokens": None, "user": "u1"})) \
        == digest(canonical(openai))
    assert digest(canonical({**openai, "seed": 1})) != digest(canonical(openai))


def test_a_plan_bypasses_sampling_and_scopes_semantic_entries_by_context() -> None:
    settings = Settings(tenants={"acme": {"features": {"faq": {}}}},
                        cache={"features": {"acme": {"faq": {"semantic": True}}}})
    ask = {"model": "fast", "temperature": 0, "messages": [{"role": "user", "content": "Hi"}]}
    chain = ["gpt-4o-mini@sim"]
    assert plan_for(settings, "acme", "faq", "fast", chain, {**ask, "temperature": 0.5}).bypass == "temperature"
    assert plan_for(settings, "acme", "faq", "fast", chain, {**ask, "temperature": None}).bypass == "temperature"
    assert plan_for(settings, "acme", "faq", "fast", chain, ask, "no-store").fill() is None
    refresh = plan_for(settings, "acme", "faq", "fast", chain, ask, "no-cache")
    assert not refresh.read and refresh.store and refresh.bypass == "no-cache"
    one, other = (plan_for(settings, "acme", "faq", "fast", chain, {**ask, "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": "Hi"}]}) for system in ("A", "B"))
    assert one.semantic and other.semantic and one.semantic.scope != other.semantic.scope
    assert plan_for(settings, "acme", "default", "fast", chain, ask).semantic is None


def test_a_copy_of_a_scope_follows_appends_caps_and_a_new_epoch(embedder: StaticEmbedder) -> None:
    index = SemanticIndex()

    def rec(text: str) -> str:
        return Record(embedder.embed(text), text, text, "job", time.time() + 60).dumps()

    index.update("s", "e1", 2, 2, [rec("a cat"), rec("a dog")], full=True)
    assert index.stale("s", "e1", 2) is None and index.stale("s", "e1", 4) == 2
    index.update("s", "e1", 4, 3, [rec("a bird"), rec("a fish")], full=False)  # the cap dropped "a cat"
    found = index.nearest("s", embedder.embed("a cat"), 0.0, limit=5)
    assert [c.record.text for c in found if c.similarity > 0.99] == []
    assert {c.record.text for c in found} == {"a dog", "a bird", "a fish"}
    assert index.stale("s", "e2", 1) == -1  # purged and refilled: rebuilt
    assert index.stale("s", None, 0) is None and index.nearest("s", np.ones(64, np.float32), 0.0) == []
