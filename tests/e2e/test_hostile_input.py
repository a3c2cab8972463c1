"""Values no store or serialiser can carry get a 400 naming the field, on every route, before anything
is written: huge integers, NaN and Infinity, NUL characters, lone surrogates, deep nesting; and
deadlines that are not a sane time."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import API_PORT, Stack
from tests.e2e.test_bad_input import _count_jobs

MESSAGES = '[{"role": "user", "content": "hi"}]'
DEEP = "[" * 100 + "]" * 100
TOO_DEEP = "[" * 300 + "]" * 300

# (extra JSON members of the body, the field the 400 names, words of its message)
BAD = [
    ('"seed": 18446744073709551616', "seed", "64-bit"),
    ('"seed": -9223372036854775809', "seed", "64-bit"),
    ('"temperature": 0.5, "logit_bias": {"50256": NaN}', "logit_bias.50256", "NaN"),
    ('"top_logprobs": Infinity', "top_logprobs", "Infinity"),
    ('"user": "a\\u0000b"', "user", "NUL"),
    ('"user": "\\ud800"', None, "not valid JSON"),  # a lone surrogate: pydantic's JSON parser refuses it
    (f'"tools": [{{"type": "function", "function": {{"name": "f", "parameters": {DEEP}}}}}]',
     "tools.0.function.parameters", "nested deeper"),
    (f'"extra_field": {TOO_DEEP}', None, "recursion"),
    ('"messages_extra": [{"x": 1}], "metadata": {"k\\u0000": "v"}', "metadata", "NUL"),
]


def _body(extra: str, messages: str = MESSAGES, **fields: str) -> bytes:
    members = ['"model": "gpt-4o-mini"', f'"messages": {messages}', extra,
               *(f'"{k}": {v}' for k, v in fields.items())]
    return ("{" + ", ".join(members) + "}").encode()


def _post(stack: Stack, path: str, body: bytes) -> tuple[int, dict]:
    with stack.client() as c:
        r = c.post(path, content=body, headers={"Content-Type": "application/json"})
    return r.status_code, r.json()


@pytest.mark.parametrize(("extra", "param", "words"), BAD)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/jobs", "/v1/messages"])
def test_a_value_that_cannot_be_stored_is_a_400_naming_it(stack: Stack, path: str, extra: str,
                                                           param: str | None, words: str) -> None:
    before = _count_jobs(stack)
    body = _body(extra, max_tokens="16") if path == "/v1/messages" else _body(extra)
    status, answer = _post(stack, path, body)
    assert status == 400, answer
    error = answer["error"]
    assert words.lower() in error["message"].lower()
    if param is not None and path != "/v1/messages":  # Anthropic's error body has no param
        assert error["param"].startswith(param)
    assert _count_jobs(stack) == before


@pytest.mark.parametrize(("extra", "param", "words"), [b for b in BAD if b[1] is not None])
def test_one_such_value_refuses_its_whole_batch_naming_the_item(stack: Stack, extra: str, param: str,
                                                                words: str) -> None:
    before = _count_jobs(stack)
    good = _body('"feature": "batch-hostile"').decode()
    status, answer = _post(stack, "/v1/jobs/batch", f'{{"jobs": [{good}, {_body(extra).decode()}]}}'.encode())
    assert status == 400, answer
    assert answer["error"]["param"].startswith(f"jobs.1.{param}")
    assert words.lower() in answer["error"]["message"].lower()
    assert _count_jobs(stack) == before


@pytest.mark.parametrize(("deadline", "words"), [
    ("1e12", "366 days"), ("1e308", "366 days"), ("NaN", "NaN"), ("Infinity", "Infinity"),
    ("true", "not bool"), ("-5", "positive"), ("0", "positive"), ('"2001-01-01T00:00:00Z"', "already passed"),
    ('"in an hour"', "ISO 8601"), ('"2126-01-01T00:00:00Z"', "366 days"),
])
def test_a_deadline_that_is_not_a_sane_time_is_a_400(stack: Stack, deadline: str, words: str) -> None:
    before = _count_jobs(stack)
    status, answer = _post(stack, "/v1/jobs", _body(f'"deadline": {deadline}'))
    assert status == 400, answer
    assert answer["error"]["param"] == "deadline"
    assert words in answer["error"]["message"]
    assert _count_jobs(stack) == before


def test_a_batch_with_a_bad_key_is_refused_before_its_body_is_read(stack: Stack) -> None:
    """The 401 comes while the 60 MB the request announces has not been sent at all."""
    head = (b"POST /v1/jobs/batch HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer gw-not-a-key\r\n"
            b"Content-Type: application/json\r\nContent-Length: 60000000\r\n\r\n")
    with socket.create_connection(("127.0.0.1", API_PORT), timeout=10) as sock:
        sock.sendall(head)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


# The other JSON routes (issue 17): the same values are a 400 before any job is written.
OTHER_ROUTES = {
    "/v1/embeddings": '"model": "text-embedding-3-small", "input": "hi"',
    "/v1/completions": '"model": "gpt-3.5-turbo-instruct", "prompt": "hi", "max_tokens": 4',
    "/v1/responses": '"model": "gpt-4o-mini", "input": "hi"',
    "/v1/messages/count_tokens": f'"model": "gpt-4o-mini", "messages": {MESSAGES}',
}


@pytest.mark.parametrize("extra", [b[0] for b in BAD if b[0].startswith(('"seed"', '"user"', '"extra_field"'))]
                         + ['"top_logprobs": Infinity'])
@pytest.mark.parametrize("path", list(OTHER_ROUTES))
def test_the_other_routes_refuse_what_cannot_be_stored_before_writing(stack: Stack, path: str, extra: str) -> None:
    before = _count_jobs(stack)
    status, answer = _post(stack, path, ("{" + OTHER_ROUTES[path] + ", " + extra + "}").encode())
    assert status == 400, (path, extra, answer)
    assert answer["error"]["message"]
    assert _count_jobs(stack) == before


def _batches(stack: Stack) -> int:
    with stack.client() as c:
        return len(c.get("/v1/messages/batches", params={"limit": 100}).json()["data"])


@pytest.mark.parametrize("extra", [b[0] for b in BAD])
def test_a_message_batch_with_such_a_value_in_one_request_is_refused_whole(stack: Stack, extra: str) -> None:
    """Every request of a message batch is checked before the batch is written: one bad value is a 400
    (Anthropic's error body), and neither a batch nor a job exists after it."""
    jobs, batches = _count_jobs(stack), _batches(stack)
    params = '{"model": "gpt-4o-mini", "max_tokens": 16, "messages": ' + MESSAGES + ", " + extra + "}"
    ok = '{"custom_id": "fine", "params": {"model": "gpt-4o-mini", "max_tokens": 16, "messages": ' + MESSAGES + "}}"
    body = ('{"requests": [' + ok + ', {"custom_id": "bad", "params": ' + params + "}]}").encode()
    status, answer = _post(stack, "/v1/messages/batches", body)
    assert status == 400, answer
    assert answer["type"] == "error" and answer["error"]["message"]
    assert _count_jobs(stack) == jobs and _batches(stack) == batches


def test_a_message_batch_with_a_bad_key_or_a_wrong_type_is_refused(stack: Stack) -> None:
    with stack.client() as c:
        unknown = c.post("/v1/messages/batches", json={"requests": []}, headers={"x-api-key": "sk-nope",
                                                                                   "Authorization": ""})
        wrong = c.post("/v1/messages/batches", json={"requests": {"custom_id": "a"}})
        huge = c.post("/v1/messages/batches", content=b" " * (64 * 1024 * 1024 + 1),  # api.max_batch_body_bytes + 1
                      headers={"Content-Type": "application/json"})
    assert unknown.status_code == 401
    assert wrong.status_code == 400
    assert huge.status_code == 413


@pytest.mark.parametrize("stream", ['"yes"', "1", "1e309", "[true]"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/jobs", "/v1/messages", "/v1/responses"])
def test_stream_that_is_not_a_boolean_is_a_400(stack: Stack, path: str, stream: str) -> None:
    """A caller that sends ``stream: "yes"`` must not be answered a stream it cannot parse (or a whole
    answer it did not ask for): as the providers do, anything but true or false is refused."""
    before = _count_jobs(stack)
    if path == "/v1/responses":
        body = f'{{"model": "gpt-4o-mini", "input": "hi", "stream": {stream}}}'.encode()
    else:
        body = _body(f'"stream": {stream}', **({"max_tokens": "16"} if path == "/v1/messages" else {}))
    status, answer = _post(stack, path, body)
    assert status == 400, answer
    assert "stream" in str(answer["error"]).lower()
    assert _count_jobs(stack) == before


def test_stream_null_is_the_default_as_the_providers_take_it(stack: Stack) -> None:
    status, answer = _post(stack, "/v1/chat/completions", _body('"stream": null, "max_tokens": 4'))
    assert status == 200, answer
    assert answer["object"] == "chat.completion"
