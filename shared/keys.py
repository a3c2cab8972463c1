"""Every Redis key and Celery queue name the gateway uses, in one place.

All keys share one hash tag (``{prefix}``) so that on Redis Cluster they live in one slot and a Lua
script may touch any of them together (budgets, queues, leases). Nothing else builds a key, and
nothing parses one back into meaning: Lua scripts get theirs through KEYS, and a budget bucket
carries its meaning as a typed ``budget.Scope``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "gw"

    @property
    def tag(self) -> str:
        return "{" + self.prefix + "}"

    def waiting(self, lane: str, tenant: str) -> str:
        """A list of job envelopes waiting for admission (one per lane x tenant)."""
        return f"{self.tag}:wait:{lane}:{tenant}"

    def active_tenants(self, lane: str) -> str:
        """A set of tenants that have something waiting in ``lane``."""
        return f"{self.tag}:active:{lane}"

    def waiting_count(self, lane: str) -> str:
        """How many jobs wait in ``lane`` over all tenants (kept with the queues, one INCR each)."""
        return f"{self.tag}:waiting:{lane}"

    def waiting_tokens(self, lane: str) -> str:
        """Estimated tokens of everything waiting in ``lane`` (for the expected-wait check)."""
        return f"{self.tag}:waiting_tokens:{lane}"

    def lease(self, job_id: str) -> str:
        """The token of the job's current dispatch (see shared/leases.py), with a TTL."""
        return f"{self.tag}:lease:{job_id}"

    def vault(self, job_id: str) -> str:
        """A hash of the job's tokenized values, placeholder -> original (``shared.privacy.vault``), with a TTL."""
        return f"{self.tag}:vault:{job_id}"

    @property
    def queued_ids(self) -> str:
        """A set of the ids of jobs waiting in Redis (queues and delayed retries), for recovery."""
        return f"{self.tag}:queued_ids"

    @property
    def cancelled(self) -> str:
        """A set of the ids of jobs cancelled while waiting: the scheduler drops them when they reach a
        queue's head, without waiting for the budget they no longer need (``WaitingQueues.cancel``)."""
        return f"{self.tag}:cancelled"

    @property
    def delayed(self) -> str:
        """Retries waiting out their backoff: a sorted set of envelopes scored by not-before."""
        return f"{self.tag}:delayed"

    @property
    def wake(self) -> str:
        """A list the scheduler blocks on; arrivals and refunds push a token."""
        return f"{self.tag}:wake"

    @property
    def leader(self) -> str:
        return f"{self.tag}:scheduler:leader"

    def retry_counter(self, deployment: str, what: str, minute: int) -> str:
        """Attempts (``req``) or retries (``ret``) sent to a deployment in one minute (the retry budget)."""
        return f"{self.tag}:retry:{deployment}:{what}:{minute}"

    def attempt_metrics(self, name: str) -> str:
        """A hash of attempt counters for /metrics (``shared.attempt_metrics``): attempts, latency, tokens, cost."""
        return f"{self.tag}:metrics:{name}"

    def recent_failures(self, minute: int) -> str:
        """A hash of one minute's failed attempts by kind and retry decision (``attempt_metrics.recent``)."""
        return f"{self.tag}:metrics:minute:{minute}"

    def heartbeats(self, kind: str) -> str:
        """A sorted set of live processes of one kind (worker, scheduler), scored by their last beat."""
        return f"{self.tag}:alive:{kind}"

    @property
    def auth_epoch(self) -> str:
        """A random string replaced whenever a key is revoked or a tenant disabled (``shared.db.tenants``)."""
        return f"{self.tag}:auth:epoch"

    @property
    def celery_prefix(self) -> str:
        """Prefix of the Celery broker's own keys (kombu's ``global_keyprefix``)."""
        return f"{self.prefix}:celery:"

    def tenant_done(self, tenant: str) -> str:
        """Pub/sub channel where each of the tenant's jobs announces its end ({id, status}), for callers
        long-polling ``GET /v1/jobs`` (api processes subscribe while someone waits)."""
        return f"{self.tag}:done:tenant:{tenant}"

    def reply_channel(self, instance: str) -> str:
        """Pub/sub channel of one api process: workers announce finished jobs there."""
        return f"{self.tag}:done:{instance}"

    def job_stream(self, job_id: str) -> str:
        """A streamed job's frames (a Redis Stream, capped and with a TTL; ``shared.job_stream``)."""
        return f"{self.tag}:stream:{job_id}"

    def stream_left(self, job_id: str) -> str:
        """Set when a streamed job's caller disconnected: the time after which its call is aborted."""
        return f"{self.tag}:stream:{job_id}:left"

    def exec_queue(self, lane: str) -> str:
        """The Celery execution queue of a lane."""
        return f"{self.prefix}.exec.{lane}"

    def budget_bucket(self, level: str, *parts: str) -> str:
        """A token bucket of the budget tree (hash: level, ts, cap, rate), one per ``budget.Scope``:
        ``dep:<deployment>:<axis>``, ``lane:<lane>:<deployment>:<axis>``, ``tenant:<tenant>:<hard|soft>``,
        ``feature:<tenant>:<feature>:hard``, ``key:<key id>:<rpm|tpm>``."""
        return f"{self.tag}:budget:" + ":".join(({"deployment": "dep"}.get(level, level), *parts))

    def spend_bucket(self, owner: str, *parts: str) -> str:
        """A dollar budget's window bucket (hash: spent, settled, cap, ends, meta), one per ``budget.Scope``
        of level ``spend``: ``spend:tenant:<tenant>:<day|month>:<window id>``,
        ``spend:feature:<tenant>:<feature>:...``, ``spend:key:<key id>:...``."""
        return f"{self.tag}:spend:{owner}:" + ":".join(parts)

    def budget_alerted(self, bucket: str, share: float) -> str:
        """Set once an alert fired for ``share`` of the window bucket ``bucket`` (a key built above)."""
        return f"{bucket}:alerted:{share:g}"

    @property
    def budget_reservations(self) -> str:
        """A hash: reservation id -> JSON of what it charged to which bucket and when it expires."""
        return f"{self.tag}:budget:resv"

    @property
    def budget_expiries(self) -> str:
        """A sorted set of reservation ids scored by expiry (epoch seconds of the Redis clock)."""
        return f"{self.tag}:budget:resv:exp"

    def input_calibration(self, deployment: str) -> str:
        """How one deployment counts prompts (hash: tok, chr, etok, echr, n; ``budget_calibrate.lua``)."""
        return f"{self.tag}:calib:in:{deployment}"

    def output_estimate(self, tenant: str, feature: str, model: str) -> str:
        """EWMA of output tokens for one tenant x feature x model (hash: value, n)."""
        return f"{self.tag}:calib:out:{tenant}:{feature}:{model}"

    def breaker(self, deployment: str, part: str = "state") -> str:
        """Circuit breaker of one deployment: ``state`` (hash), ``window`` (hash of outcome buckets),
        ``probes`` (sorted set of half-open probes in flight) or ``log`` (list of transitions)."""
        return f"{self.tag}:breaker:{deployment}:{part}"

    # -- the cache (``shared.cache``): tenant first in every key, so nothing is shared across tenants --

    def cache_entry(self, tenant: str, entry: str) -> str:
        """One cached answer (a string with a TTL): ``entry`` is the canonical request's digest."""
        return f"{self.tag}:cache:e:{tenant}/{entry}"

    def cache_recency(self, tenant: str) -> str:
        """A sorted set of the tenant's entry digests scored by last use (ms): who is evicted first."""
        return f"{self.tag}:cache:lru:{tenant}"

    def cache_entries_pattern(self, tenant: str) -> str:
        """A SCAN pattern for every exact entry of ``tenant`` (tenant ids hold no glob characters)."""
        return f"{self.tag}:cache:e:{tenant}/*"

    def semantic_scope(self, tenant: str, feature: str, scope: str, part: str) -> str:
        """One semantic scope (tenant x feature x model x sampling x context digest): ``entries``, a list
        of packed records, oldest first; ``meta``, a hash of its ``epoch`` and ``seq`` (records ever added).
        Feature names hold no ``/``, so ``<tenant>/<feature>/`` bounds a purge's pattern."""
        return f"{self.tag}:cache:sem:{tenant}/{feature}/{scope}:{part}"

    def semantic_pattern(self, tenant: str, feature: str | None) -> str:
        """A SCAN pattern for the semantic scopes of a tenant, or of one of its features."""
        return f"{self.tag}:cache:sem:{tenant}/{feature or '*'}/*"

    def cache_metrics(self) -> str:
        """A hash of cache counters for /metrics: lookups by outcome and dollars saved, per tenant x feature."""
        return f"{self.tag}:metrics:cache"
