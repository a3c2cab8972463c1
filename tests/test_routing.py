"""The routing decision on its own (``shared.routing``, ``shared.capabilities``, ``shared.complexity``,
``shared.answer_checks``): pure functions of the config and the request, no process needed. The same
decisions through the running gateway are in tests/e2e/test_routing.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from shared.answer_checks import failed_check
from shared.capabilities import capabilities_of
from shared.complexity import score, tier_for
from shared.config import CHECKS, load_settings
from shared.errors import ConfigError, InvalidRequest, PermissionDenied
from shared.lanes import Lane
from shared.routing import Router

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(load_settings(ROOT / "gateway.example.yaml"))


def _route(router: Router, request: dict[str, Any], *, task: str | None = None, tenant: str = "acme",
           feature: str = "default", lane: Lane = Lane.INTERACTIVE, tokens: int = 20) -> Any:
    return router.route(tenant=tenant, feature=feature, lane=lane, model="auto", request=request,
                        prompt_tokens=tokens, task=task)


def _ask(text: str = "Is this spam?", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def test_capabilities_come_from_the_catalogue_and_the_config_overrides_them(router: Router) -> None:
    settings = load_settings(ROOT / "gateway.example.yaml")
    mini = capabilities_of(settings.deployment("gpt-4o-mini@openai-main"), "openai")
    assert (mini.context_window, mini.max_output_tokens, mini.vision, mini.json_schema) == (128_000, 16_384, True, True)
    assert mini.input_usd == pytest.approx(0.15e-6) and mini.source == "models.dev"
    assert capabilities_of(settings.deployment("claude-haiku@anthropic"), "anthropic").json_schema is False
    llama = router.capabilities["llama@vllm"]
    assert (llama.source, llama.context_window, llama.vision, llama.tools) == ("assumed", 32_768, False, True)


def test_a_task_starts_at_its_first_tier_cheapest_deployment_first(router: Router) -> None:
    chain, route = _route(router, _ask(), task="classify")
    assert chain == ["llama@vllm", "gpt-4o-mini@openai-main", "claude-haiku@anthropic", "gpt-4o@openai-main"]
    assert [name for name, _ in route.tiers] == ["small", "medium", "large"]
    assert route.ceiling == "gpt-4o@openai-main" and route.spill and route.reason == "task classify"
    assert not _route(router, _ask(), task="classify", lane=Lane.BATCH)[1].spill


def test_what_a_deployment_cannot_do_takes_it_off_the_route(router: Router) -> None:
    image = [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]
    chain, _ = _route(router, {"messages": [{"role": "user", "content": image}]}, task="classify")
    assert "llama@vllm" not in chain and chain[0] == "gpt-4o-mini@openai-main"
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    chain, _ = _route(router, _ask(response_format=schema), task="chat")
    assert chain == ["gpt-4o-mini@openai-main", "gpt-4o@openai-main"]  # neither llama nor claude says it can


def test_a_request_nothing_can_serve_is_a_400_naming_what_is_missing(router: Router) -> None:
    with pytest.raises(InvalidRequest, match="context window") as caught:
        _route(router, _ask(), task="classify", tokens=300_000)
    assert caught.value.code == "no_capable_deployment" and caught.value.param == "messages"
    assert "200000" in caught.value.message  # the largest window on the route


def test_allow_lists_filter_routes_and_chains(router: Router) -> None:
    chain, _ = _route(router, _ask(), task="classify", tenant="globex", feature="search")
    assert "llama@vllm" not in chain
    assert _route(router, _ask(), task="summarize", tenant="globex", feature="reports")[1].tiers[0][0] == "medium"
    only_llama = router.route(tenant="acme", feature="default", lane=Lane.BATCH, model="local", request=_ask(),
                              prompt_tokens=5)
    assert only_llama == (["llama@vllm"], None)
    with pytest.raises(PermissionDenied, match="may not use"):
        router.route(tenant="globex", feature="search", lane=Lane.STANDARD, model="local", request=_ask(),
                     prompt_tokens=5)


def test_an_unknown_task_is_refused_naming_the_known_ones(router: Router) -> None:
    with pytest.raises(InvalidRequest, match="classify") as caught:
        _route(router, _ask(), task="juggle")
    assert caught.value.param == "task"


def test_the_scorer_reads_length_code_maths_steps_and_format() -> None:
    assert score(_ask("Say hi"), 5).score == 0
    hard = _ask("Explain the trade-offs step by step:\n1. a\n2. b\n3. c\n```def f(): return 1```\n"
                "Solve for x: 2x + 1 = 7", tools=[{"type": "function"}])
    found = score(hard, 3000)
    assert set(found.signals) == {"long", "code", "math", "multi-step", "reasoning", "tools"}
    assert found.score == 1.0
    assert [tier_for(v, [0.35, 0.85]) for v in (0.0, 0.35, 0.6, 0.9)] == [0, 1, 1, 2]
    context = "word " * 5000  # the instruction after a long context is still read
    assert "code" in score(_ask(context + "\n```python\nprint(1)\n```"), 6000).signals


@pytest.mark.parametrize("check, answer", [
    ("length", {"finish_reason": "length", "message": {"content": "cut"}}),
    ("json_schema", {"finish_reason": "stop", "message": {"content": '{"label": 3}'}}),
    ("refusal", {"finish_reason": "stop", "message": {"content": None, "refusal": "no"}}),
    ("empty", {"finish_reason": "stop", "message": {"content": "  "}}),
])
def test_each_check_catches_its_failure(check: str, answer: dict[str, Any]) -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "required": ["label"], "properties": {"label": {"type": "string"}}}}}
    request = _ask(response_format=schema) if check == "json_schema" else _ask()
    assert failed_check(request, {"choices": [answer]}, CHECKS) == check
    ok = {"finish_reason": "stop", "message": {"content": '{"label": "spam"}'}}
    assert failed_check(_ask(response_format=schema), {"choices": [ok]}, CHECKS) is None


@pytest.mark.parametrize("routing, problem", [
    ("tiers: {small: [nope@x]}", "routing.tiers.small: needs known deployments"),
    ("tiers: {small: [gpt-4o-mini@openai-main]}\n  tasks: {chat: [large]}", "routing.tasks.chat: unknown tiers"),
    ("tiers: {small: [gpt-4o-mini@openai-main]}\n  tasks: {Chat: [small]}", "task 'Chat'"),
    ("tiers: {a: [gpt-4o-mini@openai-main], b: [claude-haiku@anthropic]}\n  auto_thresholds: [0.2, 0.5]",
     "routing.auto_thresholds: needs 1"),
])
def test_routing_config_mistakes_name_the_field(tmp_path: Path, routing: str, problem: str) -> None:
    base = (ROOT / "gateway.example.yaml").read_text().split("\nrouting:")[0]
    path = tmp_path / "g.yaml"
    path.write_text(f"{base}\nrouting:\n  {routing}\n")
    field, _, says = problem.partition(": ")  # the field, then its line in the file, then what is wrong
    with pytest.raises(ConfigError, match=re.escape(field) + (r" \(.*\): " + re.escape(says) if says else "")):
        load_settings(path)
