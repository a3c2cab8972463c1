"""What breaks and when, on which account: the storm's traffic, a two-deployment chain, a timeline.

The storm's copilot (20 tenants, sync) and a summarizer backlog (async, batch lane) run on one
model whose chain is the primary ``gpt-4o-mini@sim`` (OpenAI format) and a fallback
``claude-haiku@sim`` (Anthropic format: every fallback is a cross-provider translation). The
account is scaled down from the storm's so the backlog keeps the primary busy from the start until
after Redis has restarted without thousands of jobs. Then, on a fixed timeline:

    0 ─ lead_s ─┬─ outage_s (primary answers 503) ─┬─ redis_after_s ─┬─ ... ─ traffic_s ─ drain
                └ kill_after_s: kill -9 one worker  │                 └ kill -9 Redis, restart empty
                  (+ replace_after_s: a new one)    └ outage ends: recovery is measured from here
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import yaml

from ops.storm.scenario import DEPLOYMENT, MODEL, Scenario

FALLBACK = "claude-haiku@sim"
FALLBACK_MODEL = "claude-haiku-4-5"
WORKERS = 2

# Shorter than the gateway's defaults so one run shows several half-open cycles within the outage,
# and so an attempt orphaned by kill -9 is noticed in seconds (its lease is the total timeout + margin).
BREAKER = {"window_s": 10, "min_calls": 10, "failure_rate": 0.5, "open_s": 5, "half_open_probes": 3,
           "probe_timeout_s": 20, "slow_call_s": 15}
TIMEOUTS = {"connect": 2, "read": 20, "total": 25}
ADMISSION = {"dispatch_lease_s": 10, "lease_margin_s": 5, "reconcile_every_s": 2}


@dataclass(frozen=True)
class ChaosPlan:
    """The traffic (a storm ``Scenario``), the fallback's account and the fault timeline (seconds)."""

    scenario: Scenario
    lead_s: float = 20.0  # steady traffic before the outage; the rate to recover to is measured here
    outage_s: float = 30.0
    kill_after_s: float = 15.0  # into the outage
    replace_after_s: float = 3.0  # a supervisor starts a new worker this long after the kill
    redis_after_s: float = 20.0  # after the outage ended
    traffic_s: float = 95.0  # the copilot stops this long after the start
    drain_cap_s: float = 120.0  # then every accepted job must be terminal within this
    rate_window_s: float = 10.0  # the primary's pre-outage rate: over this long before the outage
    recovered_share: float = 0.9  # "full traffic": the primary's rate back to this share of it
    fallback_limits: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"rpm": 6_000, "itpm": 150_000, "otpm": 60_000})

    @classmethod
    def full(cls) -> ChaosPlan:
        return cls(_scenario(storm_jobs=850, rival_jobs=50))

    @classmethod
    def quick(cls) -> ChaosPlan:
        return cls(_scenario(storm_jobs=480, rival_jobs=40), lead_s=10.0, outage_s=20.0, kill_after_s=8.0,
                   redis_after_s=15.0, traffic_s=60.0, drain_cap_s=60.0, rate_window_s=6.0)

    # -- the timeline, relative to the start ------------------------------------------------------

    @property
    def outage_end_s(self) -> float:
        return self.lead_s + self.outage_s

    @property
    def kill_at_s(self) -> float:
        return self.lead_s + self.kill_after_s

    @property
    def redis_at_s(self) -> float:
        return self.outage_end_s + self.redis_after_s

    def describe(self) -> str:
        s = self.scenario
        jobs = sum(s.batch_plan.values())
        return (f"primary {DEPLOYMENT} (OpenAI format, TPM {s.tpm:,}) -> fallback {FALLBACK} (Anthropic format, "
                f"ITPM {self.fallback_limits['itpm']:,}); {WORKERS} workers x {s.worker_concurrency // WORKERS} "
                f"threads\ntraffic: copilot {s.copilot_rate:g} req/s over {s.tenants} tenants (sync) + "
                f"{jobs} summarizer jobs dumped at the start (batch)\ntimeline: outage of the primary (503) "
                f"{self.lead_s:g}-{self.outage_end_s:g} s; kill -9 a worker at {self.kill_at_s:g} s, new one "
                f"{self.replace_after_s:g} s later; kill -9 Redis at {self.redis_at_s:g} s, restarted empty; "
                f"copilot stops at {self.traffic_s:g} s; drain cap {self.drain_cap_s:g} s\n"
                f"breaker: {BREAKER}")

    # -- configs ----------------------------------------------------------------------------------

    def sim_yaml(self) -> str:
        """The storm's simulator plus the fallback's model, with the same latency and replies."""
        config = yaml.safe_load(self.scenario.sim_yaml([]))
        primary = config["models"][MODEL]
        config["models"][FALLBACK_MODEL] = {
            "limits": {**self.fallback_limits, "burst_window_s": self.scenario.burst_s},
            "latency": primary["latency"], "output": primary["output"],
        }
        return yaml.safe_dump(config, sort_keys=False)

    def gateway_yaml(self, sim_port: int) -> str:
        """The storm's gateway config with the two-deployment chain, breakers, timeouts and leases."""
        config: dict[str, Any] = yaml.safe_load(self.scenario.gateway_yaml(sim_port, admission=True))
        config["providers"]["sim-anthropic"] = {"kind": "anthropic", "base_url": f"http://127.0.0.1:{sim_port}",
                                                "api_key_env": "SIM_ANTHROPIC_KEY"}
        primary = config["deployments"][0]
        primary.update(timeouts=TIMEOUTS, breaker=BREAKER)
        config["deployments"].append({
            "name": FALLBACK, "provider": "sim-anthropic", "model": FALLBACK_MODEL, "limits": self.fallback_limits,
            "headroom": primary["headroom"], "burst_s": primary["burst_s"], "timeouts": TIMEOUTS, "breaker": BREAKER,
        })
        config["models"][MODEL] = [DEPLOYMENT, FALLBACK]
        config["admission"].update(ADMISSION)
        config["api"] = {"max_sync_wait_s": 60}
        return yaml.safe_dump(config, sort_keys=False)


def _scenario(storm_jobs: int, rival_jobs: int) -> Scenario:
    """The storm's traffic on half its account, so a backlog of a few hundred jobs lasts the timeline."""
    return Scenario(tpm=300_000, rpm=30_000, storm_jobs=storm_jobs, rival_jobs=rival_jobs)

