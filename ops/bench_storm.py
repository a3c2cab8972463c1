"""The storm: a summarizer's overnight backlog lands on a live copilot; the same traffic three ways.

    .venv/bin/python ops/bench_storm.py [--quick] [--modes direct,no-admission,gateway] [--via batches]
                                        [--stream-share 0.3]

(a) direct: each feature calls the provider (the simulator) itself with tenacity retries;
(b) the gateway with admission off; (c) the gateway. Each mode gets fresh processes (simulator with
realistic latency and a TPM-bound account, and for b/c worker + scheduler + api on a private Redis
prefix and a temp SQLite store). The copilot of 20 tenants runs throughout; at a fixed moment
tenant-00's summarizer dumps its backlog, with three rival summarizers dumping smaller ones at the
same moment (so fairness among equal-weight tenants can be measured). Prints the table, writes
ops/results/storm.json and ops/results/storm.png. Definitions: ops/storm/metrics.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.storm.metrics import summarize, timeline
from ops.storm.plot import plot
from ops.storm.run import MODES, run_mode
from ops.storm.scenario import Scenario
from shared.config import DeploymentConfig

RESULTS = Path(__file__).resolve().parent / "results"
HEADROOM_MAX = DeploymentConfig.model_fields["headroom_max"].default  # what the adaptive headroom approaches
TARGETS = "targets for (c), default config: 0 provider 429s | utilisation >= 98% | p99 during <= 1.2 x before | " \
          "drain <= 1.10 x physical minimum | Jain >= 0.95"


def _f(value: Any, fmt: str = "{:.2f}", none: str = "-") -> str:
    return none if value is None else fmt.format(value)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _rows(batch_tenants: list[str]) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    def ratio(s: dict[str, Any]) -> str:
        before, during = s["copilot_before"]["p99_s"], s["copilot_during"]["p99_s"]
        return _f(during / before if before and during else None, "{:.2f}x")

    return [
        ("provider 429s", lambda s: f"{s['provider']['rate_limited']}"),
        ("provider requests / accepted", lambda s: f"{s['provider']['requests']} / {s['provider']['accepted']}"),
        ("copilot before: success", lambda s: _f(s["copilot_before"]["success_rate"], "{:.1%}")),
        ("copilot before: p50 / p99", lambda s: f"{_ms(s['copilot_before']['p50_s'])} / "
                                                f"{_ms(s['copilot_before']['p99_s'])}"),
        ("copilot during: success", lambda s: _f(s["copilot_during"]["success_rate"], "{:.1%}")),
        ("copilot during: p50 / p99", lambda s: f"{_ms(s['copilot_during']['p50_s'])} / "
                                                f"{_ms(s['copilot_during']['p99_s'])}"),
        ("copilot p99 during / before", ratio),
        *_stream_rows(),
        ("backlog jobs succeeded", lambda s: f"{s['drain']['succeeded']} / {s['drain']['jobs']}"),
        ("TPM utilisation while draining", lambda s: _f(s["utilisation"]["tpm_utilisation"], "{:.1%}")),
        ("drain time", lambda s: _f(s["drain"]["drain_s"], "{:.1f} s", "not drained")),
        ("drain / minimum (tokens / TPM)", lambda s: _f(s["drain"]["drain_over_min"], "{:.3f}x")),
        ("drain / minimum beside copilot", lambda s: _f(s["drain"]["drain_over_min_with_copilot"], "{:.3f}x")),
        ("drain / physical minimum (burst, copilot)", lambda s: _f(s["drain"].get("drain_over_physical_min"),
                                                                   "{:.3f}x")),
        ("Jain's index (summarizers)", lambda s: _f(s["fairness"]["jain"], "{:.3f}")),
        ("input estimate error p50 / p90 / p99", lambda s: " / ".join(
            _f(s.get("estimate_error", {}).get(k), "{:.1%}") for k in ("p50", "p90", "p99"))),
        ("cost: copilot (all tenants)", lambda s: f"${s['cost']['by_feature'].get('copilot', 0):.4f}"),
        ("cost: copilot per tenant min/med/max", lambda s: "$" + "/".join(
            f"{s['cost']['copilot_per_tenant'][k]:.5f}" for k in ("min", "median", "max"))),
        ("cost: summarizer (all tenants)", lambda s: f"${s['cost']['by_feature'].get('summarizer', 0):.4f}"),
        ("CPU cores used, before / during", _cores),
    ] + [(f"cost: summarizer {t}", _tenant_cost(t)) for t in batch_tenants]


def _stream_rows() -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    """The copilot's streamed calls (``--stream-share``): first content and total, before / during."""
    def cell(key: str) -> Callable[[dict[str, Any]], str]:
        return lambda s: " / ".join(f"{_ms(s[w]['streamed'][f'{key}p50_s'])}, {_ms(s[w]['streamed'][f'{key}p99_s'])}"
                                    for w in ("copilot_before", "copilot_during"))

    def ok(s: dict[str, Any]) -> str:
        return " / ".join(f"{s[w]['streamed']['calls']} {_f(s[w]['streamed']['success_rate'], '{:.1%}')}"
                          for w in ("copilot_before", "copilot_during"))

    return [("streamed: calls, success (before / during)", ok),
            ("streamed: first content p50, p99 (b / d)", cell("first_content_")),
            ("streamed: total p50, p99 (before / during)", cell(""))]


