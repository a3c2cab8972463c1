"""The choke point's one call: screen, then redact, a request under its tenant x feature's policy.

Run by the api for every job before anything is stored or sent (``api.gateway.Gateway.envelope``, for
one job and for each job of a batch). What it found travels with the job (``screening``: counts per
detector, the screen's verdict) into its row and its audit record; never the values themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.config import Settings
from shared.privacy.policy import Policies
from shared.privacy.redaction import redact_request
from shared.privacy.screen import Screened, screen_request
from shared.privacy.vault import Vault


@dataclass
class Guarded:
    request: dict[str, Any]  # as the provider may see it
    vault: Vault  # the tokenized values (empty when none)
    screened: Screened

    @property
    def screening(self) -> dict[str, Any]:
        """What the job's row and audit record keep of it."""
        return {"redactions": dict(self.counts), "screen": self.screened.summary()}

    counts: dict[str, int]


class Guard:
    def __init__(self, settings: Settings) -> None:
        self.policies = Policies(settings)

    def check(self, tenant: str, feature: str, request: dict[str, Any]) -> Guarded:
        """The request as it may leave; raises ``InjectionBlocked`` or ``SensitiveDataBlocked`` (400s)."""
        policy = self.policies.for_call(tenant, feature)
        screened = screen_request(request, policy.screen, policy.screen_threshold)
        redacted = redact_request(request, policy)
        return Guarded(redacted.request, redacted.vault, screened, dict(redacted.counts))
