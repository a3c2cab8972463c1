"""What the choke point costs and how well it finds things (``shared.privacy``), in one process.

1. Latency: redaction (every detector on, values tokenized) and, separately, the injection screen, on
   a ~2,000-token prompt with 24 sensitive values, run ``--runs`` times: p50/p90/p99 and the mean.
2. Detection quality on the labeled set (``ops/privacy/labeled.py``): recall per detector on well-formed
   values, false positives on look-alikes, and the screen's precision and recall at its threshold.

    .venv/bin/python ops/bench_privacy.py            # ~20 s
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ops.privacy.labeled import injection_samples, look_alikes, pii_samples
from shared.config import Settings
from shared.privacy.detectors import _is_phone, find_all
from shared.privacy.policy import Policies, Policy
from shared.privacy.redaction import redact_request
from shared.privacy.screen import screen_request
from shared.tokens import count_tokens

ALL_ON = {"email": "tokenize", "phone": "tokenize", "card": "mask", "iban": "mask", "national_id": "mask",
          "ip": "mask", "secret": "mask"}


def policy() -> Policy:
    settings = Settings(privacy={"redaction": ALL_ON, "screen": "flag"})
    return Policies(settings).for_call("acme", "default")


_WORDS = ("the customer asked about their order and we checked the account history before replying with a summary "
          "of the shipping status refund policy and next steps for the team to follow up on")


def long_prompt(tokens: int = 2000, seed: int = 3) -> dict[str, Any]:
    """A support conversation of ~``tokens`` tokens with sensitive values spread through it."""
    rng = random.Random(seed)
    words = _WORDS.split(" ")
    values = [v for samples in pii_samples(4, seed=seed).values() for v, _ in samples][:24]
    parts: list[str] = []
    while count_tokens(" ".join(parts)) < tokens:
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(8, 20)))
        if values and rng.random() < 0.35:
            sentence += f" contact {values.pop()}"
        parts.append(sentence.capitalize() + ".")
    return {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "You are a support agent."},
                                                 {"role": "user", "content": " ".join(parts)}]}


def timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and this thread's CPU milliseconds per run: on a machine shared with other work the
    wall clock includes the time the process waited for a core, the CPU time does not."""
    for _ in range(50):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.thread_time()
        fn()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - started_cpu) * 1000)
    return wall, cpu


def percentiles(both: tuple[list[float], list[float]]) -> str:
    out = []
    for name, ms in zip(("wall", "cpu"), both, strict=True):
        q = statistics.quantiles(ms, n=100)
        out.append(f"{name} p50 {q[49]:.2f} / p90 {q[89]:.2f} / p99 {q[98]:.2f} ms")
    return " | ".join(out)


def fresh(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` as a new prompt would meet it: the phone numbers' validation cache emptied first."""
    def run() -> Any:
        _is_phone.cache_clear()
        return fn()
    return run


def latency(runs: int) -> None:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    gc.collect()
    gc.freeze()  # as the api process runs (cli.main._tune_gc)
    gc.set_threshold(50_000, 20, 100)
    pol, request = policy(), long_prompt()
    prompt_tokens = count_tokens(request["messages"][1]["content"])
    redacted = redact_request(request, pol)
    print(f"prompt: {prompt_tokens} tokens, {len(request['messages'][1]['content'])} characters, "
          f"{sum(redacted.counts.values())} values replaced ({dict(redacted.counts)})")
    print(f"redaction, all 7 detectors:  {percentiles(timed(fresh(lambda: redact_request(request, pol)), runs))}")
    print(f"injection screen:            {percentiles(timed(lambda: screen_request(request, 'flag', 0.5), runs))}")
    clean = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}
    print(f"both, on a 1-token prompt:   "
          f"{percentiles(timed(lambda: (screen_request(clean, 'flag', 0.5), redact_request(clean, pol)), runs))}")


def quality() -> None:
    pol = policy()
    print("\nPII recall on well-formed values (a finding of that detector covers the value):")
    for detector, samples in pii_samples().items():
        found = 0
        for value, sentence in samples:
            start = sentence.index(value)
            hits = find_all(sentence, pol.finders)
            found += any(f.detector == detector and f.start <= start and f.end >= start + len(value) for f in hits)
        print(f"  {detector:<12} {found}/{len(samples)} = {found / len(samples):.1%}")
    flagged: Counter[str] = Counter()
    alikes = look_alikes()
    for kind, sentence in alikes:
        for f in find_all(sentence, pol.finders):
            flagged[f"{kind} -> {f.detector}"] += 1
    print(f"look-alikes flagged by any detector: {sum(flagged.values())} of {len(alikes)} sentences "
          f"({len({k for k, _ in alikes})} kinds){'; ' + str(dict(flagged)) if flagged else ''}")
    calls = injection_samples()
    tp = fp = fn = 0
    missed: Counter[str] = Counter()
    for attack, where, messages in calls:
        hit = screen_request({"messages": messages}, "flag", pol.screen_threshold).verdict == "flagged"
        tp += attack and hit
        fp += hit and not attack
        fn += attack and not hit
        if attack and not hit:
            missed[where] += 1
    attacks = sum(1 for a, _, _ in calls if a)
    print(f"\ninjection screen at threshold {pol.screen_threshold}: {attacks} adversarial "
          f"({sum(1 for a, w, _ in calls if a and w != 'user')} indirect: tool results and retrieved documents), "
          f"{len(calls) - attacks} benign")
    print(f"  precision {tp / max(1, tp + fp):.1%} ({fp} benign flagged), recall {tp / max(1, attacks):.1%} "
          f"(missed: {dict(missed) or 0})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    latency(args.runs)
    quality()


if __name__ == "__main__":
    main()
