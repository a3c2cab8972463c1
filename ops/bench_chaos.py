"""The chaos benchmark: the storm's traffic while the provider, a worker and Redis fail.

    .venv/bin/python ops/bench_chaos.py [--quick]

Starts its own processes (simulator; two workers, scheduler and api on a private ``redis-server``
and a temp SQLite store; all on 127.0.0.1), runs the storm's copilot and a summarizer backlog on a
two-deployment chain (OpenAI-format primary, Anthropic-format fallback), and on a fixed timeline:
a 30 s outage of the primary (503s), kill -9 of one of the two workers mid-outage (a new one a few
seconds later), kill -9 of Redis after the recovery (restarted empty on the same port). Then waits,
bounded, until every accepted job has ended. Prints the table and writes ops/results/chaos.json
(chaos-quick.json with --quick). Definitions: ops/chaos/measure.py; timeline: ops/chaos/plan.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.chaos.measure import summarize
from ops.chaos.plan import ChaosPlan
from ops.chaos.run import run

RESULTS = Path(__file__).resolve().parent / "results"


def _s(value: float | None, fmt: str = "{:.1f} s") -> str:
    return "-" if value is None else fmt.format(value)


def _check(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def rows(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, value, target) lines of the table."""
    jobs, bill, dead, rec, fb = s["jobs"], s["charges"], s["dead_provider"], s["recovery"], s["fallback"]
    failed = ", ".join(f"{n} {why}" for why, n in sorted(jobs["failed_by_reason"].items())) or "none"
    refused = sum(jobs["refused_at_submit"].values())
    out = [
        ("jobs accepted (copilot + backlog)", f"{jobs['accepted']} ({jobs['by_lane']})", ""),
        ("  refused at submit (never accepted)", f"{refused}", ""),
        ("succeeded", f"{jobs['succeeded']}", ""),
        ("failed, by reason", f"{jobs['failed']}: {failed}", ""),
        ("expired / cancelled", f"{jobs['expired']} / {jobs['cancelled']}", ""),
        ("lost (accepted, not terminal or missing)", f"{jobs['lost']}", f"0 {_check(jobs['lost'] == 0)}"),
        ("gateway processes crashed (supervisor restarted)", _crashes(s["crashes"]), f"0 {_check(not s['crashes'])}"),
        ("duplicate charges", f"{bill['duplicate_charges']}", f"0 {_check(bill['duplicate_charges'] == 0)}"),
        ("provider successes never recorded", f"{bill['unrecorded_provider_calls']} of {bill['provider_successes']}",
         "(paid to the provider, billed to nobody)"),
        ("answered by deployment", ", ".join(f"{d} {n}" for d, n in fb["succeeded_attempts"].items()), ""),
        ("  during the outage", ", ".join(f"{d} {n}" for d, n in fb["succeeded_during_outage"].items()), ""),
        ("provider 429s by model", ", ".join(f"{m} {n}" for m, n in fb["provider_429s"].items()), ""),
    ]
    return out + _dead_rows(dead) + [
        ("primary req/s before the outage", f"{rec['primary_rps_before']:.1f}", ""),
        ("outage end -> breaker closed", _s(rec["breaker_closed_after_s"]), ""),
        ("outage end -> full traffic (>= 90% req/s)", _s(rec["full_traffic_after_s"]), ""),
    ]


def _crashes(crashes: list[dict[str, Any]]) -> str:
    if not crashes:
        return "0"
    return f"{len(crashes)}: " + ", ".join(f"{c['role']} at {c['at_s']:.0f} s (exit {c['exit_code']})" for c in crashes)


def _dead_rows(dead: dict[str, Any]) -> list[tuple[str, str, str]]:
    sim = f"{dead['requests_to_primary_during_outage']} requests, {dead['answered_503']} answered 503"
    if not dead["breaker_opened"]:
        return [("breaker opened", "no", "MISSED"), ("primary's model during the outage (simulator)", sim, "")]
    sent = dead["sent_while_open"]
    return [
        ("breaker opened after outage start", _s(dead["opened_after_s"], "{:.2f} s"), ""),
        ("attempts to the primary before it opened", f"{dead['sent_before_open']}", "(detection)"),
        ("half-open probes", f"{dead['probes']} in {dead['half_open_periods']} half-open periods "
                             f"({dead['attempts_per_period'][1:]})",
         f"<= {dead['probes_allowed_per_period']} per period"),
        ("attempts sent while open (not probes)", f"{sent}" + (
            f" (the first open period's started {_s(max(late), '{:.3f} s')} or less after it opened)"
            if (late := dead["first_open_period_starts_after_open_s"]) else ""), f"0 {_check(sent == 0)}"),
        ("primary's model during the outage (simulator)", sim, ""),
    ]


def print_table(summary: dict[str, Any]) -> None:
    lines = rows(summary)
    width = max(len(label) for label, _, _ in lines) + 2
    for label, value, target in lines:
        print(f"{label:{width}}{value}{'   target ' + target if target.startswith(('0', '<')) else '   ' + target}")
    print("copilot (sync calls, per phase): " + " | ".join(
        f"{phase[2:]}: {p['ok']}/{p['calls']} ok, p99 {_s(p['p99_s'], '{:.2f} s')}"
        for phase, p in summary["copilot"].items()))


def calls(obs: Any) -> list[dict[str, Any]]:
    """Every copilot call as its caller saw it (for plots and for finding the slow ones in the store)."""
    return [{"sent_s": round(c.sent - obs.t0, 3), "latency_s": None if c.latency_s is None else round(c.latency_s, 3),
             "status": c.status, "job_id": c.job_id} for c in obs.calls]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 20 s outage and a shorter timeline (~2 min)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where chaos.json goes")
    args = parser.parse_args()
    plan = ChaosPlan.quick() if args.quick else ChaosPlan.full()
    print(plan.describe(), flush=True)
    started = time.time()
    obs = run(plan, progress=lambda line: print(line, flush=True))
    summary = summarize(obs)
    print(f"\ncommand: {' '.join(sys.argv)}   ({time.time() - started:.0f} s; logs in {obs.logs})")
    print_table(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("chaos-quick.json" if args.quick else "chaos.json")
    raw = {"copilot_calls": calls(obs), "sim_samples": obs.watched.samples}
    path.write_text(json.dumps({"command": " ".join(sys.argv), "plan": plan.describe(), "summary": summary, **raw},
                               indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
