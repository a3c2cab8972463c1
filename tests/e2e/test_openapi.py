"""The OpenAPI document is the api's contract (``api/openapi.py``), checked against the real stack.

The document loads as OpenAPI, lists no 422 (validation errors are 400), documents every error status
each operation returns in its route's dialect, and the key it takes; /metrics is text/plain. Then a
small seeded schemathesis run (``ops/fuzz_api.py``'s, few examples per operation) finds no 5xx, no
undocumented status or content type, and no answer that breaks its schema or headers.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.core.result import Err, Ok

from ops.fuzz_api import HEALTHY_MODELS, run_schemathesis, still_serving
from tests.conftest import ADMIN, Stack

TENANT = ("ApiKey", "XApiKey")
OPERATORS = ("OperatorsKey", "OperatorsXApiKey")
CONSOLE = ("OperatorsKey", "OperatorsXApiKey", ("ConsoleSession", "ConsoleCsrf"))  # cookie and CSRF token together
SUBMIT = {400, 401, 403, 404, 408, 409, 413, 429, 500, 503}
ADMIN_KEY = {401, 403, 500, 503}
# (method, path): (the statuses it documents, the schemes its key may come by)
CONTRACT: dict[tuple[str, str], tuple[set[int], tuple[str | tuple[str, ...], ...]]] = {
    ("post", "/v1/chat/completions"): ({200, *SUBMIT, 502, 504}, TENANT),
    ("post", "/v1/messages"): ({200, *SUBMIT, 502, 504}, TENANT),
    ("post", "/v1/messages/count_tokens"): ({200, 400, 401, 403, 404, 408, 413, 429, 500, 503}, TENANT),
    ("post", "/v1/embeddings"): ({200, *SUBMIT, 502, 504}, TENANT),
    ("post", "/v1/completions"): ({200, *SUBMIT, 502, 504}, TENANT),
    ("post", "/v1/responses"): ({200, *SUBMIT, 502, 504}, TENANT),
    ("post", "/v1/files"): ({200, 400, 408, 413, 401, 403, 429, 500, 503}, TENANT),
    ("get", "/v1/files"): ({200, 401, 403, 429, 500, 503}, TENANT),
    ("get", "/v1/files/{file_id}"): ({200, 404, 401, 403, 429, 500, 503}, TENANT),
    ("get", "/v1/files/{file_id}/content"): ({200, 404, 401, 403, 429, 500, 503}, TENANT),
    ("delete", "/v1/files/{file_id}"): ({200, 404, 401, 403, 429, 500, 503}, TENANT),
    ("post", "/v1/batches"): ({200, 400, 404, 408, 413, 401, 403, 429, 500, 503}, TENANT),
    ("get", "/v1/batches"): ({200, 400, 401, 403, 429, 500, 503}, TENANT),
    ("get", "/v1/batches/{batch_id}"): ({200, 404, 401, 403, 429, 500, 503}, TENANT),
    ("post", "/v1/batches/{batch_id}/cancel"): ({200, 404, 401, 403, 429, 500, 503}, TENANT),
    ("post", "/v1/messages/batches"): ({200, 400, 401, 403, 408, 413, 429, 500, 503}, TENANT),
    ("get", "/v1/messages/batches"): ({200, 400, 401, 403, 429, 500, 503}, TENANT),
    ("get", "/v1/messages/batches/{message_batch_id}"): ({200, 404, 401, 403, 429, 500, 503}, TENANT),
    ("post", "/v1/messages/batches/{message_batch_id}/cancel"): ({200, 404, 401, 403, 429, 500, 503}, TENANT),
    ("get", "/v1/messages/batches/{message_batch_id}/results"): ({200, 404, 409, 401, 403, 429, 500, 503}, TENANT),
    ("post", "/v1/jobs"): ({200, 202, *SUBMIT}, TENANT),
    ("post", "/v1/jobs/batch"): ({202, *SUBMIT - {404}}, TENANT),
    ("get", "/v1/jobs"): ({200, 400, 401, 403, 404, 429, 500, 503}, TENANT),
    ("get", "/v1/jobs/{job_id}"): ({200, 400, 401, 403, 404, 429, 500, 503}, TENANT),
    ("get", "/v1/jobs/{job_id}/stream"): ({200, 400, 401, 403, 404, 429, 500, 503}, TENANT),
    ("delete", "/v1/jobs/{job_id}"): ({200, 401, 403, 404, 409, 429, 500, 503}, TENANT),
    ("get", "/v1/models"): ({200, 401, 403, 429, 500, 503}, TENANT),
    ("get", "/v1/admin/budgets"): ({200, 401, 403, 500, 503}, CONSOLE),
    ("get", "/v1/admin/overview"): ({200, 401, 403, 500, 503}, CONSOLE),
    ("get", "/v1/admin/jobs"): ({200, 400, 401, 403, 500, 503}, CONSOLE),
    ("get", "/v1/admin/jobs/{job_id}"): ({200, 401, 403, 404, 500, 503}, CONSOLE),
    ("get", "/v1/admin/audit"): ({200, 400, 401, 403, 500, 503}, CONSOLE),
    ("get", "/v1/audit"): ({200, 400, 401, 403, 429, 500, 503}, TENANT),
    ("delete", "/v1/admin/cache"): ({200, 400, 401, 403, 500, 503}, CONSOLE),
    ("get", "/v1/usage"): ({200, 400, 401, 403, 429, 500, 503}, TENANT + OPERATORS),
    ("get", "/v1/admin/tenants"): ({200, *ADMIN_KEY}, CONSOLE),
    ("post", "/v1/admin/tenants"): ({201, 400, 408, 409, 413, *ADMIN_KEY}, CONSOLE),
    ("get", "/v1/admin/tenants/{tenant_id}"): ({200, 400, 404, *ADMIN_KEY}, CONSOLE),
    ("patch", "/v1/admin/tenants/{tenant_id}"): ({200, 400, 404, 408, 413, *ADMIN_KEY}, CONSOLE),
    ("post", "/v1/admin/tenants/{tenant_id}/disable"): ({200, 400, 404, *ADMIN_KEY}, CONSOLE),
    ("post", "/v1/admin/tenants/{tenant_id}/enable"): ({200, 400, 404, *ADMIN_KEY}, CONSOLE),
    ("get", "/v1/admin/keys"): ({200, 400, 404, *ADMIN_KEY}, CONSOLE),
    ("post", "/v1/admin/keys"): ({201, 400, 404, 408, 413, *ADMIN_KEY}, CONSOLE),
    ("get", "/v1/admin/keys/{key_id}"): ({200, 400, 404, *ADMIN_KEY}, CONSOLE),
    ("patch", "/v1/admin/keys/{key_id}"): ({200, 400, 404, 408, 413, *ADMIN_KEY}, CONSOLE),
    ("post", "/v1/admin/keys/{key_id}/rotate"): ({200, 400, 404, 409, *ADMIN_KEY}, CONSOLE),
    ("post", "/v1/admin/keys/{key_id}/revoke"): ({200, 400, 404, *ADMIN_KEY}, CONSOLE),
    ("get", "/v1/admin/actions"): ({200, 400, *ADMIN_KEY}, CONSOLE),
    ("get", "/metrics"): ({200, 401, 403, 500, 503}, OPERATORS),
    ("get", "/healthz"): ({200}, ()),
    ("get", "/readyz"): ({200, 503}, ()),
}


@pytest.fixture(scope="module")
def document(stack: Stack) -> dict[str, Any]:
    r = httpx.get(f"{stack.url}/openapi.json")
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def fuzz_key(stack: Stack) -> str:
    """A tenant of its own: what the run creates (jobs, idempotency keys, queue depth) touches no other test."""
    from shared.db.session import session_scope
    from shared.db.tenants import create_key, ensure_tenant

    with session_scope() as db:
        ensure_tenant(db, "fuzz")
        return create_key(db, "fuzz", name="openapi")[1]


def test_the_document_loads_as_openapi(document: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()
    results = list(schema.get_all_operations())
    assert [r.err() for r in results if isinstance(r, Err)] == []
    assert {(r.ok().method.lower(), r.ok().path) for r in results if isinstance(r, Ok)} == set(CONTRACT)


def test_no_operation_lists_422(document: dict[str, Any]) -> None:
    listed = [(m, p) for p, ops in document["paths"].items() for m, op in ops.items() if "422" in op["responses"]]
    assert listed == []
    assert "HTTPValidationError" not in document["components"]["schemas"]


@pytest.mark.parametrize(("method", "path"), list(CONTRACT))
def test_each_operation_documents_its_statuses_errors_and_key(document: dict[str, Any], method: str,
                                                              path: str) -> None:
    statuses, schemes = CONTRACT[method, path]
    operation = document["paths"][path][method]
    assert {int(s) for s in operation["responses"]} == statuses
    dialect = "AnthropicError" if path.startswith("/v1/messages") else "OpenAIError"
    for status, answer in operation["responses"].items():
        if int(status) >= 400 and path != "/readyz":
            schema = answer["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{dialect}"}, (status, schema)
        if status in ("429", "503") and path != "/readyz":
            assert answer["headers"]["retry-after"]["required"] is True
        if int(status) < 300:
            assert answer["content"], status
    assert operation.get("security", []) == [
        {name: []} if isinstance(name, str) else dict.fromkeys(name, []) for name in schemes]


def test_the_security_schemes_are_bearer_and_x_api_key(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    for name in ("ApiKey", "OperatorsKey"):
        assert schemes[name] == {**schemes[name], "type": "http", "scheme": "bearer"}
    for name in ("XApiKey", "OperatorsXApiKey"):
        assert schemes[name] == {**schemes[name], "type": "apiKey", "in": "header", "name": "x-api-key"}
    assert schemes["ConsoleSession"] == {**schemes["ConsoleSession"], "type": "apiKey", "in": "cookie",
                                         "name": "gw_console"}
    assert schemes["ConsoleCsrf"] == {**schemes["ConsoleCsrf"], "type": "apiKey", "in": "header",
                                      "name": "x-gateway-csrf"}


def test_job_and_chat_answers_document_the_gateway_headers(document: dict[str, Any]) -> None:
    for path, method, status in [("/v1/chat/completions", "post", "200"), ("/v1/messages", "post", "200"),
                                 ("/v1/jobs", "post", "202"), ("/v1/jobs/{job_id}", "get", "200")]:
        headers = document["paths"][path][method]["responses"][status]["headers"]
        assert {"x-gateway-job-id", "x-gateway-cost-usd", "x-gateway-queued-ms"} <= set(headers), path


def test_streams_and_metrics_have_their_own_content_types(stack: Stack, document: dict[str, Any]) -> None:
    for path in ("/v1/chat/completions", "/v1/messages"):
        assert set(document["paths"][path]["post"]["responses"]["200"]["content"]) == {
            "application/json", "text/event-stream"}
    assert set(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    r = httpx.get(f"{stack.url}/metrics", headers=ADMIN)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")


@pytest.mark.timeout(300)  # every operation, some 45 of them, on a machine shared with other suites
def test_a_small_schemathesis_run_finds_nothing(stack: Stack, fuzz_key: str) -> None:
    """Every operation, valid and invalid inputs, a handful of examples each, seeded; then a normal call."""
    result = run_schemathesis(stack.url, fuzz_key, ADMIN["Authorization"].removeprefix("Bearer "), HEALTHY_MODELS,
                              examples=5, seed=20260101, capture=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert still_serving(stack.url, fuzz_key) is None
