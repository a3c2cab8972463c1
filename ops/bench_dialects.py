"""What keeping a request in its caller's dialect costs the api per call (``shared.dialects``).

    .venv/bin/python ops/bench_dialects.py [--calls 20000]

CPU time in this process, per call, for a chat request of ~700 prompt tokens: the body a deployment of the
same dialect receives (what the old allow-list filter did), the routing check that decides whether an
Anthropic fallback can carry an OpenAI request (a translation, once per request and chain), and the
OpenAI-form view of an Anthropic request (what estimates, routing and the cache read). Prints the median
of five runs of ``--calls`` each.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from shared.dialects import chat_view, provider_body
from shared.routing import Wording

CHAT: dict[str, Any] = {
    "model": "gpt-4o-mini", "max_tokens": 200, "temperature": 0.2,
    "messages": [{"role": "system", "content": "You are a helpful assistant. " * 20},
                 {"role": "user", "content": "Summarise this ticket: " + "lorem ipsum " * 300}]}
MESSAGES: dict[str, Any] = {
    "model": "claude-haiku-4-5", "max_tokens": 200, "top_k": 5,
    "system": [{"type": "text", "text": "You are a helpful assistant. " * 20, "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "Summarise this ticket: " + "lorem ipsum " * 300}]}

CASES: dict[str, Callable[[], object]] = {
    "same-dialect body (OpenAI -> OpenAI)": lambda: provider_body(CHAT, "openai", "openai", model="m",
                                                                  default_max_tokens=1024),
    "routing check: may the Anthropic fallback carry it": lambda: Wording(CHAT, "openai").refused("anthropic", False),
    "chat_view of an Anthropic request": lambda: chat_view(MESSAGES, "anthropic"),
}


def per_call_us(work: Callable[[], object], calls: int) -> float:
    runs = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(calls):
            work()
        runs.append((time.process_time() - started) / calls * 1e6)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    for name, work in CASES.items():
        print(f"{name:55s} {per_call_us(work, args.calls):7.1f} us CPU per call")


if __name__ == "__main__":
    main()
