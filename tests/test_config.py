"""The config file: the example in the repo loads, mistakes name the field and the line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from cli import main as cli
from shared.config import Settings, check_provider_keys, get_settings, load_settings
from shared.errors import ConfigError
from shared.tenancy import resolve_lane

ROOT = Path(__file__).resolve().parent.parent


def test_the_example_config_in_the_repo_is_valid() -> None:
    s = load_settings(ROOT / "gateway.example.yaml")
    assert s.models["fast"] == ["gpt-4o-mini@openai-main", "claude-haiku@anthropic"]
    assert s.deployment("claude-haiku@anthropic").limits.otpm == 80000
    assert s.tenants["acme"].features["summarizer"].lane == "batch"
    assert resolve_lane(s, "acme", "summarizer", "interactive", "interactive") == "batch"
    assert (s.retention.job_content_days, s.retention.jobs_days) == (30, 400)


def test_no_file_runs_the_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GATEWAY_CONFIG", "GATEWAY_DATABASE_URL", "GATEWAY_REDIS_URL", "GATEWAY_KEY_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings(None)
    assert s.database_url.startswith("sqlite:///./var/")
    assert {p.base_url for p in s.providers.values()} == {"http://127.0.0.1:9100/v1", "http://127.0.0.1:9100"}
    assert set(s.tenants) == {"acme", "globex"}
    assert s.lanes["batch"].ceiling == 1.0 and s.lanes["interactive"].reserve == 0.3


def test_retention_keeps_rows_forever_and_content_a_month_unless_told(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("api: {port: 8000}\n")
    assert load_settings(path).retention.model_dump() == {"job_content_days": 30, "jobs_days": None,
                                                          "usage_days": 400}
    path.write_text("retention: {job_content_days: null, jobs_days: 90}\n")
    assert load_settings(path).retention.model_dump() == {"job_content_days": None, "jobs_days": 90,
                                                          "usage_days": 400}
    path.write_text("retention:\n  job_content_days: 0.5\n")  # inside the 24 h idempotency window
    with pytest.raises(ConfigError, match=rf"retention.job_content_days \({path}:2\): Input should be greater"):
        load_settings(path)


def test_the_default_providers_follow_the_simulator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    monkeypatch.setenv("GATEWAY_SIM__PORT", "9200")
    s = load_settings(None)
    assert {p.base_url for p in s.providers.values()} == {"http://127.0.0.1:9200/v1", "http://127.0.0.1:9200"}
    monkeypatch.delenv("GATEWAY_SIM__PORT")
    path = tmp_path / "g.yaml"
    path.write_text("sim: {host: 0.0.0.0, port: 9300}\n")  # listens everywhere, reached on loopback
    assert load_settings(path).providers["sim-anthropic"].base_url == "http://127.0.0.1:9300"
    path.write_text("sim: {host: '::1', port: 9300}\n")
    assert load_settings(path).providers["sim-openai"].base_url == "http://[::1]:9300/v1"
    path.write_text("sim: {port: 9300}\nproviders: {sim-openai: {kind: openai, base_url: 'http://10.0.0.5:9100/v1'},"
                    " sim-anthropic: {kind: anthropic, base_url: 'http://10.0.0.5:9100'}}\n")
    assert load_settings(path).providers["sim-openai"].base_url == "http://10.0.0.5:9100/v1"  # set: kept


def test_a_partial_lane_keeps_the_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("lanes:\n  batch: {ceiling: 0.5}\n")
    s = load_settings(path)
    assert s.lanes["batch"].ceiling == 0.5 and s.lanes["batch"].deadline_s == 86400


def test_errors_name_the_field_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("redis_url: redis://x\ndeployments:\n  - name: a\n    provider: sim-openai\n"
                    "    model: m\n    limits: {rpm: -1}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "deployments.0.limits.rpm" in str(err.value) and f"{path}:6" in str(err.value)


def test_unknown_references_and_fields_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("models: {fast: [nowhere]}\n")
    with pytest.raises(ConfigError, match="unknown deployment 'nowhere'"):
        load_settings(path)
    path.write_text("tenants: {acme: {wieght: 2}}\n")
    with pytest.raises(ConfigError, match="tenants.acme.wieght"):
        load_settings(path)


def test_environment_overrides_the_file_and_holds_the_secrets(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("api: {port: 8000}\n")
    monkeypatch.setenv("GATEWAY_API__PORT", "8123")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    s = load_settings(path)
    assert s.api.port == 8123
    example = load_settings(ROOT / "gateway.example.yaml")
    assert example.providers["openai-main"].api_key() == "sk-secret"
    assert "sk-secret" not in (ROOT / "gateway.example.yaml").read_text()


def test_settings_type_is_importable_for_tooling() -> None:
    assert Settings.model_json_schema()["title"] == "Settings"


def providers_file(tmp_path: Path, **providers: str) -> Path:
    """A config whose providers (name: base_url[|api_key_env]) back one deployment each."""
    lines = ["providers:"]
    for name, spec in providers.items():
        url, _, env = spec.partition("|")
        lines.append(f"  {name}: {{kind: openai, base_url: '{url}'" + (f", api_key_env: {env}}}" if env else "}"))
    lines.append("deployments:")
    lines += [f"  - {{name: d-{name}, provider: {name}, model: m, limits: {{rpm: 60}}}}" for name in providers]
    lines.append("models: {m: [" + ", ".join(f"d-{name}" for name in providers) + "]}")
    path = tmp_path / "providers.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_remote_provider_without_its_key_stops_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GW_TEST_UNSET_KEY", raising=False)
    monkeypatch.setenv("GW_TEST_EMPTY_KEY", "")
    monkeypatch.setenv("GW_TEST_KEY", "sk-real")
    s = load_settings(providers_file(
        tmp_path, nokey="https://api.openai.com/v1", unset="https://llm.example.com/v1|GW_TEST_UNSET_KEY",
        empty="http://10.0.0.7:8000/v1|GW_TEST_EMPTY_KEY", ok="https://api.openai.com/v1|GW_TEST_KEY"))
    problems = check_provider_keys(s)
    assert len(problems) == 3
    assert "provider 'nokey'" in problems[0] and "has no api_key_env" in problems[0]
    assert "provider 'unset'" in problems[1] and "GW_TEST_UNSET_KEY is unset or empty" in problems[1]
    assert "provider 'empty'" in problems[2] and "GW_TEST_EMPTY_KEY" in problems[2]


def test_a_provider_on_this_machine_without_a_key_is_only_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("GW_TEST_UNSET_KEY", raising=False)
    s = load_settings(providers_file(
        tmp_path, sim="http://127.0.0.1:9100/v1", vllm="http://127.8.0.1:8001/v1|GW_TEST_UNSET_KEY",
        named="http://localhost:8001/v1", v6="http://[::1]:8001/v1"))
    with caplog.at_level("WARNING", logger="gateway.config"):
        assert check_provider_keys(s) == []
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "provider 'sim'", "provider 'vllm'", "provider 'named'", "provider 'v6'"]
    assert "GW_TEST_UNSET_KEY" in caplog.records[1].getMessage()


def test_the_processes_that_call_providers_refuse_to_start_without_the_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant")
    monkeypatch.setenv("GATEWAY_CONFIG", str(ROOT / "gateway.example.yaml"))
    get_settings.cache_clear()
    try:
        with pytest.raises(typer.Exit):
            cli._require_provider_keys()
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert "refusing to start" in err and "'openai-main'" in err and "OPENAI_API_KEY" in err
    assert "'anthropic'" not in err and "'local-vllm'" not in err  # set; on this machine


def test_privacy_mistakes_name_the_field(tmp_path: Path) -> None:
    from shared.errors import ConfigError

    cases = {
        "privacy: {redaction: {emails: mask}}": "privacy.redaction.emails",
        "privacy: {redaction: {email: hide}}": "privacy.redaction.email",
        "privacy: {custom: [{name: ref, pattern: '(unclosed'}]}": "privacy.custom.0.pattern",
        "privacy: {custom: [{name: ref, pattern: 'x*'}]}": "privacy.custom.0.pattern",
        "privacy: {phone_region: XX}": "privacy.phone_region",
        "tenants: {acme: {features: {f: {privacy: {audit: {content: full}}}}}}":
            "tenants.acme.features.f.privacy.audit",
    }
    for text, field in cases.items():
        path = tmp_path / "gateway.yaml"
        path.write_text(text + "\n")
        with pytest.raises(ConfigError) as caught:
            load_settings(path)
        assert field in caught.value.message, caught.value.message


def test_every_problem_of_the_whole_is_reported_at_once_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(
        "deployments:\n"
        "  - {name: a, provider: nowhere, model: m, limits: {rpm: 10}}\n"
        "  - {name: b, provider: sim-openai, model: m}\n"
        "models:\n  fast: [a, ghost]\n"
        "lanes:\n  interactive: {reserve: 1.0}\n  batch: {reserve: 0.2}\n"
        "tenants:\n  acme: {soft_tpm: 500, hard_tpm: 100}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = err.value.message
    for expected in (f"deployments.0.provider ({path}:2): unknown provider 'nowhere'",
                     f"models.fast.1 ({path}:5): unknown deployment 'ghost'",
                     f"deployments.1.limits ({path}:3): b has no limits",
                     f"tenants.acme.soft_tpm ({path}:10): 500 is above hard_tpm (100)",
                     f"lanes.interactive.reserve ({path}:7): 1.0 leaves the standard lane nothing"):
        assert expected in message, message
    assert "Traceback" not in message


def test_a_reserve_on_another_lane_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("lanes:\n  batch: {reserve: 0.2}\n")
    with pytest.raises(ConfigError, match=r"lanes.batch.reserve .*only the interactive lane has a reserve"):
        load_settings(path)


def test_an_override_from_the_environment_is_blamed_on_the_variable(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("api: {port: 8000}\ntenants:\n  acme: {hard_tpm: 100}\n")
    monkeypatch.setenv("GATEWAY_API__PORT", "eighty")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "api.port (from the environment variable GATEWAY_API__PORT)" in err.value.message
    assert f"{path}:1" not in err.value.message
    monkeypatch.delenv("GATEWAY_API__PORT")
    monkeypatch.setenv("GATEWAY_TENANTS", '{"acme": {"soft_tpm": 900, "hard_tpm": 100}}')
    with pytest.raises(ConfigError, match=r"tenants.acme.soft_tpm \(from the environment variable GATEWAY_TENANTS\)"):
        load_settings(path)
    monkeypatch.setenv("GATEWAY_TENANTS", "{not json")
    with pytest.raises(ConfigError, match=r"tenants \(from the environment variable GATEWAY_TENANTS\): not valid JSON"):
        load_settings(path)


def test_the_cli_says_what_is_wrong_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("tenants:\n  acme: {soft_tpm: 500, hard_tpm: 100}\n")
    for command in (["scheduler", "--config", str(path)], ["tenants", "list"]):
        done = subprocess.run([sys.executable, "-m", "cli", *command], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "GATEWAY_CONFIG": str(path)}, timeout=60)
        assert done.returncode in (1, 2), done.stderr
        assert "tenants.acme.soft_tpm" in done.stderr and "Traceback" not in done.stderr + done.stdout
    version = subprocess.run([sys.executable, "-m", "cli", "--version"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("gateway ")
    worker = subprocess.run([sys.executable, "-m", "cli", "worker", "-c", "16"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert worker.returncode == 2 and "config file 16 does not exist" in worker.stderr  # -c is --config only


def test_cache_settings_mistakes_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    tenants = "tenants: {acme: {features: {faq: {}}}}\n"
    path.write_text(tenants + "cache:\n  features:\n    acme: {faq: {semantic: true, threshold: 1.5}}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "cache.features.acme.faq.threshold" in str(err.value) and f"{path}:4" in str(err.value)
    path.write_text(tenants + "cache: {features: {acme: {fqa: {semantic: true}}}}\n")
    with pytest.raises(ConfigError, match=r"cache.features.acme.fqa: unknown feature 'fqa' of tenant 'acme'"):
        load_settings(path)
    path.write_text(tenants + "cache: {features: {initech: {faq: {semantic: true}}}}\n")
    with pytest.raises(ConfigError, match=r"cache.features.initech: unknown tenant"):
        load_settings(path)
    path.write_text("cache: {semantic_threshold: -0.1, ttl_s: 0}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "cache.semantic_threshold" in str(err.value) and "cache.ttl_s" in str(err.value)


def test_a_feature_opts_in_to_the_semantic_cache(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("tenants: {acme: {features: {FAQ: {}}}}\n"
                    "cache: {ttl_s: 60, features: {acme: {FAQ: {semantic: true, ttl_s: 5}}}}\n")
    cache = load_settings(path).cache
    faq = cache.for_feature("acme", "faq")
    assert faq.semantic and cache.ttl(faq) == 5 and cache.threshold(faq) == cache.semantic_threshold
    other = cache.for_feature("acme", "default")
    assert not other.semantic and other.exact and cache.ttl(other) == 60
def test_budget_and_billing_mistakes_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("tenants:\n  acme:\n    budget: {daily_usd: -3}\n")
    with pytest.raises(ConfigError, match=rf"tenants.acme.budget.daily_usd \({path}:3\)"):
        load_settings(path)
    path.write_text("billing: {timezone: Mars/Olympus_Mons}\n")
    with pytest.raises(ConfigError, match="billing.timezone.*unknown time zone"):
        load_settings(path)
    path.write_text("billing: {alert_at: [0.5, 1.5]}\n")
    with pytest.raises(ConfigError, match="billing.alert_at"):
        load_settings(path)


def test_the_benchmarks_and_the_fuzzers_configs_load(tmp_path: Path) -> None:
    """ops/bench_gateway.py and ops/fuzz_api.py derive their configs from the suite's; a derived config
    that no longer loads fails their runs before they measure anything."""
    from ops.bench_gateway import bench_config
    from ops.fuzz_api import fuzz_config

    for make in (bench_config, fuzz_config):
        path = tmp_path / f"{make.__name__}.yaml"
        path.write_text(make(5555))
        assert load_settings(path).deployments


def test_a_headroom_range_upside_down_is_refused_and_named(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("deployments:\n"
                    "  - {name: a, provider: sim-openai, model: m, limits: {tpm: 1000},\n"
                    "     headroom_min: 0.99, headroom_max: 0.9}\n"
                    "models:\n  fast: [a]\n")
    with pytest.raises(ConfigError, match=r"deployments.0.headroom_min .*0.99 is above headroom_max \(0.9\)"):
        load_settings(path)


def test_the_streaming_benchmarks_simulator_config_loads() -> None:
    """ops/bench_stream.py writes its simulator's config (a latency for every model); one the simulator
    refuses fails the run before it measures anything."""
    import yaml

    from ops.bench_stream import StreamingStack
    from ops.sim.config import SimulatorConfig

    stack = StreamingStack(300, 10)
    args = stack.sim_args()
    config = SimulatorConfig.model_validate(yaml.safe_load(Path(args[args.index("--config") + 1]).read_text()))
    assert config.defaults.openai.latency.ttft_ms == 300 and config.defaults.anthropic.latency.per_token_ms == 10
