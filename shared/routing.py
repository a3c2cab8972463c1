"""Which deployments may serve a request, in the order admission should try them.

Two kinds of request:

- a **model name** (an alias in config ``models:``, or a deployment): its chain from config, the first
  entry preferred, the others fallbacks;
- a **route** (``model: auto``): the tiers of the request's task (``routing.tasks``, per tenant and
  feature where they say so), or for no task the ``auto`` tiers from the tier the complexity scorer picks
  (``shared.complexity``). Tiers are cheapest first; within a tier, deployments are ordered by this
  request's estimated cost (prompt tokens x input price + expected output x output price).

Either way the list is filtered before anything is stored: a deployment the tenant or feature may not
use (``models: {allow, deny}``), or one that cannot serve the request (context window, output limit,
tools, images, JSON schema output, streaming; ``shared.capabilities``), or one whose dialect cannot
carry the request (a field with no equivalent there, ``shared.dialects``), is dropped. What is left is the
envelope's chain; admission then picks among it as for any chain (breaker closed, budget admits before
the deadline), and for a route stays within its starting tier unless the lane may spill up
(``routing.spill``). The decision is a few dictionary reads and multiplications per deployment, made in
the api with no round trip of its own (benchmarked in ``ops/bench_routing.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.capabilities import Capabilities, capabilities_of
from shared.complexity import score, tier_for
from shared.config import ModelAccess, Settings
from shared.dialects import UnsupportedParameter, dialect_of, refusal
from shared.errors import InvalidRequest, PermissionDenied, UnknownModel, echo
from shared.lanes import Lane

AUTO = "auto"
LISTED_MODELS = 10  # an unknown model's error names this many of the known ones, not hundreds


def chain_for(settings: Settings, model: str) -> list[str]:
    """The configured chain of a model name (an alias or a deployment); UnknownModel for anything else."""
    if model in settings.models:
        return list(settings.models[model])
    names = [d.name for d in settings.deployments]
    if model in names:
        return [model]
    known = ([AUTO] if settings.routing.tiers else []) + (sorted(settings.models) or names)
    listed = ", ".join(known[:LISTED_MODELS]) + (f" and {len(known) - LISTED_MODELS} more (GET /v1/models lists "
                                                 "them)" if len(known) > LISTED_MODELS else "")
    raise UnknownModel(f"The model {echo(model)} does not exist on this gateway. Use one of: {listed}.",
                       param="model")


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A routed job's route, fixed when it is accepted: it travels on the envelope and is stored on the job.

    ``tiers`` are the route's tiers from the one it starts at, each with its deployments in the order
    tried; ``ceiling`` is the deployment of its most expensive tier that the saving is measured against.
    """

    task: str | None
    reason: str
    tiers: tuple[tuple[str, tuple[str, ...]], ...]
    spill: bool
    ceiling: str

    def tier_of(self, deployment: str) -> int:
        """The index of the tier ``deployment`` is in (0: where the route starts)."""
        return next((i for i, (_, deps) in enumerate(self.tiers) if deployment in deps), 0)

    def tier_name(self, index: int) -> str:
        return self.tiers[min(index, len(self.tiers) - 1)][0]

    @property
    def chain(self) -> list[str]:
        return [d for _, deps in self.tiers for d in deps]

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "reason": self.reason, "tiers": [[name, list(deps)] for name, deps in self.tiers],
                "spill": self.spill, "ceiling": self.ceiling}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RouteSpec:
        tiers = tuple((str(name), tuple(str(d) for d in deps)) for name, deps in data["tiers"])
        return cls(task=data.get("task"), reason=str(data["reason"]), tiers=tiers, spill=bool(data["spill"]),
                   ceiling=str(data["ceiling"]))


