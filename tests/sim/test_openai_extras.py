"""The simulator's embeddings and legacy completions endpoints, driven by the official openai SDK: usage
counted with the shared tokenizer, embeddings metered on TPM by their input alone, deterministic vectors."""

from __future__ import annotations

import openai
import pytest

from ops.sim.config import SimulatorConfig
from shared.tokens import count_tokens

from .conftest import ManualClock


def sdk(sim) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=0)


def test_embeddings_are_deterministic_unit_vectors_with_input_usage(shared_sim):
    texts = ["the first input", "another one"]
    one = sdk(shared_sim).embeddings.create(model="text-embedding-3-small", input=texts, dimensions=32)
    two = sdk(shared_sim).embeddings.create(model="text-embedding-3-small", input=texts, dimensions=32,
                                            encoding_format="float")
    for packed, floats in zip(one.data, two.data, strict=True):  # base64 float32s, and floats
        assert packed.embedding == pytest.approx(floats.embedding, abs=1e-6)
    assert one.data[0].embedding != one.data[1].embedding
    assert sum(v * v for v in one.data[0].embedding) == pytest.approx(1.0, abs=1e-4)
    assert one.usage.prompt_tokens == one.usage.total_tokens == sum(count_tokens(t) for t in texts)
    ids = sdk(shared_sim).embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4]])
    assert ids.usage.prompt_tokens == 4 and len(ids.data[0].embedding) == 1536


def test_embeddings_spend_only_their_input_on_tpm(make_sim):
    sim = make_sim(SimulatorConfig.model_validate({"models": {"emb": {"limits": {"rpm": 1000, "tpm": 100}}}}),
                   clock=ManualClock())
    text = "word " * 30
    first = sdk(sim).embeddings.with_raw_response.create(model="emb", input=text)
    spent = first.parse().usage.prompt_tokens
    assert int(first.headers["x-ratelimit-remaining-tokens"]) == 100 - spent  # no output reserved
    sdk(sim).embeddings.create(model="emb", input=text)
    sdk(sim).embeddings.create(model="emb", input=text)
    with pytest.raises(openai.RateLimitError):
        sdk(sim).embeddings.create(model="emb", input=text)


def test_legacy_completions_answer_each_choice(shared_sim):
    reply = sdk(shared_sim).completions.create(model="gpt-3.5-turbo-instruct", prompt="Say something", n=3,
                                               max_tokens=8)
    assert reply.object == "text_completion" and len(reply.choices) == 3
    assert reply.usage.prompt_tokens == count_tokens("Say something")
    assert all(c.finish_reason in ("stop", "length") for c in reply.choices)
    assert reply.usage.completion_tokens == sum(count_tokens(c.text) for c in reply.choices) <= 24
