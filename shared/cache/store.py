"""The response cache: looked up before admission, filled when an attempt succeeds, purged by operators.

An exact entry is a Redis hash (the answer, what it cost, the job that paid for it, the feature that
asked) with the entry's TTL, under the tenant's name; a sorted set per tenant orders its entries by
last use, and a fill that takes the tenant past ``cache.max_entries_per_tenant`` evicts the least
recently used. A semantic entry (``shared.cache.semantic``) points at an exact entry, so both expire,
get evicted and get purged together.

A lookup is one round trip (the exact entry, the semantic scope's ``meta``, and the auth epoch when
the cache shares the gateway's Redis); a semantic lookup adds one when its scope has new records and
one to fetch the answer it matched. A fill is commands in the attempt's last round trip
(``execution.attempt``). Redis failing makes a lookup a miss and a fill a no-op, never an error.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from shared.cache.embedder import Embedder, default_embedder
from shared.cache.guard import near_miss
from shared.cache.plan import CachePlan, SemanticAsk
from shared.cache.semantic import Record, SemanticIndex, pack, unpack
from shared.config import Settings
from shared.keys import Keys
from shared.lua import script
from shared.redis_batch import RedisBatch, ScriptCall
from shared.redis_conn import sync_redis

log = logging.getLogger("gateway.cache")
WARM_UP_AFTER_S = 0.5  # the embedding model loads this long after an api starts (``ResponseCache.warm_up``)
View = dict[str, Any]
_SEP = "\t"


@dataclass(frozen=True)
class Hit:
    """An answer the cache serves: ``kind`` hit (exact) or semantic, with the job that paid for it."""

    kind: str
    answer: dict[str, Any]
    saved_usd: float
    source_job: str
    similarity: float | None = None


@dataclass(frozen=True)
class Lookup:
    hit: Hit | None
    epoch: str | None = None  # the auth epoch, read in the same round trip (None: not read)
    failed: bool = False  # Redis did not answer: treated as a miss
    vector: str | None = None  # the question's embedding, when a semantic lookup made one (``pack``)


class ResponseCache:
    def __init__(self, settings: Settings, keys: Keys, client: redis.Redis, *, shares_client: bool,
                 embedder: Callable[[], Embedder] = default_embedder) -> None:
        self.settings = settings
        self.config = settings.cache
        self.keys = keys
        self.client = client
        self.shares_client = shares_client  # the gateway's own Redis: fills join the attempt's round trip
        self.embedder = embedder
        self.index = SemanticIndex()
        self._lookup = client.register_script(script("cache_lookup"))
        self._fill = client.register_script(script("cache_fill"))
        self._remember = client.register_script(script("cache_remember"))

    @classmethod
    def from_settings(cls, settings: Settings, keys: Keys, gateway_redis: redis.Redis) -> ResponseCache:
        url = settings.cache.redis_url
        if url is None or url == settings.redis_url:
            return cls(settings, keys, gateway_redis, shares_client=True)
        return cls(settings, keys, sync_redis(url), shares_client=False)

    def warm_up(self, after_s: float = WARM_UP_AFTER_S) -> None:
        """Load the embedding model, when some feature will need it, ``after_s`` after the api started: the
        load holds the GIL for ~1 s of CPU (the tokenizer's 10 MB of JSON), which would otherwise delay the
        api's start or its first semantic lookup (a lookup before it loads the model itself). Workers
        never load it for the api's jobs: those carry their question's vector (``CachePlan.fill``)."""
        if self.config.enabled and any(cfg.semantic for per in self.config.features.values() for cfg in per.values()):
            threading.Thread(target=self._load_embedder, args=(after_s,), name="cache-embedder-warm-up",
                             daemon=True).start()

    def _load_embedder(self, after_s: float) -> None:
        time.sleep(after_s)
        try:
            self.embedder().embed("warm up")
        except Exception:  # the first semantic lookup or fill will report it
            log.exception("could not load the cache's embedding model")

    # -- lookup (the api, before admission) ----------------------------------------------------------

    def lookup(self, plan: CachePlan, epoch_key: str | None = None) -> Lookup:
        """The answer ``plan`` may be served from the cache, or None (see the module docstring)."""
        got: dict[str, Any] = {}
        found: dict[str, str] = {}
        sem = plan.semantic
        batch = RedisBatch(self.client).script(
            self._lookup_call(plan, plan.digest, miss="miss", hit="hit"),
            lambda reply: got.__setitem__("exact", reply))
        if sem is not None:
            batch.command(lambda pipe: self._scope_reads(pipe, plan, sem.scope),
                          lambda replies: got.__setitem__("scope", replies))
        if epoch_key is not None and self.shares_client:
            batch.command(lambda pipe: pipe.get(epoch_key), lambda r: got.__setitem__("epoch", r[0] or ""))
        try:
            batch.execute()
            hit = self._exact_hit(got["exact"]) or (self._semantic_hit(plan, sem, got["scope"], found) if sem else None)
        except (redis.RedisError, OSError) as exc:
            log.warning("cache lookup failed, served as a miss: %s", exc)
            return Lookup(None, got.get("epoch"), failed=True, vector=found.get("vector"))
        return Lookup(hit, got.get("epoch"), vector=found.get("vector"))

    def _lookup_call(self, plan: CachePlan, digest: str, *, miss: str, hit: str, takes_back: str = "") -> ScriptCall:
        keys = (self.keys.cache_entry(plan.tenant, digest), self.keys.cache_recency(plan.tenant),
                self.keys.cache_metrics())
        args = (digest, int(time.time() * 1000), _SEP.join((plan.tenant, plan.label)), miss, hit, takes_back)
        return ScriptCall(self._lookup, keys, args)

    def _scope_reads(self, pipe: Any, plan: CachePlan, scope: str) -> None:
        pipe.hmget(self.keys.semantic_scope(plan.tenant, plan.feature, scope, "meta"), "epoch", "seq")
        pipe.llen(self.keys.semantic_scope(plan.tenant, plan.feature, scope, "entries"))

    @staticmethod
    def _exact_hit(reply: Any, kind: str = "hit", similarity: float | None = None) -> Hit | None:
        if not reply:
            return None
        answer, cost, job = reply[0], reply[1], reply[2]
        return Hit(kind, orjson.loads(answer), float(cost or 0), str(job or ""), similarity)

    def _semantic_hit(self, plan: CachePlan, sem: SemanticAsk, scope_reads: list[Any],
                      found: dict[str, str]) -> Hit | None:
        """The answer of the most similar entry that passes the guard (the exact lookup counted a miss;
        a semantic hit takes it back, in the same script that fetches its answer)."""
        (epoch, seq), length = scope_reads
        self._sync(plan, sem.scope, epoch, int(seq or 0), int(length or 0))
        vector = self.embedder().embed(sem.text)
        found["vector"] = pack(vector)
        for candidate in self.index.nearest(sem.scope, vector, sem.threshold):
            reason = near_miss(sem.text, candidate.record.text)
            if reason is not None:
                log.debug("semantic candidate %s refused by the guard (%s)", candidate.record.job, reason)
                continue
            reply = self._lookup_call(plan, candidate.record.digest, miss="", hit="semantic", takes_back="miss").run()
            return self._exact_hit(reply, "semantic", round(candidate.similarity, 4))
        return None

    def _sync(self, plan: CachePlan, scope: str, epoch: str | None, seq: int, length: int) -> None:
        lacking = self.index.stale(scope, epoch, seq)
        if lacking is None or epoch is None:
            return
        entries = self.keys.semantic_scope(plan.tenant, plan.feature, scope, "entries")
        full = lacking < 0 or lacking >= length
        raws = self.client.lrange(entries, 0 if full else -lacking, -1)
        self.index.update(scope, epoch, seq, length, raws, full)

    # -- fill (whoever ends a successful attempt) ----------------------------------------------------

    def fill(self, batch: RedisBatch | None, fill: dict[str, Any], view: View, tenant: str, feature: str) -> None:
        """Store a succeeded job's answer as ``fill`` (``CachePlan.fill``) says, in ``batch`` when the
        cache shares its Redis, else in a round trip of its own; an answer not worth keeping is skipped."""
        answer = storable_answer(view, self.config.max_answer_bytes)
        if answer is None:
            return
        mine = batch if batch is not None and self.shares_client else RedisBatch(self.client)
        ttl_ms = int(float(fill["ttl_s"]) * 1000)
        mine.script(ScriptCall(
            self._fill, (self.keys.cache_entry(tenant, fill["digest"]), self.keys.cache_recency(tenant)),
            (fill["digest"], int(time.time() * 1000), ttl_ms, self.config.max_entries_per_tenant, answer,
             repr(float(view.get("cost_usd") or 0)), view["id"], feature)),
            lambda evicted: self._evict(tenant, evicted))
        if fill.get("scope") and fill.get("text"):
            vector = unpack(fill["vector"]) if fill.get("vector") else self.embedder().embed(fill["text"])
            record = Record(vector, fill["text"], fill["digest"], view["id"], time.time() + float(fill["ttl_s"]))
            mine.script(ScriptCall(self._remember, (
                self.keys.semantic_scope(tenant, feature, fill["scope"], "entries"),
                self.keys.semantic_scope(tenant, feature, fill["scope"], "meta")),
                (record.dumps(), self.config.max_semantic_entries, ttl_ms, secrets.token_hex(8))))
        if mine is not batch:
            try:
                mine.execute()
            except (redis.RedisError, OSError) as exc:
                log.warning("could not fill the cache for job %s: %s", view.get("id"), exc)

    def _evict(self, tenant: str, digests: list[str]) -> None:
        """Delete the entries the fill took off the tenant's recency set (its cap)."""
        if not digests:
            return
        try:
            self.client.delete(*(self.keys.cache_entry(tenant, d) for d in digests))
        except (redis.RedisError, OSError) as exc:  # they expire with their TTL
            log.warning("could not evict %d cache entries of %s: %s", len(digests), tenant, exc)

    # -- purge (operators) ---------------------------------------------------------------------------

    def purge(self, tenant: str, feature: str | None = None) -> dict[str, int]:
        """Delete a tenant's entries, or those a feature of it stored; how many of each kind went."""
        exact = self._purge_exact(tenant, feature)
        scopes = 0
        for key in self.client.scan_iter(match=self.keys.semantic_pattern(tenant, feature), count=1000):
            scopes += int(self.client.delete(key))
        return {"exact": exact, "semantic_scopes": scopes // 2}

    def _purge_exact(self, tenant: str, feature: str | None) -> int:
        recency = self.keys.cache_recency(tenant)
        digests = [str(d) for d in self.client.zrange(recency, 0, -1)]
        entries = [self.keys.cache_entry(tenant, d) for d in digests]
        if feature is not None:
            with self.client.pipeline(transaction=False) as pipe:
                for key in entries:
                    pipe.hget(key, "f")
                owners = pipe.execute()
            chosen = [(d, k) for d, k, f in zip(digests, entries, owners, strict=True) if f == feature]
            digests, entries = [d for d, _ in chosen], [k for _, k in chosen]
        deleted = 0
        for start in range(0, len(entries), 500):
            deleted += int(self.client.delete(*entries[start:start + 500]))
            self.client.zrem(recency, *digests[start:start + 500])
        return deleted

    def counters(self) -> dict[str, str]:
        """The lookups and savings counted so far, for /metrics (``<tenant>\\t<feature>\\t<what>`` -> value)."""
        return {str(k): str(v) for k, v in self.client.hgetall(self.keys.cache_metrics()).items()}


def storable_answer(view: View, max_bytes: int) -> str | None:
    """The answer as the cache keeps it, or None when it must not be kept: a job that did not succeed,
    more than one choice, a tool call, or a finish other than ``stop`` (cut short, filtered). Embeddings
    are always kept: the same input gets the same vectors."""
    result = view.get("result")
    if view.get("status") != "succeeded" or not isinstance(result, dict):
        return None
    if result.get("object") == "list" and isinstance(result.get("data"), list):
        return _kept(view, result, max_bytes)
    choices = result.get("choices") or []
    if len(choices) != 1 or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message") or {}
    if choices[0].get("finish_reason") != "stop" or message.get("tool_calls") or message.get("function_call"):
        return None
    return _kept(view, result, max_bytes)


def _kept(view: View, result: dict[str, Any], max_bytes: int) -> str | None:
    answer = orjson.dumps({"result": result, "model_used": view.get("model_used"),
                           "deployment": view.get("deployment")}).decode()
    return answer if len(answer) <= max_bytes else None
