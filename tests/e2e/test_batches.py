"""OpenAI's Files and Batches APIs through the real gateway with the official SDK: each line a job in the
batch lane, output and error files in OpenAI's line format with custom_id, bad lines as error records
while the rest run, cancel, tenant isolation, and clear errors for bad files."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import openai
import pytest

from tests.conftest import Stack


def _openai(stack: Stack, tenant: str = "acme") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys[tenant], max_retries=0)


def _line(custom_id: str, model: str = "capture-gpt", url: str = "/v1/chat/completions", **body: Any) -> str:
    ask = f"{custom_id} {uuid.uuid4()}"
    request = {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": ask}], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": request})


def _upload(client: openai.OpenAI, lines: list[str]) -> str:
    return client.files.create(file=("batch.jsonl", io.BytesIO("\n".join(lines).encode())), purpose="batch").id


def _wait(client: openai.OpenAI, batch_id: str, statuses: set[str], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while (batch := client.batches.retrieve(batch_id)).status not in statuses:
        assert time.monotonic() < deadline, f"batch {batch_id} stayed {batch.status}"
        time.sleep(0.2)
    return batch


def _records(client: openai.OpenAI, file_id: str | None) -> dict[str | None, dict[str, Any]]:
    assert file_id is not None
    lines = client.files.content(file_id).text.splitlines()
    return {record["custom_id"]: record for record in map(json.loads, lines)}


def test_a_batch_runs_every_good_line_and_reports_the_bad_ones(stack: Stack) -> None:
    client = _openai(stack)
    good = [_line(f"ok-{i}") for i in range(4)]
    bad = ["not json at all", _line("ok-0"), _line("wrong-url", url="/v1/embeddings"),
           _line("no-model", model="no-such-model"), _line("bad-body", temperature=9)]
    file_id = _upload(client, good + bad)
    assert client.files.retrieve(file_id).purpose == "batch"
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"run": "nightly"})
    assert batch.request_counts is not None and batch.request_counts.total == 9
    done = _wait(client, batch.id, {"completed"})
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (4, 5)
    assert done.metadata == {"run": "nightly"}
    output = _records(client, done.output_file_id)
    assert sorted(output) == [f"ok-{i}" for i in range(4)]
    first = output["ok-0"]["response"]
    assert first["status_code"] == 200 and first["body"]["choices"][0]["message"]["content"]
    job = stack.client().get(f"/v1/jobs/{first['request_id']}").json()
    assert job["priority"] == "batch" and job["status"] == "succeeded"  # the batch lane, as a job
    errors = _records(client, done.error_file_id)
    codes = {custom_id: record["error"]["code"] for custom_id, record in errors.items()}
    assert codes == {None: "invalid_json", "ok-0": "duplicate_custom_id", "wrong-url": "invalid_url",
                     "no-model": "model_not_found", "bad-body": "invalid_request"}
    assert "line 6" in errors["ok-0"]["error"]["message"]  # every record names its line


def test_cancel_stops_the_lines_not_yet_sent(stack: Stack) -> None:
    client = _openai(stack, "hooli")  # a tenant of its own: the cancelled lines hold up no one else's queue
    # batch-slow's 2,000 TPM admits one such line at a time: the others wait in the queue
    lines = [_line(f"slow-{i}", model="batch-slow", max_tokens=1200) for i in range(5)]
    batch = client.batches.create(input_file_id=_upload(client, lines), endpoint="/v1/chat/completions",
                                  completion_window="24h")
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = _wait(client, batch.id, {"cancelled"})
    errors = _records(client, done.error_file_id)
    assert any(record["error"]["code"] == "batch_cancelled" for record in errors.values())
    assert done.request_counts is not None
    assert done.request_counts.completed + done.request_counts.failed == 5


def test_files_and_batches_are_the_tenants_own(stack: Stack) -> None:
    acme, globex = _openai(stack), _openai(stack, "globex")
    file_id = _upload(acme, [_line("mine")])
    batch = acme.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        globex.files.retrieve(file_id)
    with pytest.raises(openai.NotFoundError):
        globex.files.content(file_id)
    with pytest.raises(openai.NotFoundError):
        globex.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        globex.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert file_id not in {f.id for f in globex.files.list()}
    assert batch.id in {b.id for b in acme.batches.list()}
    assert batch.id not in {b.id for b in globex.batches.list()}
    assert acme.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        acme.files.retrieve(file_id)


def test_bad_files_and_batch_requests_get_clear_errors(stack: Stack) -> None:
    client = _openai(stack)
    with pytest.raises(openai.APIStatusError) as err:  # over files.max_bytes (1 MiB in the test config)
        client.files.create(file=("big.jsonl", io.BytesIO(b"x" * (2 * 1024 * 1024))), purpose="batch")
    assert err.value.status_code == 413
    with pytest.raises(openai.BadRequestError) as bad:
        client.files.create(file=("a.jsonl", io.BytesIO(b"{}")), purpose="fine-tune")
    assert bad.value.param == "purpose"
    file_id = _upload(client, [_line("x")])
    with pytest.raises(openai.BadRequestError) as bad:
        client.batches.create(input_file_id=file_id, endpoint="/v1/moderations", completion_window="24h")  # type: ignore[arg-type]
    assert bad.value.param == "endpoint"
    with pytest.raises(openai.BadRequestError) as bad:
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="1h")  # type: ignore[arg-type]
    assert bad.value.param == "completion_window"
    too_many = _upload(client, [_line(f"n-{i}") for i in range(51)])  # over files.max_lines (50)
    with pytest.raises(openai.BadRequestError) as bad:
        client.batches.create(input_file_id=too_many, endpoint="/v1/chat/completions", completion_window="24h")
    assert bad.value.param == "input_file_id" and "50 lines" in bad.value.message
    empty = _upload(client, ["", ""])
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=empty, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-" + "0" * 32, endpoint="/v1/chat/completions",
                              completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("../../etc/passwd")
