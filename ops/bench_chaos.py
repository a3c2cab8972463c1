"""The chaos benchmark: the storm's traffic while the provider, a worker, the scheduler, an api and Redis fail.

    .venv/bin/python ops/bench_chaos.py [--quick] [--database-url postgresql://...]

Starts its own processes (simulator; two workers, two schedulers and two api processes on a private
``redis-server`` and a temp SQLite store or the PostgreSQL database given; all on 127.0.0.1), runs
the storm's copilot and a summarizer backlog on a two-deployment chain (OpenAI-format primary,
Anthropic-format fallback) with the gateway's default timeouts, leases and recovery, and on a fixed
timeline: a 15 s outage of the primary (503s), then kill -9 of a worker (with streaming callers open
through it), of the leading scheduler, of
an api process (each started again a few seconds later) and of Redis (restarted empty on the same
port). Then waits, bounded, until every accepted job has ended. Prints the tables and writes
ops/results/chaos.json (chaos-postgres.json on PostgreSQL; -quick with --quick). Definitions:
ops/chaos/measure.py; timeline: ops/chaos/plan.py.
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

from ops.bench_gateway import create_pg_database
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
    callers = s["callers_failed"]
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
        ("callers that saw an error while a fallback was healthy", f"{callers['while_fallback_healthy']}",
         f"0 {_check(callers['while_fallback_healthy'] == 0)}"),
        ("  refused while the gateway's Redis was down (503, not accepted)", f"{callers['refused_redis_down']}", ""),
        ("provider successes never recorded", f"{bill['unrecorded_provider_calls']} of {bill['provider_successes']}",
         "(paid to the provider, billed to nobody)"),
        ("dispatches stranded (message lost), sent again after", _stranded(s["stranded_dispatches"]), ""),
        ("answered by deployment", ", ".join(f"{d} {n}" for d, n in fb["succeeded_attempts"].items()), ""),
        ("  during the outage", ", ".join(f"{d} {n}" for d, n in fb["succeeded_during_outage"].items()), ""),
        ("provider 429s by model", ", ".join(f"{m} {n}" for m, n in fb["provider_429s"].items()), ""),
    ]
    return out + _stream_rows(s["streams"]) + _dead_rows(dead) + [
        ("primary req/s before the outage", f"{rec['primary_rps_before']:.1f}", ""),
        ("outage end -> breaker closed", _s(rec["breaker_closed_after_s"]), ""),
        ("outage end -> full traffic (>= 90% req/s)", _s(rec["full_traffic_after_s"]), ""),
    ]


def _stream_rows(st: dict[str, Any]) -> list[tuple[str, str, str]]:
    def outcomes(counts: dict[str, int]) -> str:
        return ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "none"

    return [
        ("streaming callers (through a worker)", f"{st['opened']}: {outcomes(st['by_outcome'])}", ""),
        ("  open at the worker's kill / mid-stream", f"{st['open_at_worker_kill']} / "
                                                    f"{outcomes(st['mid_stream_at_kill'])}", ""),
        ("  in the killed worker", f"{outcomes(st['in_killed_worker'])}, the last ended "
                                   f"{_s(st['killed_worker_ended_after_s'])} after the kill", ""),
        ("  error events, by code", outcomes(st["errors"]), ""),
        ("  wrong answers, cut off or hung", f"{st['bad']}", f"0 {_check(st['bad'] == 0)}"),
        ("  streamed jobs billed twice", f"{st['billed_twice']}", f"0 {_check(st['billed_twice'] == 0)}"),
    ]


def _stranded(found: list[dict[str, Any]]) -> str:
    if not found:
        return "0"
    return f"{len(found)}, " + ", ".join(_s(d["sent_after_s"]) for d in found)


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


TARGET_S = {"worker": ("re-sent", 10.0), "api": ("re-sent", 10.0), "scheduler": ("back", 2.0)}


def fault_rows(s: dict[str, Any]) -> list[list[str]]:
    """One line per fault: affected jobs and when re-sent, when new calls succeed, when the role was back."""
    out = [["fault", "at", "affected jobs", "re-sent after (median / max)", "new calls ok again after",
            "back after", "copilot ok in window, p99", "target"]]
    for f in s["faults"]:
        resent = f["resent_after_s"]
        calls = f["interactive"]
        out.append([f["fault"], f"{f['at_s']:.0f} s", f"{f['affected_jobs']}" + (
            f" ({len(f['not_resent'])} never)" if f["not_resent"] else ""),
            f"{_s(resent['median'])} / {_s(resent['max'])}", _s(f["ok_again_after_s"]), _s(f.get("back_after_s")),
            f"{calls['ok']}/{calls['calls']}, {_s(calls['p99_s'], '{:.2f} s')}", _fault_target(f)])
    return out


def _fault_target(f: dict[str, Any]) -> str:
    if f["fault"] not in TARGET_S:
        return ""
    what, limit = TARGET_S[f["fault"]]
    value = f["resent_after_s"]["max"] if what == "re-sent" else f.get("back_after_s")
    return f"{what} <= {limit:g} s " + ("-" if value is None else _check(value <= limit))


def _fault_notes(s: dict[str, Any]) -> list[str]:
    notes = []
    for f in s["faults"]:
        if "leases_live_at_kill" in f:
            notes.append(f"{f['fault']}: at the kill {f['leases_live_at_kill']} attempt leases live "
                         f"({f['dispatches_not_taken_at_kill']} of them dispatches no worker had taken), "
                         f"{f['queued_at_kill']} jobs queued" + (f"; never re-sent: {', '.join(f['not_resent'])}"
                                                                 if f["not_resent"] else ""))
        if "admission_resumed_after_s" in f:
            notes.append(f"{f['fault']}: batch admission resumed {_s(f['admission_resumed_after_s'])} after the kill")
        if dropped := f.get("dropped_callers"):
            notes.append(f"{f['fault']}: {dropped['dropped']} copilot calls dropped mid-call, {dropped['answered']} "
                         f"answered by asking again with their Idempotency-Key, the last "
                         f"{_s(dropped['last_answered_after_s'])} after the kill")
    return notes


def _stranded_notes(s: dict[str, Any]) -> list[str]:
    return [f"stranded dispatch (no worker took its message): job {d['job']} sent at {d['dispatched_at_s']:.1f} s "
            f"({d['after']}), sent again {_s(d['sent_after_s'])} later" for d in s["stranded_dispatches"]]


def print_table(summary: dict[str, Any]) -> None:
    lines = rows(summary)
    width = max(len(label) for label, _, _ in lines) + 2
    for label, value, target in lines:
        print(f"{label:{width}}{value}{'   target ' + target if target.startswith(('0', '<')) else '   ' + target}")
    print()
    table = fault_rows(summary)
    widths = [max(len(r[i]) for r in table) + 2 for i in range(len(table[0]))]
    for r in table:
        print("".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    for note in _fault_notes(summary) + _stranded_notes(summary):
        print(note)


def calls(obs: Any) -> list[dict[str, Any]]:
    """Every copilot call as its caller saw it (for plots and for finding the slow ones in the store)."""
    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - obs.t0, 3)

    return [{"sent_s": rel(c.sent), "latency_s": None if c.latency_s is None else round(c.latency_s, 3),
             "status": c.status, "error": c.error, "dropped_s": rel(c.dropped), "job_id": c.job_id}
            for c in obs.calls]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 20 s outage and a shorter timeline (~2 min)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where chaos.json goes")
    parser.add_argument("--database-url", help="result store (default: a temp SQLite file); e.g. "
                        "postgresql://postgres@127.0.0.1:5432/gw_chaos (dropped and created again)")
    args = parser.parse_args()
    plan = ChaosPlan.quick() if args.quick else ChaosPlan.full()
    print(plan.describe(), flush=True)
    print(f"result store: {'PostgreSQL' if args.database_url else 'SQLite (temp file)'}", flush=True)
    if args.database_url:
        create_pg_database(args.database_url)
    started = time.time()
    obs = run(plan, progress=lambda line: print(line, flush=True), database_url=args.database_url)
    summary = summarize(obs)
    print(f"\ncommand: {' '.join(sys.argv)}   ({time.time() - started:.0f} s; logs in {obs.logs})")
    print_table(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"chaos{'-postgres' if args.database_url else ''}{'-quick' if args.quick else ''}.json"
    raw = {"copilot_calls": calls(obs), "sim_samples": obs.watched.samples,
           "kills": [{"role": k.role, "at_s": round(k.killed.at - obs.t0, 3), "lease_ttl_ms": k.ttl_ms,
                      "new_token_at_s": {j: round(t - obs.t0, 3) for j, t in k.new_token_at.items()}}
                     for k in obs.kills]}
    path.write_text(json.dumps({"command": " ".join(sys.argv), "plan": plan.describe(), "summary": summary, **raw},
                               indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
