"""Which privacy policy a call runs under: ``privacy`` in the config, then the tenant's, then the feature's.

Resolved once per tenant x feature and kept (settings never change in a running process), so the
request path pays a dictionary lookup.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from shared.config import Action, AuditPolicy, CustomPattern, FeaturePrivacy, ScreenMode, Settings
from shared.privacy.detectors import ORDER, Finder, builtin_finders


@dataclass(frozen=True)
class Policy:
    """What to do with a call's content: per detector (built-in names, then custom ones) an action,
    the injection screen's mode and threshold, and what the audit log keeps."""

    actions: dict[str, Action]
    finders: tuple[tuple[str, Finder], ...]  # the detectors that are not off, in priority order
    screen: ScreenMode
    screen_threshold: float
    audit: AuditPolicy

    @property
    def redacts(self) -> bool:
        return bool(self.finders)


def _merged(actions: dict[str, Action], custom: dict[str, CustomPattern], level: FeaturePrivacy) -> None:
    for detector, action in level.redaction.items():
        actions[detector] = action
    for pattern in level.custom:
        custom[pattern.name] = pattern
        actions[pattern.name] = pattern.action


def _custom_finder(pattern: str) -> Finder:
    compiled = re.compile(pattern)
    return lambda scan: (m.span() for m in compiled.finditer(scan.text))


class Policies:
    """Every tenant x feature's resolved ``Policy``, built on first use; one per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        privacy = settings.privacy
        self.builtins = builtin_finders(privacy.phone_region, privacy.national_ids)
        self._resolved: dict[tuple[str, str], Policy] = {}
        self._lock = threading.Lock()

    def for_call(self, tenant: str, feature: str) -> Policy:
        key = (tenant, feature)
        found = self._resolved.get(key)
        if found is None:
            with self._lock:
                found = self._resolved[key] = self._resolve(tenant, feature)
        return found

    def _resolve(self, tenant: str, feature: str) -> Policy:
        privacy = self.settings.privacy
        tenant_cfg = self.settings.tenant(tenant)
        levels: list[FeaturePrivacy] = [FeaturePrivacy(redaction=privacy.redaction, custom=privacy.custom,
                                                       screen=privacy.screen), tenant_cfg.privacy]
        if feature in tenant_cfg.features:
            levels.append(tenant_cfg.features[feature].privacy)
        actions: dict[str, Action] = {}
        custom: dict[str, CustomPattern] = {}
        screen: ScreenMode = privacy.screen
        for level in levels:
            _merged(actions, custom, level)
            screen = level.screen or screen
        finders = [(name, self.builtins[name]) for name in ORDER if actions.get(name, "off") != "off"]
        finders += [(name, _custom_finder(p.pattern)) for name, p in custom.items() if actions[name] != "off"]
        return Policy(actions, tuple(finders), screen, privacy.screen_threshold,
                      tenant_cfg.privacy.audit or privacy.audit)


def audit_policy(settings: Settings, tenant: str) -> AuditPolicy:
    """What the tenant's audit records keep (its own policy, else ``privacy.audit``)."""
    return settings.tenant(tenant).privacy.audit or settings.privacy.audit
