"""What breaks and when, on which account: the storm's traffic, a two-deployment chain, a timeline.

The storm's copilot (20 tenants, sync) and a summarizer backlog (async, batch lane) run on one
model whose chain is the primary ``gpt-4o-mini@sim`` (OpenAI format) and a fallback
``claude-haiku@sim`` (Anthropic format: every fallback is a cross-provider translation). The
account is scaled down from the storm's so the backlog keeps the primary busy from the start until
after the last fault. Five faults, one after the other, each with a window of its own so its effect
can be measured alone:

    0 ─ lead ─┬ outage (primary 503s) ┬─ kill -9 ─┬─ kill -9 the ─┬─ kill -9 ─┬─ kill -9 ─┬─ ... stop ─ drain
              │ outage_s              │  a worker │  leading      │  an api   │  Redis    │
              └ outage start          └ end       │  scheduler    │           │ (empty)   │

Around the worker's kill, streaming callers (``stream: true`` in both dialects, ``X-Gateway-Priority:
standard`` so a worker sends them) open answers long enough (a few seconds each) that some are
mid-stream in the worker killed; they ask for ``gpt-4o``, a deployment of its own
(``STREAM_DEPLOYMENT``), so the storm's accounting is unchanged.

A killed worker, scheduler or api is started again ``replace_after_s`` later (what a supervisor does).
The gateway runs on its default configuration (timeouts, attempt leases, heartbeat, recovery,
leader lease) except the breaker: ``open_s`` 5 instead of 15, so the 15 s outage holds half-open
probes that fail (with the default, the first probe comes after the outage has ended).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from ops.storm.scenario import DEPLOYMENT, MODEL, Scenario

FALLBACK = "claude-haiku@sim"
FALLBACK_MODEL = "claude-haiku-4-5"
STREAM_DEPLOYMENT = "gpt-4o@sim"  # the streaming callers' model: long answers, an account of its own
STREAM_MODEL = "gpt-4o"
STREAM_LIMITS = {"rpm": 10_000, "tpm": 2_000_000}
STREAM_OUTPUT = {"dist": "lognormal", "median": 250, "sigma": 0.3, "max": 500}  # ~4 s at 15 ms a token
WORKERS = 2
SCHEDULERS = 2  # one leads, one stands by
APIS = 2  # two api processes on two ports; the callers' round robin skips one that refuses connections

BREAKER = {"window_s": 10, "min_calls": 10, "failure_rate": 0.5, "open_s": 5, "half_open_probes": 3,
           "probe_timeout_s": 20, "slow_call_s": 15}

Kill = Literal["worker", "scheduler", "api", "redis"]
KILLS: tuple[Kill, ...] = ("worker", "scheduler", "api", "redis")


@dataclass(frozen=True)
class ChaosPlan:
    """The traffic (a storm ``Scenario``), the fallback's account and the fault timeline (seconds)."""

    scenario: Scenario
    lead_s: float = 20.0  # steady traffic before the outage; the rate to recover to is measured here
    outage_s: float = 15.0
    first_kill_after_s: float = 15.0  # after the outage ended: the worker
    between_kills_s: float = 15.0  # then the scheduler, the api, Redis, each this long after the last
    replace_after_s: float = 3.0  # a supervisor starts a new worker, scheduler or api this long after the kill
    stop_after_s: float = 15.0  # the copilot stops this long after the last kill
    drain_cap_s: float = 120.0  # then every accepted job must be terminal within this
    rate_window_s: float = 10.0  # the primary's pre-outage rate: over this long before the outage
    recovered_share: float = 0.9  # "full traffic": the primary's rate back to this share of it
    fallback_limits: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"rpm": 6_000, "itpm": 150_000, "otpm": 60_000})
    stream_rate: float = 4.0  # streaming callers opened per second (Poisson), half of them Anthropic's dialect
    streams_before_kill_s: float = 8.0  # they open from this long before the worker's kill ...
    streams_after_kill_s: float = 2.0  # ... until this long after it
    stream_wait_s: float = 90.0  # a stream not ended (last event or error event) by then is a hang

    @classmethod
    def full(cls) -> ChaosPlan:
        return cls(_scenario(storm_jobs=850, rival_jobs=50))

    @classmethod
    def quick(cls) -> ChaosPlan:
        return cls(_scenario(storm_jobs=480, rival_jobs=40), lead_s=10.0, first_kill_after_s=8.0,
                   between_kills_s=11.0, stop_after_s=11.0, drain_cap_s=60.0, rate_window_s=6.0)

    # -- the timeline, relative to the start ------------------------------------------------------

    @property
    def outage_end_s(self) -> float:
        return self.lead_s + self.outage_s

    def kill_at_s(self, what: Kill) -> float:
        return self.outage_end_s + self.first_kill_after_s + KILLS.index(what) * self.between_kills_s

    @property
    def streams_s(self) -> tuple[float, float]:
        """When streaming callers open: around the worker's kill."""
        at = self.kill_at_s("worker")
        return at - self.streams_before_kill_s, at + self.streams_after_kill_s

    @property
    def traffic_s(self) -> float:
        """When the copilot stops."""
        return self.kill_at_s(KILLS[-1]) + self.stop_after_s

    def describe(self) -> str:
        s = self.scenario
        jobs = sum(s.batch_plan.values())
        kills = ", ".join(f"{what} at {self.kill_at_s(what):g} s" for what in KILLS)
        return (f"primary {DEPLOYMENT} (OpenAI format, TPM {s.tpm:,}) -> fallback {FALLBACK} (Anthropic format, "
                f"ITPM {self.fallback_limits['itpm']:,}); {WORKERS} workers x {s.worker_concurrency // WORKERS} "
                f"threads, {SCHEDULERS} schedulers, {APIS} api processes (the callers' round robin)\n"
                f"traffic: copilot {s.copilot_rate:g} req/s over {s.tenants} tenants (sync) + "
                f"{jobs} summarizer jobs dumped at the start (batch) + streaming callers {self.stream_rate:g}/s "
                f"{self.streams_s[0]:g}-{self.streams_s[1]:g} s ({STREAM_MODEL}, standard lane: through a worker)"
                f"\ntimeline: outage of the primary (503) "
                f"{self.lead_s:g}-{self.outage_end_s:g} s; kill -9: {kills} (a new worker, scheduler or api "
                f"{self.replace_after_s:g} s later; Redis restarted empty at once); copilot stops at "
                f"{self.traffic_s:g} s; drain cap {self.drain_cap_s:g} s\n"
                f"gateway defaults (timeouts, leases, heartbeat, recovery, leader lease) but the breaker: {BREAKER}")

    # -- configs ----------------------------------------------------------------------------------

    def sim_yaml(self) -> str:
        """The storm's simulator plus the fallback's model, with the same latency and replies."""
        config = yaml.safe_load(self.scenario.sim_yaml([]))
        primary = config["models"][MODEL]
        config["models"][FALLBACK_MODEL] = {
            "limits": {**self.fallback_limits, "burst_window_s": self.scenario.burst_s},
            "latency": primary["latency"], "output": primary["output"],
        }
        config["models"][STREAM_MODEL] = {
            "limits": {**STREAM_LIMITS, "burst_window_s": self.scenario.burst_s},
            "latency": primary["latency"], "output": STREAM_OUTPUT,
        }
        return yaml.safe_dump(config, sort_keys=False)

    def gateway_yaml(self, sim_port: int) -> str:
        """The storm's gateway config with the two-deployment chain and the shorter breaker; every
        other setting (timeouts, admission leases and heartbeat, recovery, leader lease) is the default."""
        config: dict[str, Any] = yaml.safe_load(self.scenario.gateway_yaml(sim_port, admission=True))
        config["providers"]["sim-anthropic"] = {"kind": "anthropic", "base_url": f"http://127.0.0.1:{sim_port}",
                                                "api_key_env": "SIM_ANTHROPIC_KEY"}
        primary = config["deployments"][0]
        primary.update(breaker=BREAKER)
        config["deployments"].append({
            "name": FALLBACK, "provider": "sim-anthropic", "model": FALLBACK_MODEL, "limits": self.fallback_limits,
            "burst_s": primary["burst_s"], "breaker": BREAKER,
        })
        config["deployments"].append({
            "name": STREAM_DEPLOYMENT, "provider": "sim-openai", "model": STREAM_MODEL, "limits": STREAM_LIMITS,
            "burst_s": primary["burst_s"], "breaker": BREAKER,
        })
        config["models"][MODEL] = [DEPLOYMENT, FALLBACK]
        config["models"][STREAM_MODEL] = [STREAM_DEPLOYMENT]
        return yaml.safe_dump(config, sort_keys=False)


def _scenario(storm_jobs: int, rival_jobs: int) -> Scenario:
    """The storm's traffic on half its account, so a backlog of a few hundred jobs lasts the timeline."""
    return Scenario(tpm=300_000, rpm=30_000, storm_jobs=storm_jobs, rival_jobs=rival_jobs)