def _cores(s: dict[str, Any]) -> str:
    used = s["cpu_cores"]
    return f"{sum(used['before'].values()):.2f} / {sum(used['during'].values()):.2f}"


def _tenant_cost(tenant: str) -> Callable[[dict[str, Any]], str]:
    return lambda s: f"${s['cost']['summarizer_per_tenant'].get(tenant, 0):.4f}"


def print_table(summaries: dict[str, dict[str, Any]], batch_tenants: list[str]) -> None:
    modes = list(summaries)
    width = max(34, *(len(MODES[m]) + 2 for m in modes))
    print(f"{'':38}" + "".join(f"{MODES[m]:>{width}}" for m in modes))
    for label, cell in _rows(batch_tenants):
        print(f"{label:38}" + "".join(f"{cell(summaries[m]):>{width}}" for m in modes))
    print(TARGETS)


def describe(scenario: Scenario) -> str:
    plan = ", ".join(f"{t} {n}" for t, n in scenario.batch_plan.items())
    return (f"account: TPM {scenario.tpm:,} (RPM {scenario.rpm:,}), enforced over {scenario.burst_s:g} s windows; "
            f"gateway: default headroom and lanes\n"
            f"copilot: {scenario.tenants} tenants, {scenario.copilot_rate:g} req/s Poisson "
            f"({scenario.copilot_stream_share:.0%} streamed), "
            f"~{scenario.copilot_tpm / 1000:.0f}k tokens/min; storm after {scenario.before_s:g} s: "
            f"summarizer jobs {plan} = {scenario.backlog_tokens:,} tokens, "
            f"tokens / TPM {scenario.min_drain_s:.1f} s, physical minimum (burst credit, copilot) "
            f"{scenario.physical_min_s:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller backlog and a shorter lead-in (~2 min)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {list(MODES)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where storm.json and storm.png go")
    parser.add_argument("--via", choices=("jobs", "batches"), default="jobs",
                        help="how the summarizers submit through the gateway: POST /v1/jobs/batch, or a JSONL "
                             "file through the Batch API (/v1/files + /v1/batches, followed to its end)")
    parser.add_argument("--stream-share", type=float, default=0.0,
                        help="share of the copilot's calls that ask for stream: true (0-1)")
    args = parser.parse_args()
    if not 0 <= args.stream_share <= 1:
        parser.error("--stream-share must be between 0 and 1")
    scenario = dataclasses.replace(Scenario.quick() if args.quick else Scenario(),
                                   copilot_stream_share=args.stream_share)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {list(MODES)}")
    print(describe(scenario), flush=True)
    started = time.time()
    summaries, lines = {}, {}
    for mode in modes:
        print(f"running {MODES[mode]} ...", flush=True)
        obs = run_mode(mode, scenario, args.via)
        summaries[mode], lines[mode] = summarize(obs, scenario), timeline(obs)
    print(f"\ncommand: {' '.join(sys.argv)}   ({time.time() - started:.0f} s)")
    print_table(summaries, list(scenario.batch_plan))
    args.out.mkdir(parents=True, exist_ok=True)
    name = "storm-quick" if args.quick else "storm"
    (args.out / f"{name}.json").write_text(json.dumps(
        {"command": " ".join(sys.argv), "scenario": describe(scenario), "summaries": summaries,
         "timelines": lines}, indent=1, default=str))
    plot(lines, scenario.tpm, HEADROOM_MAX, args.out / f"{name}.png")
    print(f"wrote {args.out / (name + '.json')} and {args.out / (name + '.png')}")


if __name__ == "__main__":
    main()
