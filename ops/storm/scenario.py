"""The traffic and the account of the storm, scaled to a 2-core machine, and the configs that mirror it.

One provider account (one simulator org) with one model. Its TPM is the binding limit (RPM is set
far above what the traffic needs) and it is enforced over ``burst_s``-second windows, as providers
do. The gateway's deployment states the same account (RPM, TPM, burst); everything else (headroom,
lanes) is the gateway's default.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import yaml

from shared.budget import prompt_tokens

MODEL = "gpt-4o-mini"
DEPLOYMENT = "gpt-4o-mini@sim"
COPILOT, SUMMARIZER = "copilot", "summarizer"
SIM_ORG = "acme-account"
GATEWAY_SIM_KEY = "sk-gateway"

_WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
          "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform",
          "victor", "whiskey", "xray", "yankee", "zulu"]


@dataclass(frozen=True)
class Scenario:
    """Everything that shapes the run; ``quick()`` is the same story, shorter."""

    tpm: int = 600_000
    rpm: int = 60_000
    burst_s: float = 10.0
    tenants: int = 20
    copilot_rate: float = 8.0  # requests per second over all tenants (Poisson)
    copilot_words: int = 12
    copilot_max_tokens: int = 48
    copilot_stream_share: float = 0.0  # of the copilot's calls, those that ask for ``stream: true``
    before_s: float = 20.0  # copilot alone, before the storm
    storm_jobs: int = 1000  # tenant-00's overnight backlog
    rival_tenants: int = 3  # other summarizers that start their (smaller) backlog at the same moment
    rival_jobs: int = 100
    summary_words: int = 300
    summary_max_tokens: int = 100
    tail_s: float = 3.0  # copilot goes on this long after the backlog has drained
    cap_factor: float = 2.5  # give up on a mode after cap_factor x the physical minimum drain time
    worker_concurrency: int = 200
    direct_concurrency: int = 64  # each summarizer's own connection pool in the world before the gateway
    latency: dict[str, float] = field(default_factory=lambda: {"ttft_ms": 400, "per_token_ms": 15,
                                                                 "jitter": 0.25})
    seed: int = 7

    @classmethod
    def quick(cls) -> Scenario:
        return cls(before_s=10.0, storm_jobs=240, rival_jobs=60, tail_s=2.0, cap_factor=3.0)

    # -- who -------------------------------------------------------------------------------------

    @cached_property
    def tenant_ids(self) -> list[str]:
        return [f"tenant-{i:02d}" for i in range(self.tenants)]

    @cached_property
    def batch_plan(self) -> dict[str, int]:
        """Summarizer jobs per tenant: the storm tenant first, then its rivals."""
        plan = {self.tenant_ids[0]: self.storm_jobs}
        for tenant in self.tenant_ids[1:1 + self.rival_tenants]:
            plan[tenant] = self.rival_jobs
        return plan

    # -- what ------------------------------------------------------------------------------------

    def copilot_request(self, tenant: str, i: int) -> dict[str, Any]:
        rng = random.Random(f"{self.seed}:{tenant}:copilot:{i}")
        words = " ".join(rng.choice(_WORDS) for _ in range(self.copilot_words))
        return {"model": MODEL, "max_tokens": self.copilot_max_tokens,
                "messages": [{"role": "user", "content": f"Complete this line for {tenant}: {words}"}]}

    def summary_request(self, tenant: str, i: int) -> dict[str, Any]:
        rng = random.Random(f"{self.seed}:{tenant}:summary:{i}")
        words = " ".join(rng.choice(_WORDS) for _ in range(self.summary_words))
        return {"model": MODEL, "max_tokens": self.summary_max_tokens,
                "messages": [{"role": "system", "content": "Summarize the document in three sentences."},
                             {"role": "user", "content": f"Document {tenant}/{i}: {words}"}]}

    @staticmethod
    def charged(request: dict[str, Any]) -> int:
        """What the provider's TPM meter takes for a request: prompt + max_tokens (OpenAI's rule)."""
        return prompt_tokens(request) + int(request["max_tokens"])

    @cached_property
    def backlog_tokens(self) -> int:
        return sum(self.charged(self.summary_request(t, i)) for t, n in self.batch_plan.items() for i in range(n))

    @property
    def min_drain_s(self) -> float:
        """Backlog tokens / TPM: the minimum of an account without burst credit or other traffic."""
        return self.backlog_tokens / (self.tpm / 60.0)

    @property
    def burst_tokens(self) -> float:
        """What the provider's bucket holds when full: TPM x burst window / 60."""
        return self.tpm * self.burst_s / 60.0

    @property
    def physical_min_s(self) -> float:
        """The physical minimum with the account's burst credit and the copilot's own tokens: the full
        bucket goes at once, the rest at the refill rate less what the copilot takes,
        (backlog - TPM x burst / 60) / ((TPM - copilot TPM) / 60)."""
        return max(0.0, self.backlog_tokens - self.burst_tokens) / ((self.tpm - self.copilot_tpm) / 60.0)

    @property
    def copilot_tpm(self) -> float:
        """What the copilot takes from the same meter, on average (tokens per minute)."""
        return self.copilot_rate * 60 * self.charged(self.copilot_request(self.tenant_ids[0], 0))

    # -- configs ---------------------------------------------------------------------------------

    def sim_yaml(self, direct_keys: list[str]) -> str:
        """The simulator: one org (every key shares its meter), the model's limits and latency."""
        keys = [{"key": k, "org": SIM_ORG} for k in [GATEWAY_SIM_KEY, *direct_keys]]
        return yaml.safe_dump({
            "seed": self.seed, "keys": keys,
            "models": {MODEL: {
                "limits": {"rpm": self.rpm, "tpm": self.tpm, "burst_window_s": self.burst_s},
                "latency": self.latency,
                "output": {"dist": "lognormal", "median": 40, "sigma": 0.5, "max": 1000},
            }},
            "stats": {"sample_interval_s": 0.5, "history": 2000},
        }, sort_keys=False)

    def gateway_yaml(self, sim_port: int, admission: bool) -> str:
        """The gateway: its deployment states the simulator's account (limits, burst window); headroom
        and lanes are the defaults; equal-weight tenants."""
        base = f"http://127.0.0.1:{sim_port}"
        return yaml.safe_dump({
            "providers": {"sim-openai": {"kind": "openai", "base_url": f"{base}/v1", "api_key_env": "SIM_OPENAI_KEY"}},
            "deployments": [{
                "name": DEPLOYMENT, "provider": "sim-openai", "model": MODEL,
                "limits": {"rpm": self.rpm, "tpm": self.tpm}, "burst_s": self.burst_s,
            }],
            "models": {MODEL: [DEPLOYMENT]},
            "tenants": {t: {"weight": 1} for t in self.tenant_ids},
            "worker": {"pool": "threads", "concurrency": self.worker_concurrency},
            "admission": {"enabled": admission},
        }, sort_keys=False)
