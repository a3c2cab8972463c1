"""The semantic cache's precision and recall on its labeled set (``ops/cache_eval/pairs.py``), and what
its lookup costs in-process.

    .venv/bin/python ops/eval_cache.py                 # ~5 s: thresholds 0.5-0.95, the default marked
    .venv/bin/python ops/eval_cache.py --show-misses   # and list the true pairs it did not serve

Two sets: the one the guard was built with, and one held out (written after it was frozen, never used
to tune it). A pair counts as a semantic hit when its questions' similarity reaches the threshold and the guard
(``shared.cache.guard``) passes it: exactly what a lookup does once it has the nearest entry.
Precision = true pairs among the hits; recall = hits among the true pairs. The latency part times
what a lookup does in the api besides its Redis round trips (embed the question, search a scope of
``--entries`` records, run the guard on the candidates), on a miss and on a hit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from ops.cache_eval.pairs import HELD_OUT, ITEMS, Item, pairs  # noqa: E402
from shared.cache.embedder import StaticEmbedder  # noqa: E402
from shared.cache.guard import near_miss  # noqa: E402
from shared.cache.semantic import Record, SemanticIndex  # noqa: E402
from shared.config import CacheConfig  # noqa: E402

Pair = tuple[str, str, bool, str]


def score(scored: list[tuple[Pair, float, str | None]], threshold: float) -> dict[str, object]:
    """Precision and recall at ``threshold``, and what was served wrongly or missed, by kind."""
    hits = [(p, sim) for p, sim, reason in scored if sim >= threshold and reason is None]
    true_hits = sum(1 for p, _ in hits if p[2])
    positives = sum(1 for p, _, _ in scored if p[2])
    wrong = Counter(p[3] for p, _ in hits if not p[2])
    served = {id(p) for p, _ in hits}
    missed = Counter(p[3] for p, _, _ in scored if p[2] and id(p) not in served)
    return {"precision": true_hits / len(hits) if hits else 1.0, "recall": true_hits / positives,
            "hits": len(hits), "wrong": dict(wrong), "missed": dict(missed)}


def latency(embedder: StaticEmbedder, entries: int, rounds: int = 400) -> dict[str, float]:
    """p50/p99 in ms of embed + search + guard over a scope of ``entries`` records, miss and hit."""
    questions = [item.question for item in ITEMS] + [s for item in ITEMS for s in item.same]
    index = SemanticIndex()
    records = [Record(embedder.embed(f"{questions[i % len(questions)]} #{i}"), f"{questions[i % len(questions)]} #{i}",
                      f"d{i}", f"job{i}", time.time() + 3600) for i in range(entries)]
    index.update("scope", "epoch", entries, entries, [r.dumps() for r in records], full=True)
    timings: dict[str, list[float]] = {"miss": [], "hit": []}
    threshold = CacheConfig().semantic_threshold
    for n in range(rounds):
        for kind, text in (("miss", f"How do I tune a violin, attempt {n}?"), ("hit", records[n % entries].text)):
            started = time.perf_counter()
            found = index.nearest("scope", embedder.embed(text), threshold)
            next((c for c in found if near_miss(text, c.record.text) is None), None)
            timings[kind].append((time.perf_counter() - started) * 1000)
    return {f"{kind} p{q}": float(np.percentile(values, q)) for kind, values in timings.items() for q in (50, 99)}


def evaluate(name: str, items: tuple[Item, ...], embedder: StaticEmbedder, show_misses: bool) -> None:
    labeled = pairs(items)
    scored = [((a, b, same, kind), float(embedder.embed(a) @ embedder.embed(b)), near_miss(b, a))
              for a, b, same, kind in labeled]
    kinds = Counter((kind, same) for _, _, same, kind in labeled)
    print(f"\n{name}: {len(labeled)} labeled pairs from {len(items)} questions: "
          f"{sum(1 for p in labeled if p[2])} true (same answer), {sum(1 for p in labeled if not p[2])} near misses")
    print("  true:  " + ", ".join(f"{k} {n}" for (k, same), n in sorted(kinds.items()) if same))
    print("  near:  " + ", ".join(f"{k} {n}" for (k, same), n in sorted(kinds.items()) if not same))
    default = CacheConfig().semantic_threshold
    print(f"{'threshold':>9} {'precision':>9} {'recall':>7} {'hits':>5}  "
          "wrong hits by kind / true pairs missed by kind")
    for threshold in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
        s = score(scored, threshold)
        mark = " <- default" if threshold == default else ""
        print(f"{threshold:>9} {s['precision']:>9.3f} {s['recall']:>7.3f} {s['hits']:>5}  "
              f"wrong {s['wrong'] or '{}'} / missed {s['missed']}{mark}")
    guard_only = sum(1 for (_, _, same, _), _, reason in scored if not same and reason is None)
    sim_only = sum(1 for (_, _, same, _), sim, _ in scored if not same and sim >= default)
    print(f"near misses the guard alone would pass: {guard_only}; the threshold alone ({default}) would: {sim_only}")
    if show_misses:
        for (a, b, same, kind), sim, reason in scored:
            if same and (sim < default or reason):
                print(f"  missed {kind:>10} sim {sim:.2f} {reason or 'threshold':>9}: {a!r} / {b!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=2000, help="records in the scope the latency part searches")
    parser.add_argument("--show-misses", action="store_true")
    args = parser.parse_args()
    embedder = StaticEmbedder()
    print(f"embedder: {embedder.name}; guard: shared/cache/guard.py; default threshold "
          f"{CacheConfig().semantic_threshold}")
    evaluate("the set the guard was built with", ITEMS, embedder, args.show_misses)
    evaluate("held out (written after the guard was frozen)", HELD_OUT, embedder, args.show_misses)
    lat = latency(embedder, args.entries)
    print(f"\nin-process lookup (embed + search {args.entries} records + guard), ms: "
          + ", ".join(f"{k} {v:.3f}" for k, v in lat.items()))
    print(f"   (mean of an embed alone: {statistics.mean(_embed_times(embedder)):.3f} ms)")


def _embed_times(embedder: StaticEmbedder, n: int = 200) -> list[float]:
    out = []
    for i in range(n):
        started = time.perf_counter()
        embedder.embed(f"How do I reset my password for account {i}?")
        out.append((time.perf_counter() - started) * 1000)
    return out


if __name__ == "__main__":
    main()
