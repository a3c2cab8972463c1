"""OpenAI's Files and Batches APIs through the real gateway with the official SDK: each line a job in the
batch lane, output and error files in OpenAI's line format with custom_id, bad lines as error records
while the rest run, cancel, tenant isolation, and clear errors for bad files."""

from __future__ import annotations

import io
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import openai
import pytest
from sqlalchemy import func, select, update

from api import batch_ingest
from api.gateway import Gateway
from cli.main import celery_dispatch
from shared.config import get_settings
from shared.db.models import Batch, Job, utcnow
from shared.db.session import session_scope
from tests.conftest import Stack, hold_leader_lease


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
    assert batch.status in ("validating", "in_progress", "completed")  # answered at once, the file read after
    done = _wait(client, batch.id, {"completed"})
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (9, 4, 5)
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
    _wait(client, batch.id, {"in_progress"})  # every line read (cancelled while validating: the next test)
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


class _Crash(BaseException):
    """The api process dying mid-file: nothing on the way catches it."""


def _reader(stack: Stack, tenant: str, file_id: str, monkeypatch: pytest.MonkeyPatch,
            on_renewal: Any) -> tuple[Gateway, Any, str]:
    """A batch created in this process, its reader run here (in chunks of 8, 16, ...) with ``on_renewal``
    called before each renewal of its lease: (the gateway, the caller, the batch id)."""
    gateway = Gateway(get_settings(), celery_dispatch(get_settings()))
    caller = gateway.auth.check(stack.keys[tenant], "tests")
    monkeypatch.setattr(batch_ingest, "FIRST_CHUNK", 8)
    started: list[tuple[Any, ...]] = []
    monkeypatch.setattr(gateway.batches.ingestion, "start", lambda *args: started.append(args))
    batch = gateway.batches.create(caller, {"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                            "completion_window": "24h"})
    assert batch["status"] == "validating" and len(started) == 1
    renew, renewals = gateway.batches.ingestion._renew, [0]

    def renewing(batch_id: str, lease: str, **values: Any) -> None:
        renewals[0] += 1
        on_renewal(renewals[0])
        renew(batch_id, lease, **values)

    monkeypatch.setattr(gateway.batches.ingestion, "_renew", renewing)
    return gateway, started[0], batch["id"]


def test_a_batch_whose_reader_died_is_read_again_by_a_running_api_without_repeats(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    client = _openai(stack, "umbrella")
    file_id = _upload(client, [_line(f"r-{i}") for i in range(40)] + ["not json"])

    def die(renewal: int) -> None:
        if renewal == 4:  # the lease taken, then a chunk or two queued (the tenant's queue holds 20)
            raise _Crash

    gateway, args, batch_id = _reader(stack, "umbrella", file_id, monkeypatch, die)
    with pytest.raises(_Crash):
        gateway.batches.ingestion.run(*args)
    with session_scope(gateway.engine) as db:
        assert 8 <= (db.scalar(select(func.count()).where(Job.batch_id == batch_id)) or 0) < 40
        assert db.get(Batch, batch_id).status == "validating"  # type: ignore[union-attr]
        db.execute(update(Batch).where(Batch.id == batch_id).values(ingested_at=utcnow() - timedelta(hours=1)))
    done = _wait(client, batch_id, {"completed"}, timeout=90)  # the stack's api sweeps and reads it again
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (41, 40, 1)
    output = client.files.content(done.output_file_id or "").text.splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in output) == sorted(f"r-{i}" for i in range(40))
    errors = client.files.content(done.error_file_id or "").text.splitlines()
    assert [json.loads(line)["error"]["code"] for line in errors] == ["invalid_json"]


def test_a_batch_cancelled_while_its_file_is_read_stops_reading(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    client = _openai(stack, "umbrella")
    file_id = _upload(client, [_line(f"c-{i}") for i in range(40)])
    holder: list[Any] = []

    def cancel(renewal: int) -> None:
        if renewal == 3:  # the lease taken, a chunk (8 lines) queued: the caller cancels
            gateway, caller, batch_id = holder
            assert gateway.batches.cancel(caller, batch_id)["status"] == "cancelling"

    gateway, args, batch_id = _reader(stack, "umbrella", file_id, monkeypatch, cancel)
    holder += [gateway, args[0], batch_id]
    gateway.batches.ingestion.run(*args)  # stops at its next chunk
    done = _wait(client, batch_id, {"cancelled"})
    assert done.request_counts is not None
    with session_scope(gateway.engine, readonly=True) as db:
        queued = db.scalar(select(func.count()).where(Job.batch_id == batch_id)) or 0
    assert 8 <= queued < 40 and done.request_counts.completed + done.request_counts.failed == queued


def test_lines_not_done_by_the_end_of_the_completion_window_end_expired(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    client = _openai(stack, "globex")
    file_id = _upload(client, [_line(f"e-{i}") for i in range(3)])
    gateway, args, batch_id = _reader(stack, "globex", file_id, monkeypatch, lambda renewal: None)
    ends = utcnow() + timedelta(seconds=3)  # a window of 3 s instead of 24 h
    with session_scope(gateway.engine) as db:
        db.execute(update(Batch).where(Batch.id == batch_id).values(expires_at=ends))
    with hold_leader_lease():  # nothing is admitted meanwhile: the lines wait in their queue
        gateway.batches.ingestion.run(*args)
        while utcnow() <= ends:
            time.sleep(0.2)
    done = _wait(client, batch_id, {"expired"})
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 0, 3)
    errors = _records(client, done.error_file_id)
    assert {record["error"]["code"] for record in errors.values()} == {"batch_expired"}
    assert sorted(errors) == ["e-0", "e-1", "e-2"]


def test_files_expire_as_their_expires_after_says(stack: Stack) -> None:
    client = _openai(stack)
    kept = client.files.create(file=("a.jsonl", io.BytesIO(_line("x").encode())), purpose="batch",
                               expires_after={"anchor": "created_at", "seconds": 7200})
    assert kept.expires_at == kept.created_at + 7200
    default = client.files.retrieve(_upload(client, [_line("y")]))
    assert default.expires_at == default.created_at + 30 * 86400  # files.expires_s: OpenAI's 30 days
    for bad in ({"anchor": "created_at", "seconds": 60}, {"anchor": "last_active_at", "seconds": 7200}):
        with pytest.raises(openai.BadRequestError) as err:
            client.files.create(file=("a.jsonl", io.BytesIO(b"{}")), purpose="batch", expires_after=bad)  # type: ignore[arg-type]
        assert err.value.param == "expires_after"
    batch = client.batches.create(input_file_id=kept.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  output_expires_after={"anchor": "created_at", "seconds": 3600})
    output = client.files.retrieve(_wait(client, batch.id, {"completed"}).output_file_id or "")
    assert output.expires_at == output.created_at + 3600
    with pytest.raises(openai.BadRequestError) as err:
        client.batches.create(input_file_id=kept.id, endpoint="/v1/chat/completions", completion_window="24h",
                              output_expires_after={"anchor": "created_at", "seconds": "soon"})  # type: ignore[typeddict-item]
    assert err.value.param == "output_expires_after"
