"""Semantic entries: where they live (Redis, shared by every process) and how one process searches them.

A scope (tenant x feature x model x sampling x context digest, ``shared.cache.plan``) is a Redis list
of records, oldest first, capped at ``cache.max_semantic_entries``, and a ``meta`` hash (``epoch``,
``seq``: records ever added). Each process keeps a copy of the scopes it searched as a numpy matrix
and brings it up to date from ``meta``, read in the lookup's first round trip: new records are read
with one LRANGE of the list's tail, a new epoch (the scope was purged, expired or Redis forgot it)
rebuilds it. So every api replica sees every entry, a lookup with nothing new costs no extra round
trip, and a search is one matrix-vector product over a few thousand 64-float rows (~10 us per
thousand entries here).

Why not a vector database: the embedded default (SQLite) has none and PostgreSQL needs an extension
(pgvector) the gateway's operators may not have; sqlite-vec serves only one machine. Redis is the one
store every api replica already shares, and brute force over one scope's entries is faster than a
round trip to any index.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson


@dataclass(frozen=True)
class Record:
    """One semantic entry: the question's vector and text, and where its answer is (an exact entry)."""

    vector: np.ndarray
    text: str
    digest: str
    job: str
    expires: float

    def dumps(self) -> str:
        return orjson.dumps({"v": pack(self.vector), "t": self.text, "d": self.digest, "j": self.job,
                             "x": self.expires}).decode()

    @classmethod
    def loads(cls, raw: str | bytes) -> Record:
        data = orjson.loads(raw)
        return cls(unpack(data["v"]), str(data["t"]), str(data["d"]), str(data["j"]), float(data["x"]))


def pack(vector: np.ndarray) -> str:
    """A vector as text (base64 of its float32 bytes): what Redis and an envelope carry."""
    return base64.b64encode(vector.astype(np.float32).tobytes()).decode()


def unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float32)


@dataclass
class _Scope:
    epoch: str
    seq: int
    records: list[Record] = field(default_factory=list)
    matrix: np.ndarray | None = None

    def refresh_matrix(self) -> None:
        self.matrix = np.vstack([r.vector for r in self.records]) if self.records else None


@dataclass(frozen=True)
class Candidate:
    record: Record
    similarity: float


class SemanticIndex:
    """This process's copies of the scopes it searched (see the module docstring)."""

    def __init__(self, max_scopes: int = 10_000) -> None:
        self._scopes: dict[str, _Scope] = {}
        self._lock = threading.Lock()
        self.max_scopes = max_scopes

    def stale(self, scope: str, epoch: str | None, seq: int) -> int | None:
        """How many of the scope's newest records this copy lacks (-1: all of them), None when it is current."""
        with self._lock:
            mine = self._scopes.get(scope)
            if epoch is None:
                self._scopes.pop(scope, None)
                return None
            if mine is None or mine.epoch != epoch or seq < mine.seq:
                return -1
            return seq - mine.seq if seq > mine.seq else None

    def update(self, scope: str, epoch: str, seq: int, length: int, raws: list[Any], full: bool) -> None:
        """Bring the copy up to ``seq``: ``raws`` are the list's newest records (all of it when ``full``);
        the list holds ``length``, so older records the cap dropped are dropped here too."""
        fresh = [Record.loads(raw) for raw in raws]
        with self._lock:
            mine = self._scopes.get(scope)
            if full or mine is None or mine.epoch != epoch:
                if len(self._scopes) >= self.max_scopes:
                    self._scopes.pop(next(iter(self._scopes)))
                mine = self._scopes[scope] = _Scope(epoch, seq)
                mine.records = fresh
            else:
                mine.records = (mine.records + fresh)[-length:] if length else []
                mine.seq = seq
            mine.refresh_matrix()

    def nearest(self, scope: str, vector: np.ndarray, threshold: float, limit: int = 3) -> list[Candidate]:
        """The scope's live records at least ``threshold`` similar to ``vector``, most similar first."""
        with self._lock:
            mine = self._scopes.get(scope)
            if mine is None or mine.matrix is None:
                return []
            records, similarities = mine.records, mine.matrix @ vector
        now = time.time()
        order = np.argsort(-similarities)[: limit * 2]
        found = [Candidate(records[i], float(similarities[i])) for i in order
                 if similarities[i] >= threshold and records[i].expires > now]
        return found[:limit]
