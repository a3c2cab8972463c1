"""A mixed, labelled workload: requests across tasks and difficulty, as a product's features send them.

Each request has a task (what the feature is for), a difficulty label (easy / medium / hard: the
ground truth the simulator's failure profiles and the scorer's evaluation use) and a flag saying whether
its caller names the task (``X-Gateway-Task``) or leaves it to the gateway (``model: auto`` alone).
Prompts are built so that difficulty mostly shows (long context, code, maths, numbered steps, a schema to
fill), but not always: a share of hard prompts are short one-liners and of easy ones long texts with a
trivial question, as in real traffic. The label reaches the simulator as a ``[[difficulty:...]]``
marker; the gateway's scorer does not read it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

TASKS = {"classify": 0.25, "extract": 0.2, "summarize": 0.15, "chat": 0.2, "code": 0.1, "reason": 0.1}
DIFFICULTY = {"easy": 0.5, "medium": 0.3, "hard": 0.2}
MISLEADING = 0.2  # share of prompts whose looks say the opposite of their difficulty
MAX_TOKENS = 800
SCHEMA = {"type": "json_schema", "json_schema": {"name": "record", "schema": {
    "type": "object", "required": ["name", "amount", "currency"],
    "properties": {"name": {"type": "string"}, "amount": {"type": "number"},
                   "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]}}}}}

_WORDS = ["invoice", "customer", "order", "shipment", "refund", "account", "payment", "delivery", "service",
          "contract", "report", "quarter", "revenue", "margin", "team", "release", "incident", "latency", "region",
          "cluster", "budget", "forecast"]


@dataclass(frozen=True)
class Item:
    task: str
    difficulty: str
    names_task: bool
    body: dict[str, Any] = field(hash=False)

    def headers(self) -> dict[str, str]:
        return {"X-Gateway-Task": self.task} if self.names_task else {}


def build(count: int, seed: int = 7) -> list[Item]:
    rng = random.Random(seed)
    return [_item(rng) for _ in range(count)]


def _item(rng: random.Random) -> Item:
    task = rng.choices(list(TASKS), weights=list(TASKS.values()))[0]
    difficulty = rng.choices(list(DIFFICULTY), weights=list(DIFFICULTY.values()))[0]
    looks = difficulty
    if rng.random() < MISLEADING:
        looks = {"easy": "hard", "hard": "easy", "medium": rng.choice(["easy", "hard"])}[difficulty]
    text = f"{_prompt(rng, task, looks)}\n[[difficulty:{difficulty}]]"
    body: dict[str, Any] = {"model": "auto", "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": text}]}
    if task == "extract":
        body["response_format"] = SCHEMA
    return Item(task, difficulty, names_task=rng.random() < 0.5, body=body)


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."


def _context(rng: random.Random, sentences: int) -> str:
    return " ".join(_sentence(rng, rng.randint(8, 16)) for _ in range(sentences))


def _prompt(rng: random.Random, task: str, looks: str) -> str:
    """A prompt for ``task`` that looks ``looks``: short and plain, a paragraph with an instruction or
    two, or long context with numbered steps and code or maths."""
    ask = {"classify": "Which category is this: billing, shipping or other?",
           "extract": "Extract the customer name, the amount and the currency as JSON.",
           "summarize": "Summarise this in two sentences.", "chat": "What should I do next?",
           "code": "Write a function that does this.", "reason": "Which option is better?"}[task]
    if looks == "easy":
        return f"{_sentence(rng, rng.randint(6, 14))} {ask}"
    if looks == "medium":
        return (f"{_context(rng, rng.randint(6, 12))}\n{ask} Explain why in one paragraph, and keep the tone "
                "of the original.")
    extra = rng.choice([
        "```python\ndef reconcile(ledger, payments):\n    for p in payments:\n        ledger[p.id] -= p.amount\n"
        "    return ledger\n```",
        "Solve for x: 3x^2 + 2x - 7 = 0, then derive the expected margin per quarter.",
        "SELECT region, sum(revenue) FROM orders GROUP BY region;"])
    steps = "\n".join(f"{i}. {_sentence(rng, rng.randint(6, 10))}" for i in range(1, rng.randint(4, 7)))
    return (f"{_context(rng, rng.randint(40, 90))}\n{extra}\nFollow these steps:\n{steps}\n{ask} Analyze the "
            "trade-offs and justify each step.")
