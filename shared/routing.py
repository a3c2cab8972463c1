"""Resolve what a caller asked for (a model alias, a model, or a deployment) to a deployment chain.

The chain's order is the fallback order from config; the first entry is the preferred deployment.
The admission and resilience policies pick from this list, they never invent deployments.
"""

from __future__ import annotations

from shared.config import Settings
from shared.errors import UnknownModel, echo


def chain_for(settings: Settings, model: str) -> list[str]:
    if model in settings.models:
        return list(settings.models[model])
    names = [d.name for d in settings.deployments]
    if model in names:
        return [model]
    known = sorted(settings.models) or names
    raise UnknownModel(
        f"The model {echo(model)} does not exist on this gateway. Use one of: {', '.join(known)}.",
        param="model",
    )
