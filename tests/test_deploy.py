"""The docker-compose stack: generated configs without drift, compose accepted and well-formed."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import load_settings
from bridge.core.tools import find_tool
from bridge.generate import ALERTMANAGER_PATH, DATASOURCES_PATH, render_all
from bridge.generate.check import run_checks

CONFIG = "deploy/alertbridge.yml"


def compose(repo_root: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    return loaded


def test_deploy_tree_equals_generator_output(repo_root: Path) -> None:
    """deploy/ holds exactly what `rules generate` makes from deploy/alertbridge.yml."""
    artifacts = render_all(load_settings(repo_root / CONFIG, {}))
    for rel, text in artifacts.files.items():
        assert (repo_root / "deploy" / rel).read_text() == text, f"deploy/{rel} drifted"


def test_deploy_configs_use_service_names(repo_root: Path) -> None:
    """Inside the stack everything is reached by service name, the token through the secret."""
    files = render_all(load_settings(repo_root / CONFIG, {})).files
    am = yaml.safe_load(files[ALERTMANAGER_PATH])
    (hook,) = am["receivers"][0]["webhook_configs"]
    assert hook["url"] == "http://bridge:9470/api/v1/alertmanager"
    assert hook["http_config"]["authorization"]["credentials_file"] == "/run/secrets/webhook_token"
    urls = [s["url"] for s in yaml.safe_load(files[DATASOURCES_PATH])["datasources"]]
    assert urls == ["http://prometheus:9090", "http://alertmanager:9093"]


@pytest.mark.e2e
def test_deploy_tree_passes_promtool_and_amtool(repo_root: Path) -> None:
    """The checked-in deploy/ tree passes every `rules check` check."""
    settings = load_settings(repo_root / CONFIG, {})
    failed = [r.name for r in run_checks(settings, repo_root / "deploy") if not r.ok]
    assert failed == []


def test_docker_compose_config_accepts_the_file(repo_root: Path) -> None:
    """The Debian docker-compose validates the file (no engine needed)."""
    proc = subprocess.run(
        [find_tool("docker-compose"), "-f", str(repo_root / "docker-compose.yml"), "config", "-q"],
        capture_output=True, text=True, check=False, cwd=repo_root,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, "")


def test_compose_is_production_shaped(repo_root: Path) -> None:
    """Four services with healthchecks, loopback-only ports, named volumes, file secrets,
    tokens given as *_FILE (never on a command line), generated configs mounted read-only."""
    doc = compose(repo_root)
    services = doc["services"]
    assert set(services) == {"bridge", "prometheus", "alertmanager", "grafana"}
    for name, service in services.items():
        assert "healthcheck" in service, name
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (repo_root / source).exists(), source
                assert volume.endswith(":ro"), volume
            else:
                assert source in doc["volumes"], source
    bridge = services["bridge"]
    assert bridge["environment"] == {
        "ALERTBRIDGE_WEBHOOK_TOKEN_FILE": "/run/secrets/webhook_token",
        "ALERTBRIDGE_API_TOKEN_FILE": "/run/secrets/api_token",
    }
    assert "token" not in " ".join(bridge["command"]).lower()
    assert set(doc["secrets"]) == {"webhook_token", "api_token", "grafana_admin_password"}
    assert services["alertmanager"]["secrets"] == ["webhook_token"]


def test_dockerfile_builds_from_the_project(repo_root: Path) -> None:
    """The Dockerfile copies what pip needs and runs the console script as a non-root user."""
    text = (repo_root / "Dockerfile").read_text()
    for line in ("COPY pyproject.toml README.md ./", "COPY bridge ./bridge", "USER alertbridge",
                 'ENTRYPOINT ["alertbridge"]', "pip install --no-cache-dir ."):  # fmt: skip
        assert line in text
    assert 'alertbridge = "bridge.cli:main"' in (repo_root / "pyproject.toml").read_text()