@dataclass(frozen=True, slots=True)
class Needs:
    """What a request needs of the deployment that serves it."""

    prompt_tokens: int
    output_cap: int | None  # max_tokens / max_completion_tokens, when the caller set one
    tools: bool
    vision: bool
    json_schema: bool
    streaming: bool
    wording: Wording | None = field(default=None, compare=False)

    @classmethod
    def of(cls, request: dict[str, Any], prompt_tokens: int, stream: bool = False,
           wording: Wording | None = None) -> Needs:
        cap = request.get("max_completion_tokens") or request.get("max_tokens")
        response_format = request.get("response_format")
        return cls(prompt_tokens=prompt_tokens, output_cap=int(cap) if cap else None,
                   tools=bool(request.get("tools")), vision=_has_images(request.get("messages")),
                   json_schema=isinstance(response_format, dict) and response_format.get("type") == "json_schema",
                   streaming=stream, wording=wording)

    def missing(self, caps: Capabilities) -> list[str]:
        """What ``caps`` lacks for this request (empty: it can serve it); names from ``_WHAT``."""
        lacks = [name for name in ("tools", "vision", "json_schema", "streaming")
                 if getattr(self, name) and not getattr(caps, name)]
        if self.prompt_tokens + (self.output_cap or 0) > caps.context_window:
            lacks.append("context_window")
        limit = caps.max_output_tokens
        if self.output_cap is not None and limit is not None and self.output_cap > limit:
            lacks.append("max_output_tokens")
        return lacks


class Wording:
    """The request as its caller wrote it, and whether each dialect can carry it (asked once per dialect
    and ``drop_unsupported`` setting, on first need: a chain of one dialect never translates)."""

    def __init__(self, request: dict[str, Any], dialect: str) -> None:
        self.request, self.dialect = request, dialect
        self._seen: dict[tuple[str, bool], InvalidRequest | None] = {}

    def refused(self, target: str, drop: bool) -> InvalidRequest | None:
        """Why a ``target`` deployment cannot take the request, naming the field (None: it can)."""
        if target == self.dialect:
            return None
        if (target, drop) not in self._seen:
            self._seen[(target, drop)] = refusal(self.request, self.dialect, target, drop=drop)
        return self._seen[(target, drop)]


# What each missing capability means to a caller, and the request field it is about.
_WHAT = {
    "tools": ("tool calling", "tools"),
    "vision": ("image input (the messages hold images)", "messages"),
    "json_schema": ("JSON schema output (response_format json_schema)", "response_format"),
    "streaming": ("streaming", "stream"),
    "context_window": ("a context window large enough for the prompt and max_tokens", "messages"),
    "max_output_tokens": ("an output limit as large as max_tokens", "max_tokens"),
}


