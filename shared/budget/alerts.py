"""Budget alerts: when a dollar budget's spend crosses a share of its limit (``alert_at``, e.g. 50/80/100%),
once per share and window, the gateway says so three ways: a log line, a metric, and a webhook.

Crossings are seen where spend changes: the settlement of each attempt (``execution.settle``, in the
reply of the round trip it makes anyway), on the budget's *settled* spend, not on what calls in flight
hold. A hard budget that refuses a call counts as reaching 100% (with worst-case reservations, what was
settled may stop just short of the limit). "Once" is a Redis ``SET NX`` per bucket and share, kept until
a day after its window: any number of workers and api processes alert once between them.

The webhook is a JSON POST signed with HMAC-SHA256 (``x-gateway-signature: t=<unix time>,v1=<hex>`` over
``<t>.<body>``, the secret from ``billing.webhook.secret_env``), sent from a background thread of the
process that saw the crossing, retried with exponential backoff on connection errors, 408, 429 and 5xx.
It is at most once: a process that dies with an alert queued loses that webhook (the log line and the
metric were written first).

    gateway_budget_alerts_total{level, window, threshold}   alerts fired (counted in Redis, like the
                                                            attempt metrics, so every api reports all)
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import redis
from prometheus_client.core import CounterMetricFamily
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from shared.budget.buckets import Bucket, Scope, WindowSpend
from shared.budget.tree import BudgetTree
from shared.config import AlertWebhook, Settings
from shared.keys import Keys

log = logging.getLogger("gateway.budget")
_SEP = "\t"
REFUSED = 1.0  # the share a refusal by a hard budget counts as


class BudgetAlerts:
    """Decide which shares a change of spend crossed, fire each once (see the module docstring)."""

    def __init__(self, settings: Settings, client: redis.Redis, keys: Keys, tree: BudgetTree) -> None:
        self.settings = settings
        self.redis = client
        self.keys = keys
        self.tree = tree
        self.sender = WebhookSender(settings.billing.webhook) if settings.billing.webhook else None
        self._fired: set[str] = set()  # alerts this process knows fired: a refused storm asks Redis once

    def shares(self, scope: Scope) -> list[float]:
        budget = self.tree.budget_of(scope)
        if budget is None:
            return []
        return budget.alert_at if budget.alert_at is not None else self.settings.billing.alert_at

    def settled(self, windows: tuple[WindowSpend, ...]) -> None:
        """After a settlement: alert for every share a budget's settled spend just crossed. Never raises:
        the attempt that crossed it is recorded and settled already."""
        try:
            for moved in windows:
                if moved.scope is None or moved.cap <= 0:
                    continue
                for share in self.shares(moved.scope):
                    if moved.before < share * moved.cap <= moved.after:
                        self._fire(moved.key, moved.scope, share, moved.after, moved.cap, "spent")
        except Exception:  # noqa: BLE001 - an alert is never worth failing an attempt's last round trip
            log.exception("could not check the budget alerts of a settlement")

    def refused(self, bucket: Bucket, spent: float) -> None:
        """A hard budget refused a call: it counts as reaching 100%, alerted once like any share."""
        if bucket.scope is not None and REFUSED in self.shares(bucket.scope):
            self._fire(bucket.key, bucket.scope, REFUSED, spent, bucket.capacity, "refused")

    def _fire(self, key: str, scope: Scope, share: float, spent: float, limit: float, why: str) -> None:
        marker = self.keys.budget_alerted(key, share)
        if marker in self._fired:
            return
        if len(self._fired) > 10_000:
            self._fired.clear()
        self._fired.add(marker)
        try:
            ends = float(self.redis.hget(key, "ends") or time.time() + 86_400)
            first = self.redis.set(marker, why, nx=True, exat=int(ends) + 86_400)
            if not first:
                return
            self.redis.hincrby(self.keys.attempt_metrics("budget_alerts"),
                               _SEP.join((scope.owner, str(scope.window), f"{share:g}")), 1)
        except redis.RedisError as exc:  # an alert must never fail the attempt that crossed it
            log.error("could not record a budget alert (%s)", exc)
            return
        event = alert_event(self.tree, scope, share, spent, limit, ends, why)
        log.warning("budget alert: %s", event["message"])
        if self.sender is not None:
            self.sender.send(event)


def alert_event(tree: BudgetTree, scope: Scope, share: float, spent: float, limit: float, ends: float,
                why: str) -> dict[str, Any]:
    """The webhook's body: what crossed what, in words and as fields."""
    described = tree.describe_budget(scope, limit)
    resets = datetime.fromtimestamp(ends, UTC).astimezone(tree.settings.billing.zone).isoformat()
    verb = "refused a call at" if why == "refused" else "reached"
    return {
        "type": "budget.threshold", "at": datetime.now(UTC).isoformat(), "threshold": share, "reason": why,
        "budget": {"owner": scope.owner, "tenant": scope.tenant, "feature": scope.feature, "key_id": scope.key_id,
                   "window": scope.window, "window_id": scope.window_id, "limit_usd": limit, "resets_at": resets},
        "spent_usd": round(spent, 8),
        "message": f"{described} {verb} {share:.0%} for {scope.window_id}: ${spent:,.4f} of ${limit:,.2f} "
                   f"(resets {resets})",
    }


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: ``t=<timestamp>,v1=<HMAC-SHA256 of "<timestamp>.<body>">``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _worth_retrying(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in (408, 429) or exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


class WebhookSender:
    """POSTs alerts from one background thread per process, so no attempt ever waits on a webhook."""

    def __init__(self, config: AlertWebhook, client: httpx.Client | None = None) -> None:
        self.config = config
        self.client = client or httpx.Client(timeout=config.timeout_s)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def send(self, event: dict[str, Any]) -> None:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="budget-webhook")
        self._pool.submit(self.deliver, event)

    def deliver(self, event: dict[str, Any]) -> bool:
        """POST one alert, retried (see the module docstring); True when the receiver took it."""
        body = orjson.dumps(event)
        retrying = Retrying(stop=stop_after_attempt(self.config.attempts), reraise=True,
                            wait=wait_exponential(multiplier=self.config.backoff_s, max=60),
                            retry=retry_if_exception(_worth_retrying))
        try:
            for attempt in retrying:
                with attempt:
                    self._post(body)
        except httpx.HTTPError as exc:
            log.error("budget alert webhook to %s failed after %d attempts: %s", self.config.url,
                      self.config.attempts, exc)
            return False
        return True

    def _post(self, body: bytes) -> None:
        headers = {"content-type": "application/json", "user-agent": "ai-gateway-budget-alerts"}
        secret = self.config.secret()
        if secret:
            headers["x-gateway-signature"] = sign(secret, int(time.time()), body)
        self.client.post(self.config.url, content=body, headers=headers).raise_for_status()


def collect(client: Any, keys: Keys) -> Iterator[CounterMetricFamily]:
    """``gateway_budget_alerts_total``, read from Redis."""
    raw = client.hgetall(keys.attempt_metrics("budget_alerts"))
    family = CounterMetricFamily("gateway_budget_alerts", "Budget alerts fired, once per budget, window and "
                                 "threshold", labels=["level", "window", "threshold"])
    for field, value in sorted(raw.items()):
        text = field.decode() if isinstance(field, bytes) else field
        family.add_metric(text.split(_SEP), float(value))
    yield family
