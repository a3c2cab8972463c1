"""The routing benchmark's world: three simulated models and the gateway config that routes over them.

    tier    model          price $/Mtok in/out   latency (TTFT + per token)   answers that fail a check
    small   bench-small    0.15 / 0.60           120 ms + 4 ms                easy 2%, medium 15%, hard 45%
    medium  bench-medium   1.00 / 4.00           250 ms + 8 ms                easy 0, medium 3%, hard 12%
    large   bench-large    2.50 / 10.00          400 ms + 15 ms               never

A failed answer is cut at max_tokens (``length``) or, when a JSON schema was asked for, is not JSON
(``schema``). Replies are lognormal, median 80 tokens; every request allows 800. The tasks' tiers:
classify, extract, summarize and chat start at small; code at medium; reason goes to large. Without a
task, ``auto`` starts where the complexity score puts it: small below 0.35, large from 0.85, else medium.
"""

from __future__ import annotations

from typing import Any

import yaml

MODELS: dict[str, dict[str, Any]] = {
    "bench-small": {"price": (0.15, 0.6), "latency": (120, 4), "fail": {"easy": 0.02, "medium": 0.15, "hard": 0.45}},
    "bench-medium": {"price": (1.0, 4.0), "latency": (250, 8), "fail": {"easy": 0.0, "medium": 0.03, "hard": 0.12}},
    "bench-large": {"price": (2.5, 10.0), "latency": (400, 15), "fail": {}},
}
TIERS = {"small": "bench-small", "medium": "bench-medium", "large": "bench-large"}
TASK_TIERS = {"classify": ["small", "medium", "large"], "extract": ["small", "medium", "large"],
              "summarize": ["small", "medium", "large"], "chat": ["small", "medium", "large"],
              "code": ["medium", "large"], "reason": ["large"]}
# Where `auto` starts a tier higher. The medium tier's failures are rare and cascade to large anyway, so
# only a request that scores very hard starts at large (even spacing, the default, would be 0.33 / 0.67).
AUTO_THRESHOLDS = [0.35, 0.85]
TOP = "large"  # the alias of the top tier's deployment: what the comparison arm always asks for


def sim_yaml() -> str:
    models = {name: {"latency": {"ttft_ms": spec["latency"][0], "per_token_ms": spec["latency"][1], "jitter": 0.2},
                     "output": {"dist": "lognormal", "median": 80, "sigma": 0.6, "max": 600},
                     "weakness": {"fail_rate": spec["fail"], "modes": ["schema", "length"]}}
              for name, spec in MODELS.items()}
    return yaml.safe_dump({"defaults": {"openai": {"limits": {"rpm": 10_000_000, "tpm": 10_000_000_000}}},
                           "models": models})


def gateway_yaml(sim_port: int) -> str:
    deployments = [{"name": f"{tier}@sim", "provider": "sim", "model": model,
                    "limits": {"rpm": 1_000_000, "tpm": 1_000_000_000},
                    "price": dict(zip(("input_per_mtok", "output_per_mtok"), MODELS[model]["price"], strict=True))}
                   for tier, model in TIERS.items()]
    config = {
        "providers": {"sim": {"kind": "openai", "base_url": f"http://127.0.0.1:{sim_port}/v1",
                              "api_key_env": "SIM_OPENAI_KEY"}},
        "deployments": deployments,
        "models": {TOP: [f"{TOP}@sim"]},
        "routing": {"tiers": {tier: [f"{tier}@sim"] for tier in TIERS}, "tasks": TASK_TIERS,
                    "auto_thresholds": AUTO_THRESHOLDS},
        "tenants": {"acme": {}},
        "lanes": {"interactive": {"reserve": 0.3, "deadline_s": 120}},
    }
    return yaml.safe_dump(config, sort_keys=False)
