"""The production compose file and what it provisions: valid against the compose specification (the
compose_spec parser, strict about every key), secrets only from .env, healthchecks and resource limits,
Flower behind a login; Prometheus rules and the Grafana dashboard parse as PromQL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from compose_spec import PyOptions

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
SECRET = re.compile(r"PASSWORD|_KEY$|BASIC_AUTH")
GATEWAY_SERVICES = ("migrate", "sim", "api", "scheduler", "worker", "flower")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    text = COMPOSE.read_text()
    parsed = PyOptions(apply_merge=True).from_yaml(text)  # raises on anything the specification does not allow
    parsed.validate()  # every network, volume, config and secret a service uses is defined
    return parsed.to_dict()


def test_the_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"redis", "postgres", *GATEWAY_SERVICES, "prometheus", "grafana"}
    with pytest.raises(ValueError):  # the parser is strict: a misspelt key is refused
        PyOptions(apply_merge=True).from_yaml(COMPOSE.read_text().replace("restart: unless-stopped", "restrt: x", 1))


def test_no_password_or_key_is_written_in_the_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        for variable, value in env.items():
            if SECRET.search(variable):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), f"{name}.{variable} = {value!r}"
        assert "gateway:gateway@" not in str(env.get("GATEWAY_DATABASE_URL", ""))
    required = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE.read_text()))
    listed = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert required <= listed, f"not in .env.example: {required - listed}"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_every_gateway_process_gets_the_operators_key_and_flower_a_login(compose: dict[str, Any]) -> None:
    for name in GATEWAY_SERVICES:
        assert compose["services"][name]["environment"]["GATEWAY_ADMIN_KEY"].startswith("${GATEWAY_ADMIN_KEY:?")
    flower = compose["services"]["flower"]
    assert flower["command"][:2] == ["gateway", "flower"]  # refuses to start without FLOWER_BASIC_AUTH
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")


def test_healthchecks_and_resource_limits(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "python", "-m", "cli.health", "worker"]
    assert services["scheduler"]["healthcheck"]["test"] == ["CMD", "python", "-m", "cli.health", "scheduler"]
    assert "/healthcheck" in " ".join(services["flower"]["healthcheck"]["test"])
    for name, service in services.items():
        if name != "migrate" and service.get("restart") != "no":
            assert service.get("healthcheck"), name
        limits = service["deploy"]["resources"]["limits"]
        assert limits["cpus"] and limits["memory"], name


def test_the_compose_gateway_config_loads() -> None:
    from shared.config import load_settings

    assert load_settings(ROOT / "ops" / "compose" / "gateway.compose.yaml").api.host == "0.0.0.0"


def _expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load((ROOT / "ops" / "prometheus" / "alerts.yml").read_text())
    out = [(rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((ROOT / "ops" / "grafana" / "dashboards" / "gateway.json").read_text())
    for panel in dashboard["panels"]:
        out += [(panel["title"], target["expr"].replace("$tenant", ".*")) for target in panel.get("targets", [])]
    return out


@pytest.mark.parametrize(("name", "expr"), _expressions())
def test_alert_rules_and_dashboard_queries_are_promql(name: str, expr: str) -> None:
    promql_parser.parse(expr)


def test_the_alerts_cover_what_operators_are_paged_for() -> None:
    rules = yaml.safe_load((ROOT / "ops" / "prometheus" / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {"GatewayProviderRateLimited", "GatewayBreakerOpen", "GatewayQueueAgeNearDeadline",
            "GatewayDeploymentSaturated", "GatewayRetryBudgetExhausted", "GatewayWorkersDown",
            "GatewaySchedulerDown"} <= names
    prometheus = yaml.safe_load((ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
    job = prometheus["scrape_configs"][0]
    assert job["authorization"]["credentials_file"] == "/run/secrets/gateway_admin_key"


def test_the_committed_dashboard_is_the_generators_output() -> None:
    done = subprocess.run([sys.executable, "-m", "ops.grafana.dashboard", "--check"], cwd=ROOT)
    assert done.returncode == 0, "run: python -m ops.grafana.dashboard"