class Router:
    """The routing decision, built once per process from the settings (capabilities and prices read once)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.capabilities = {d.name: capabilities_of(d, settings.providers[d.provider].kind)
                             for d in settings.deployments}
        self.model_of = {d.name: d.model for d in settings.deployments}
        self.dialect = {d.name: dialect_of(settings.providers[d.provider].kind) for d in settings.deployments}
        self.drops = {d.name: d.drop_unsupported for d in settings.deployments}

    def route(self, *, tenant: str, feature: str, lane: Lane, model: str, request: dict[str, Any],
              prompt_tokens: int, task: str | None = None, stream: bool = False,
              key: ModelAccess | None = None, wording: Wording | None = None) -> tuple[list[str], RouteSpec | None]:
        """The chain to admit from, and the route when ``model`` is ``auto`` (else None). ``key``: the API
        key's own models policy, on top of its tenant's and feature's. ``request`` is read in the OpenAI
        form (``shared.dialects.chat_view``); ``wording`` is how the caller wrote it (None: that form)."""
        needs = Needs.of(request, prompt_tokens, stream, wording)
        access = self._access(tenant, feature) + ((key,) if key is not None else ())
        if model != AUTO:
            return self._usable(chain_for(self.settings, model), needs, access, model), None
        tiers, start, reason = self._tiers_for(tenant, feature, task, request, prompt_tokens)
        kept = [(name, self._cheapest_first(self._usable(self.settings.routing.tiers[name], needs, access, AUTO,
                                                         raise_empty=False), needs)) for name in tiers]
        spec = self._spec(kept, start, task, reason, lane, needs, access)
        return spec.chain, spec

    def names_for(self, tenant: str, key: ModelAccess | None = None) -> list[str]:
        """The names a tenant's key may ask for (``GET /v1/models``): ``auto`` when routes exist, every
        model whose chain keeps a deployment the tenant's and the key's policies allow, and those
        deployments by name. A feature's own policy narrows it further when the call names one."""
        access = (self.settings.tenant(tenant).models, *((key,) if key is not None else ()))
        allowed = [d.name for d in self.settings.deployments
                   if all(a.permits(d.name, self.model_of[d.name]) for a in access)]
        models = [m for m, chain in self.settings.models.items() if any(d in allowed for d in chain)]
        return ([AUTO] if self.settings.routing.tiers else []) + models + allowed

    # -- filters -----------------------------------------------------------------------------------

    def _access(self, tenant: str, feature: str) -> tuple[ModelAccess, ...]:
        cfg = self.settings.tenant(tenant)
        feature_cfg = cfg.features.get(feature)
        return (cfg.models,) if feature_cfg is None else (cfg.models, feature_cfg.models)

    def _usable(self, chain: list[str], needs: Needs, access: tuple[ModelAccess, ...], model: str,
                raise_empty: bool = True) -> list[str]:
        """``chain`` without what the tenant may not use or what cannot serve ``needs``; an empty result
        is a 403 (policy) or a 400 naming what is missing when ``raise_empty``."""
        allowed = [d for d in chain if all(a.permits(d, self.model_of[d]) for a in access)]
        capable = [d for d in allowed if not needs.missing(self.capabilities[d])]
        sayable = [d for d in capable if self._refused(d, needs) is None]
        if sayable or not raise_empty:
            return sayable
        if not allowed:
            raise _not_allowed(model, chain)
        if capable:
            raise self._untranslatable(model, capable, needs)
        raise self._incapable(model, allowed, needs)

    def _refused(self, deployment: str, needs: Needs) -> InvalidRequest | None:
        """Why ``deployment``'s dialect cannot carry the request, if it cannot (``shared.dialects``)."""
        if needs.wording is None:
            return None
        return needs.wording.refused(self.dialect[deployment], self.drops[deployment])

    def _untranslatable(self, model: str, chain: list[str], needs: Needs) -> UnsupportedParameter:
        """The 400 for a request every capable deployment of which speaks a dialect that cannot carry it."""
        found = [r for d in chain if (r := self._refused(d, needs)) is not None]
        param = found[0].param or "model"
        reasons = "; ".join(dict.fromkeys(r.message for r in found))
        return UnsupportedParameter(f"{param}: no deployment that {echo(model)} can use ({', '.join(chain)}) can "
                                    f"take this request. {reasons}", param=param)

    def _incapable(self, model: str, chain: list[str], needs: Needs) -> InvalidRequest:
        """The 400 for a request nothing on ``chain`` can serve: what it needs that none of them has."""
        lacks = [set(needs.missing(self.capabilities[d])) for d in chain]
        common = [name for name in _WHAT if all(name in lack for lack in lacks)] or sorted(set().union(*lacks))
        what, param = _WHAT[common[0]]
        detail = "; ".join(_WHAT[name][0] for name in common)
        numbers = ""
        if "context_window" in common:
            widest = max(self.capabilities[d].context_window for d in chain)
            numbers = (f" It needs {needs.prompt_tokens + (needs.output_cap or 0)} tokens ({needs.prompt_tokens} "
                       f"prompt + {needs.output_cap or 0} max_tokens); the largest context window is {widest}.")
        return InvalidRequest(f"No deployment that {echo(model)} can use serves this request: it needs {detail}, "
                              f"which none of {', '.join(chain)} has.{numbers} Change {param}, or ask the "
                              f"gateway's operators for a route that has it.", param=param,
                              code="no_capable_deployment")

    # -- routes ------------------------------------------------------------------------------------

    def _tiers_for(self, tenant: str, feature: str, task: str | None, request: dict[str, Any],
                   prompt_tokens: int) -> tuple[list[str], int, str]:
        """The task's tiers, where the route starts among them, and why."""
        routing = self.settings.routing
        if not routing.tiers:
            raise UnknownModel("This gateway has no routes (routing.tiers is empty): name a model instead of "
                               f"'auto'. Models: {', '.join(sorted(self.settings.models))}.", param="model")
        if task is None:
            found = score(request, prompt_tokens)
            start = tier_for(found.score, routing.thresholds())
            signals = ", ".join(found.signals) or "none"
            return routing.auto_tiers(), start, f"complexity {found.score:.2f} ({signals})"
        tasks = self._tasks(tenant, feature)
        if task not in tasks:
            raise InvalidRequest(f"Unknown task {echo(task)} for model 'auto'; the tasks are: "
                                 f"{', '.join(sorted(tasks)) or '(none)'}, or send no task to let the gateway "
                                 "judge the request.", param="task", code="unknown_task")
        return tasks[task], 0, f"task {task}"

    def _tasks(self, tenant: str, feature: str) -> dict[str, list[str]]:
        cfg = self.settings.tenant(tenant)
        feature_cfg = cfg.features.get(feature)
        return {**self.settings.routing.tasks, **cfg.tasks, **(feature_cfg.tasks if feature_cfg else {})}

    def _cheapest_first(self, chain: list[str], needs: Needs) -> list[str]:
        output = needs.output_cap or self.settings.routing.expected_output_tokens
        return sorted(chain, key=lambda d: self.capabilities[d].cost_usd(needs.prompt_tokens, output))

    def _spec(self, kept: list[tuple[str, list[str]]], start: int, task: str | None, reason: str, lane: Lane,
              needs: Needs, access: tuple[ModelAccess, ...]) -> RouteSpec:
        """The route from tier ``start`` up, over the tiers that kept a deployment; when none from there
        did, from the highest below it that did."""
        usable = [(i, name, tuple(deps)) for i, (name, deps) in enumerate(kept) if deps]
        if not usable:
            every = list(dict.fromkeys(d for name, _ in kept for d in self.settings.routing.tiers[name]))
            self._usable(every, needs, access, AUTO)  # raises the 403 or 400 that says why
        tiers = [(name, deps) for i, name, deps in usable if i >= start] or [usable[-1][1:]]
        wanted = kept[min(start, len(kept) - 1)][0]
        if wanted != tiers[0][0]:
            reason += f"; from {tiers[0][0]}: no usable deployment in {wanted}"
        return RouteSpec(task=task, reason=reason, tiers=tuple(tiers),
                         spill=self.settings.routing.spill.get(lane, False), ceiling=usable[-1][2][0])

    def estimated_cost(self, deployment: str, input_tokens: int, output_tokens: int) -> float:
        return self.capabilities[deployment].cost_usd(input_tokens, output_tokens)


def _has_images(messages: Any) -> bool:
    if not isinstance(messages, list):
        return False
    return any(isinstance(m, dict) and isinstance(m.get("content"), list)
               and any(isinstance(p, dict) and p.get("type") in ("image_url", "image") for p in m["content"])
               for m in messages)


def _not_allowed(model: str, chain: list[str]) -> PermissionDenied:
    return PermissionDenied(f"This key, tenant or feature may not use any deployment of {echo(model)} "
                            f"({', '.join(chain)}): its models policy (allow/deny) excludes them. Ask the "
                            "gateway's operators, or use another model.", param="model", code="model_not_allowed")
