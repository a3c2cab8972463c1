"""The OpenAPI document as a contract: what each route accepts, and every status it answers with its body.

Routes read their JSON bodies themselves (after authentication, see ``api.deps.read_body``), so FastAPI
does not know them: ``body_of`` declares each one. Routes declare their answers with ``answer`` (a
success, with its headers) and ``errors`` (the error statuses they can return, each with the error body
of the route's dialect). FastAPI's default 422 is dropped from every operation: validation errors are
400 here (``api.errors``). ``tests/e2e/test_openapi.py`` and ``ops/fuzz_api.py`` hold the api to it.

Statuses the HTTP server answers before any route runs are the same on every path and listed once, in
the document's description: 408 (headers too slow), 431 (headers too large), 503 (connection cap).
The console's HTML pages (``/``, ``/console``, its login and logout forms and static files) are for
browsers and are not in the document; the JSON they read (``/v1/admin/*``) is.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from api.answers import AnthropicError, OpenAIError
from shared.storable import INT_MAX, INT_MIN, MAX_DEPTH

_BODIES: dict[str, type[BaseModel]] = {}
_REF = "#/components/schemas/{model}"

DESCRIPTION = (
    "One service every LLM call goes through: OpenAI- and Anthropic-compatible routes and a native jobs "
    "API. Errors are OpenAI's `{\"error\": {...}}`, or Anthropic's on `/v1/messages`; validation errors "
    "are 400. Before any route runs, the HTTP server may answer 408 (request headers too slow), 431 "
    "(request headers too large) or 503 (connection cap), on any path."
)

# Every status a route may document, and what it means for a caller.
_WHY: dict[int, str] = {
    400: "Invalid request: malformed JSON, a field's type or value, a job that can never fit a budget "
         "(`job_too_large`), a value the privacy policy blocks (`sensitive_data_blocked`) or a likely prompt "
         "injection (`prompt_injection_blocked`); `param` names the field.",
    401: "Missing, unknown or revoked API key.",
    403: "The key may not do this: the operators' key on a tenant route, a lane, model or feature the key may "
         "not use, another tenant's usage, or admin routes switched off.",
    404: "Not found: the job (another tenant's jobs are not found either), the model (`model_not_found`, "
         "with the models you can use), or the tenant or key an operator named.",
    408: "The request body stopped arriving (`request_timeout`).",
    409: "Conflict: an `idempotency_key` reused with a different request, a job no longer in a state "
         "that allows this (cancelled, or already sent), a tenant that exists already, or a revoked key.",
    413: "The request body is larger than the gateway's limit.",
    429: "Shed: the tenant's queue is full, its deadline cannot be met, the job expired, or too many failed "
         "authentications; or a hard dollar budget is spent (`insufficient_quota`: the message names the budget, "
         "its window, what was spent and when it resets). Wait `retry-after` seconds.",
    500: "Internal error; the message carries a reference to the gateway's logs.",
    502: "The provider failed and the gateway gave up on the job (retries and fallbacks spent).",
    503: "The gateway's queue and budget store (Redis) is unavailable, or too many uploads are in progress; "
         "nothing was accepted. Retry after `retry-after` seconds.",
    504: "The job did not finish within the wait limit, or the provider did not answer in time; a job still "
         "running can be fetched with `GET /v1/jobs/{id}` (`x-gateway-job-id`).",
}

# Statuses every route behind a tenant's key can answer, and those behind the operators' key.
TENANT_KEY = (401, 403, 429, 500, 503)
OPERATORS_KEY = (401, 403, 500, 503)
BODY = (400, 408, 413)  # routes that read a JSON body


def header(description: str, pattern: str | None = None, *, required: bool = True) -> dict[str, Any]:
    """A response header such answers carry (``api.delivery.gateway_headers``): every one, or some (``required``)."""
    return {"description": description, "required": required,
            "schema": {"type": "string", **({"pattern": pattern} if pattern else {})}}


_COUNT = r"^\d+$"
RETRY_AFTER = {"retry-after": header("seconds to wait before retrying", _COUNT)}
JOB_HEADERS = {
    "x-gateway-job-id": header("the job's id (`GET /v1/jobs/{id}`)"),
    "x-gateway-status": header("the job's status"),
    "x-gateway-model": header("the model that answered (or was asked for)"),
    "x-gateway-deployment": header("the deployment that answered; empty before one did"),
    "x-gateway-tokens-in": header("prompt tokens as the provider metered them", _COUNT),
    "x-gateway-tokens-out": header("completion tokens as the provider metered them", _COUNT),
    "x-gateway-cost-usd": header("what the call cost, in US dollars", r"^\d+\.\d+$"),
    "x-gateway-cache": header("hit (an exact repeat), semantic (a question that means the same), miss, or bypass "
                              "(the cache was not asked: no-cache/no-store, sampling, off)",
                              "^(hit|semantic|miss|bypass)$"),
    "x-gateway-cache-source-job": header("on a hit: the job whose answer was served", required=False),
    "x-gateway-cache-similarity": header("on a semantic hit: the questions' cosine similarity", r"^\d+\.\d+$",
                                         required=False),
    "x-gateway-saved-usd": header("on a hit: what the answer cost when it was paid for", r"^\d+\.\d+$",
                                  required=False),
    "x-gateway-queued-ms": header("how long the job waited for admission, in milliseconds", _COUNT),
    "x-gateway-screen": header("on a call the prompt-injection screen flagged: `flagged; score=0.72; "
                               "signals=ignore_instructions,...`", r"^flagged; score=\d\.\d\d; signals=[a-z_,]*$",
                               required=False),
    "x-gateway-route": header("model `auto` only: `task=...; tier=...; escalations=N[; saving_usd=...]; why=...`",
                              r"^task=\S+; tier=\S+; escalations=\d+", required=False),
}


def sse(data: str, events: list[str] | None = None) -> dict[str, Any]:
    """``content`` for an answer streamed as server-sent events; as OpenAPI 3.1 reads it, ``schema``
    describes one event."""
    event: dict[str, Any] = {"type": "string"} if events is None else {"enum": events}
    return {"text/event-stream": {"schema": {
        "type": "object", "required": ["data"], "description": "one server-sent event",
        "properties": {"data": {"type": "string", "description": data}, "event": event}}}}


# What ``shared.storable`` refuses in any body, said in its schema: NUL in strings and keys, integers
# beyond 64 bits; a free-form value (``dict[str, Any]``) is a ``JsonValue`` held to the same rules.
_NO_NUL = "^[^\\x00]*$"
_JSON_VALUE = "JsonValue"
_JSON_VALUE_REF = {"$ref": _REF.format(model=_JSON_VALUE)}


def _json_value(levels: int) -> dict[str, Any]:
    """Any JSON with the rules spelled out ``levels`` deep: schema-driven generators give up on a recursive
    schema, and two levels say it; the api checks every level."""
    inner = _json_value(levels - 1) if levels > 1 else {}
    return {"type": ["string", "number", "boolean", "null", "array", "object"],
            "pattern": _NO_NUL, "minimum": INT_MIN, "maximum": INT_MAX,
            "items": inner, "propertyNames": {"pattern": _NO_NUL}, "additionalProperties": inner}


_JSON_VALUE_SCHEMA = {
    "description": f"Any JSON the gateway can store: strings and keys without NUL, numbers within signed 64 bits "
                   f"(at every level), at most {MAX_DEPTH} levels deep.", **_json_value(2)}


def _storable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (a body model's, from pydantic) with the rules above added wherever they apply."""
    if not schema:
        return dict(_JSON_VALUE_REF)
    out = dict(schema)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in out:
            out[key] = [_storable(s) for s in out[key]]
    if "properties" in out:
        out["properties"] = {name: _storable(s) for name, s in out["properties"].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = _storable(out["items"])
    kind = out.get("type")
    if kind == "string" and not {"pattern", "enum", "const", "format"} & out.keys():
        out["pattern"] = _NO_NUL
    elif kind == "integer":
        out.setdefault("minimum", INT_MIN)
        out.setdefault("maximum", INT_MAX)
    elif kind == "object":
        extra = out.get("additionalProperties", True)
        if extra is True:
            out["additionalProperties"] = _JSON_VALUE_REF
        elif isinstance(extra, dict):
            out["additionalProperties"] = _storable(extra)
        out["propertyNames"] = {"pattern": _NO_NUL}
    return out


def body_of(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose JSON body is ``model``."""
    _BODIES[model.__name__] = model
    ref = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


# The job-tag headers every compatible submit route reads (``api.routes.common.Submit.tags`` checks them:
# a 400 that names the header): each one's description and constraints, shown as FastAPI shows an
# optional header (a string or nothing).
TAG_HEADERS: dict[str, dict[str, Any]] = {
    "x-gateway-feature": {"description": "the feature the call is for (default `default`)",
                          "pattern": r"^[A-Za-z0-9_.:-]+$", "maxLength": 64},
    "x-gateway-priority": {"description": "the lane: interactive (default here), standard or batch",
                           "enum": ["interactive", "standard", "batch"]},
    "idempotency-key": {"description": "returns the job this key made in the last 24 h instead of a new one",
                        "minLength": 1, "maxLength": 255},
    "x-gateway-task": {"description": "what the call is for (classify, extract, summarize, chat, code, reason ...): "
                                      "with model `auto`, the route it takes",
                       "maxLength": 64},
    "cache-control": {"description": "`no-cache`: a fresh answer (then stored); `no-store`: the cache is not used "
                                     "at all",
                      "maxLength": 256},
}
# A tenant's key, in either SDK's header: what ``api.deps`` declares as the ApiKey and XApiKey schemes.
TENANT_SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"XApiKey": []}]


def submit_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a compatible submit route (``api.routes.common.submit_of``): its body, the
    tenant's key and the tag headers, which the route reads itself rather than through FastAPI."""
    optional = [{"type": "string"}, {"type": "null"}]
    headers = [{"name": name, "in": "header", "required": False, "description": doc["description"],
                "schema": {"anyOf": optional, **doc}} for name, doc in TAG_HEADERS.items()]
    return {**body_of(model), "security": TENANT_SECURITY, "parameters": headers}


def answer(model: type[BaseModel], description: str, *, headers: dict[str, Any] | None = None,
           content: dict[str, Any] | None = None, links: dict[str, Any] | None = None) -> dict[str, Any]:
    """One success response: ``model`` as JSON, plus other ``content`` (an SSE stream), ``headers`` and
    ``links`` (where its ids can be used next)."""
    out: dict[str, Any] = {"model": model, "description": description}
    for key, value in (("headers", headers), ("content", content), ("links", links)):
        if value:
            out[key] = value
    return out


def job_links(job_id: str = "$response.body#/id") -> dict[str, Any]:
    """Links from an answer that names a job (at ``job_id``) to the operations that take its id."""
    return {name: {"operationId": operation, "parameters": {"job_id": job_id}}
            for name, operation in (("GetJob", "get_job"), ("CancelJob", "cancel_job"))}


def errors(*statuses: int, anthropic: bool = False) -> dict[int | str, dict[str, Any]]:
    """The error responses for ``statuses``, in OpenAI's shape (Anthropic's for ``/v1/messages``)."""
    model = AnthropicError if anthropic else OpenAIError
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted(set(statuses)):
        out[status] = {"model": model, "description": _WHY[status]}
        if status in (429, 503):
            out[status]["headers"] = RETRY_AFTER
    return out


def _console_session_with_its_token(operation: dict[str, Any]) -> None:
    """FastAPI lists each security scheme as an alternative; the console's session cookie counts only with
    its CSRF header, so the two are one requirement (both needed)."""
    security = operation.get("security")
    if not security or {"ConsoleSession": []} not in security:
        return
    others = [s for s in security if s not in ({"ConsoleSession": []}, {"ConsoleCsrf": []})]
    operation["security"] = [*others, {"ConsoleSession": [], "ConsoleCsrf": []}]


def install_openapi(app: FastAPI) -> None:
    """Generate the document once: the body models (and the models they use) as components, no 422s."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                                 description=DESCRIPTION)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components[_JSON_VALUE] = _JSON_VALUE_SCHEMA
            for name, model in _BODIES.items():
                model_schema = model.model_json_schema(ref_template=_REF)
                components.update({n: _storable(s) for n, s in model_schema.pop("$defs", {}).items()})
                components[name] = _storable(model_schema)
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
                    _console_session_with_its_token(operation)
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
