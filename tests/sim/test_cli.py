"""``python -m ops.sim`` with a YAML file: the ready line, the flags, the file's models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ops.sim.config import load_config
from shared.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
YAML = """
seed: 1
models:
  gpt-file:
    limits: {rpm: 7, tpm: 7000}
    output: {dist: fixed, tokens: 5}
faults:
  - {kind: error, status: 502, model: broken}
"""


def test_module_runs_with_flags_and_yaml(tmp_path):
    config = tmp_path / "sim.yaml"
    config.write_text(YAML)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.sim", "--host", "127.0.0.1", "--port", "0", "--rpm", "11", "--tpm", "1100",
         "--config", str(config)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("simulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        auth = {"authorization": "Bearer k"}
        body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 10}
        from_file = httpx.post(url + "/v1/chat/completions", json={**body, "model": "gpt-file"}, headers=auth)
        assert from_file.headers["x-ratelimit-limit-requests"] == "7"
        assert from_file.json()["usage"]["completion_tokens"] == 5
        default = httpx.post(url + "/v1/chat/completions", json={**body, "model": "other"}, headers=auth)
        assert default.headers["x-ratelimit-limit-tokens"] == "1100"
        broken = httpx.post(url + "/v1/chat/completions", json={**body, "model": "broken"}, headers=auth)
        assert broken.status_code == 502
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_bad_yaml_names_the_field(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("models:\n  m: {limits: {rpm: -1}}\n")
    with pytest.raises(ConfigError, match="rpm"):
        load_config(config)
