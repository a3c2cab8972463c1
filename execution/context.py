"""What a process needs to run attempts, built once from its settings and passed in (never a global)."""

from __future__ import annotations

from contextlib import AbstractContextManager

from sqlalchemy.orm import Session

from execution.group_commit import GroupCommit
from execution.lease_keeper import LeaseKeeper
from execution.providers import adapter_for
from execution.providers.base import Usage
from execution.providers.http import shared_client
from shared import pricing
from shared.admission import Admitter
from shared.attempt_leases import AttemptLeases
from shared.breaker import Breakers
from shared.cache.store import ResponseCache
from shared.config import DeploymentConfig, Settings
from shared.db.session import get_engine, session_scope
from shared.directory import Directory
from shared.envelope import Envelope
from shared.errors import GatewayError
from shared.keys import Keys
from shared.queues import WaitingQueues
from shared.redis_conn import sync_redis
from shared.retry import RetryPolicy
from shared.routing import chain_for


class AttemptContext:
    """The Redis-backed helpers of one process's attempts: leases, breakers, retry budget, queues, budgets,
    the response cache."""

    def __init__(self, settings: Settings) -> None:
        client, keys = sync_redis(settings.redis_url), Keys(settings.key_prefix)
        self.settings = settings
        self.redis = client
        self.keys = keys
        self.leases = AttemptLeases(client, keys)
        self.breakers = Breakers.from_settings(client, keys, settings)
        self.retries = RetryPolicy(client, keys, settings.retries)
        self.queues = WaitingQueues(client, keys)
        self.cache = ResponseCache.from_settings(settings, keys, client)
        self.engine = get_engine(settings.database_url)
        self.directory = Directory(settings, self.engine, client, keys)
        self.admitter = Admitter(settings, client, keys, self.directory)
        self.records = GroupCommit(self.store)
        self.keeper = LeaseKeeper(self.leases, settings.admission)

    def store(self) -> AbstractContextManager[Session]:
        """One transaction on this process's result store."""
        return session_scope(self.engine)

    def deployment_for(self, env: Envelope) -> DeploymentConfig:
        """Where this attempt goes: where it was admitted, else its chain's first."""
        return self.settings.deployment(env.deployment or env.chain[0])

    def primary_deployment(self, model: str) -> DeploymentConfig | None:
        """The first deployment of the chain ``model`` names in the config (routing savings are measured
        against it); None for a model the config no longer has."""
        try:
            return self.settings.deployment(chain_for(self.settings, model)[0])
        except (GatewayError, KeyError):
            return None

    def call_limit_s(self, deployment: DeploymentConfig) -> float:
        """How long a call on ``deployment`` may keep its lease alive: its whole timeout and a margin
        (the heartbeat keeps a short lease renewed until then, ``execution.lease_keeper``)."""
        return deployment.timeouts.total + self.settings.admission.lease_margin_s

    @property
    def longest_call_s(self) -> float:
        """``call_limit_s`` of the slowest deployment: how long any call of this process may keep its lease."""
        return max(self.call_limit_s(d) for d in self.settings.deployments)

    def warm_up(self) -> AttemptContext:
        """Do at start what the first attempt would otherwise pay for (~50 ms on this machine): every
        deployment's adapter, the pooled HTTP client and the price lookups (so a model nobody priced is
        reported when the process starts, not at its first call)."""
        shared_client()
        for deployment in self.settings.deployments:
            provider = self.settings.providers[deployment.provider]
            adapter_for(deployment, provider)
            pricing.cost_usd(deployment, provider.kind, Usage())
        return self
