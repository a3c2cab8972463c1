"""Batch ingestion: how fast ``POST /v1/files`` + ``POST /v1/batches`` take a large file, and the api's memory.

    .venv/bin/python ops/bench_batches.py [--lines 100000] [--line-bytes 2000]

Starts a stack (``ops.bench_gateway.Stack``: simulator, a worker, the scheduler, the api), writes a JSONL
file of ``--lines`` chat requests of about ``--line-bytes`` each (100,000 x 2 kB: ~200 MB) to disk,
uploads it with the official SDK, creates the batch (it answers at once, "validating"; every line is then
checked and queued in the batch lane in the background), follows it until the whole file is read, and
prints: the create call's latency, the time to the first line queued and admitted (from the store), the
time to read the whole file and lines per second, and the api process's peak resident memory (``VmHWM``)
before and after. One run; the numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import openai
from sqlalchemy import func, select

from ops.bench_gateway import Stack
from shared.db.models import Job
from shared.db.session import get_engine, session_scope


def write_file(path: Path, lines: int, line_bytes: int) -> int:
    filler = ("lorem ipsum dolor sit amet " * (line_bytes // 27 + 1))[:max(1, line_bytes - 200)]
    with path.open("w") as out:
        for i in range(lines):
            out.write(json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": {"model": "gpt-4o-mini", "max_tokens": 64,
                                           "messages": [{"role": "user", "content": f"{i}: summarise {filler}"}]}}))
            out.write("\n")
    return path.stat().st_size


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """The process's user + system CPU seconds so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def first_line(database_url: str, batch_id: str) -> tuple[float | None, float | None]:
    """When the batch's first job was written and first admitted (unix seconds), from the store."""
    with session_scope(get_engine(database_url), readonly=True) as db:
        created, admitted = db.execute(select(func.min(Job.created_at), func.min(Job.admitted_at))
                                       .where(Job.batch_id == batch_id)).one()
    return _unix(created), _unix(admitted)


def _unix(moment: datetime | None) -> float | None:
    return None if moment is None else (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--line-bytes", type=int, default=2000)
    args = parser.parse_args()
    stack = Stack(workers=1, concurrency=16)
    stack.env.update({"GATEWAY_FILES__DIR": str(stack.tmp / "files"), "GATEWAY_FILES__MAX_BYTES": str(2**30),
                      "GATEWAY_FILES__MAX_LINES": str(max(args.lines, 200_000))})
    key = stack.start()
    try:
        api_pid = stack.procs[stack.names.index("api")].pid
        path = stack.tmp / "batch.jsonl"
        size = write_file(path, args.lines, args.line_bytes)
        print(f"file: {args.lines} lines, {size / 1e6:.0f} MB; api peak RSS at start {peak_rss_mb(api_pid):.0f} MB")
        client = openai.OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0, timeout=3600)
        started = time.monotonic()
        with path.open("rb") as source:
            uploaded = client.files.create(file=("batch.jsonl", source), purpose="batch")
        upload_s = time.monotonic() - started
        print(f"upload: {upload_s:.1f} s ({size / 1e6 / upload_s:.0f} MB/s); "
              f"api peak RSS {peak_rss_mb(api_pid):.0f} MB")
        started = time.time()
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        print(f"create: answered in {(time.time() - started) * 1000:.0f} ms, status {batch.status}")
        cpu_before = cpu_s(api_pid)
        while (batch := client.batches.retrieve(batch.id)).status == "validating":
            time.sleep(1.0)
        cpu = cpu_s(api_pid) - cpu_before
        read_s = time.time() - started
        queued, admitted = first_line(stack.database_url, batch.id)
        counts = batch.request_counts
        print(f"first line queued after {(queued - started) * 1000:.0f} ms, admitted after "
              f"{(admitted - started) * 1000:.0f} ms" if queued and admitted else "no line queued")
        print(f"whole file read and queued: {read_s:.1f} s, {args.lines / read_s:,.0f} lines/s; "
              f"status {batch.status}, total {counts.total if counts else '?'}, refused "
              f"{counts.failed if counts else '?'}; api peak RSS {peak_rss_mb(api_pid):.0f} MB")
        print(f"api CPU while reading: {cpu:.1f} s, {cpu / args.lines * 1000:.2f} ms per line (what the load "
              "average does not change)")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
