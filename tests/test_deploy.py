"""The docker-compose stack: generated configs without drift, compose accepted and well-formed."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import load_settings
from bridge.generate import ALERTMANAGER_PATH, DATASOURCES_PATH, render_all
from bridge.generate.check import run_checks
from bridge.host.tools import find_tool

CONFIG = "deploy/alertbridge.yml"
HA_CONFIG = "deploy/ha/alertbridge.yml"
#: The compose profile `ha`'s services.
HA = {"postgres", "bridge-1", "bridge-2", "alertmanager-1", "alertmanager-2", "prometheus-ha",
      "grafana-ha"}  # fmt: skip


def compose(repo_root: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    return loaded


@pytest.mark.parametrize("config", [CONFIG, HA_CONFIG])
def test_deploy_tree_equals_generator_output(repo_root: Path, config: str) -> None:
    """deploy/ (and deploy/ha/) hold exactly what `rules generate` makes from their
    alertbridge.yml."""
    artifacts = render_all(load_settings(repo_root / config, {}))
    tree = (repo_root / config).parent
    for rel, text in artifacts.files.items():
        assert (tree / rel).read_text() == text, f"{tree / rel} drifted"


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
@pytest.mark.parametrize("config", [CONFIG, HA_CONFIG])
def test_deploy_tree_passes_promtool_and_amtool(repo_root: Path, config: str) -> None:
    """The checked-in deploy/ trees pass every `rules check` check."""
    settings = load_settings(repo_root / config, {})
    tree = (repo_root / config).parent
    failed = [r.name for r in run_checks(settings, tree) if not r.ok]
    assert failed == []


def compose_config(repo_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_tool("docker-compose"), "-f", str(repo_root / "docker-compose.yml"), *args,
         "config"],
        capture_output=True, text=True, check=False, cwd=repo_root,
    )  # fmt: skip


@pytest.mark.parametrize("profile", [(), ("--profile", "ha")])
def test_docker_compose_config_accepts_the_file(repo_root: Path, profile: tuple[str, ...]) -> None:
    """The Debian docker-compose validates the file, with and without the profile `ha` (no
    engine needed); what it resolves starts the four services by default and the profile's
    only with it (docker-compose 1.29's `config` lists both: the profiles say which)."""
    proc = compose_config(repo_root, *profile)
    assert (proc.returncode, proc.stderr) == (0, "")
    services = yaml.safe_load(proc.stdout)["services"]
    by_profile = {n: tuple(s.get("profiles", ())) for n, s in services.items()}
    assert {n for n, p in by_profile.items() if not p} == {
        "bridge", "prometheus", "alertmanager", "grafana",
    }  # fmt: skip
    assert {n for n, p in by_profile.items() if p} == HA
    assert {p for p in by_profile.values() if p} == {("ha",)}


def assert_shaped(
    repo_root: Path, doc: dict[str, Any], name: str, service: dict[str, Any], tree: str
) -> None:
    """A healthcheck, ports on loopback only, files mounted read-only from `tree`, named
    volumes declared."""
    assert "healthcheck" in service, name
    for port in service.get("ports", []):
        assert port.startswith("127.0.0.1:"), (name, port)
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert source.startswith(tree), (name, volume)
            assert (repo_root / source).exists(), source
            assert volume.endswith(":ro"), volume
        else:
            assert source in doc["volumes"], source


def test_compose_is_production_shaped(repo_root: Path) -> None:
    """Four services with healthchecks, loopback-only ports, named volumes, file secrets,
    tokens given as *_FILE (never on a command line), generated configs mounted read-only."""
    doc = compose(repo_root)
    services = {n: s for n, s in doc["services"].items() if "profiles" not in s}
    assert set(services) == {"bridge", "prometheus", "alertmanager", "grafana"}
    for name, service in services.items():
        assert_shaped(repo_root, doc, name, service, "./")
    bridge = services["bridge"]
    assert bridge["environment"] == {
        "ALERTBRIDGE_WEBHOOK_TOKEN_FILE": "/run/secrets/webhook_token",
        "ALERTBRIDGE_API_TOKEN_FILE": "/run/secrets/api_token",
    }
    assert "token" not in " ".join(bridge["command"]).lower()
    assert set(doc["secrets"]) == {
        "webhook_token", "api_token", "grafana_admin_password", "postgres_password",
    }  # fmt: skip
    assert services["alertmanager"]["secrets"] == ["webhook_token"]


def test_compose_profile_ha_is_two_replicas_on_postgresql(repo_root: Path) -> None:
    """The profile `ha`: two bridges on one PostgreSQL (its password a file secret, never in
    the URL or a command line), two gossiping Alertmanagers whose generated receiver notifies
    both bridges, a Prometheus scraping both and alerting both; its configs generated from
    deploy/ha/alertbridge.yml (test above) and mounted read-only; loopback ports only."""
    doc = compose(repo_root)
    services = doc["services"]
    assert {n for n, s in services.items() if s.get("profiles") == ["ha"]} == HA
    for name in HA:
        assert_shaped(repo_root, doc, name, services[name], "./deploy/ha")
    ports = [p for n in HA for p in services[n].get("ports", [])]
    published = [p.split(":")[1] for p in ports + services["bridge"]["ports"]]
    assert len(set(published)) == len(published)  # the two pipelines run side by side
    url = "postgresql://alertbridge@postgres:5432/alertbridge"
    for name in ("bridge-1", "bridge-2"):
        bridge = services[name]
        command = bridge["command"]
        assert command[command.index("--db") + 1] == url
        assert bridge["environment"]["ALERTBRIDGE_STORE_PASSWORD_FILE"] == (
            "/run/secrets/postgres_password"
        )
        assert "postgres_password" in bridge["secrets"]
        assert bridge["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert (
            "./deploy/ha/alertbridge.yml:/etc/alertbridge/alertbridge.yml:ro" in (bridge["volumes"])
        )
    # One keys file, in a volume both replicas mount.
    keys = {services[n]["environment"]["ALERTBRIDGE_KEYS_FILE"] for n in ("bridge-1", "bridge-2")}
    assert keys == {"/data/alertbridge.keys.json"}
    assert services["bridge-1"]["volumes"] == services["bridge-2"]["volumes"]
    pg = services["postgres"]
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "password" not in " ".join(map(str, pg["environment"].values())).replace(
        "postgres_password", ""
    )
    # Each Alertmanager gossips with the other, and has its own storage.
    for me, other in (("alertmanager-1", "alertmanager-2"), ("alertmanager-2", "alertmanager-1")):
        command = services[me]["command"]
        assert f"--cluster.peer={other}:9094" in command
        assert "--config.file=/etc/alertmanager/alertmanager.yml" in command
    assert services["alertmanager-1"]["volumes"][1] != services["alertmanager-2"]["volumes"][1]
    settings = load_settings(repo_root / HA_CONFIG, {})
    files = render_all(settings).files
    hooks = yaml.safe_load(files[ALERTMANAGER_PATH])["receivers"][0]["webhook_configs"]
    assert [h["url"] for h in hooks] == [
        f"http://{n}:9470/api/v1/alertmanager" for n in ("bridge-1", "bridge-2")
    ]
    prom = yaml.safe_load(files["prometheus/prometheus.yml"])
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == [
        "bridge-1:9470", "bridge-2:9470",
    ]  # fmt: skip
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager-1:9093", "alertmanager-2:9093",
    ]  # fmt: skip
    assert settings.alertmanager.urls == (
        "http://alertmanager-1:9093",
        "http://alertmanager-2:9093",
    )


def test_dockerfile_builds_from_the_project(repo_root: Path) -> None:
    """The Dockerfile copies what pip needs and runs the console script as a non-root user."""
    text = (repo_root / "Dockerfile").read_text()
    for line in ("COPY pyproject.toml README.md ./", "COPY bridge ./bridge", "USER alertbridge",
                 'ENTRYPOINT ["alertbridge"]', "pip install --no-cache-dir ."):  # fmt: skip
        assert line in text
    assert 'alertbridge = "bridge.cli:main"' in (repo_root / "pyproject.toml").read_text()
