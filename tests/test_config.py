"""Settings from YAML, env and flags; secrets that never print."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.config import Secret, load_settings
from bridge.core.errors import ConfigError
from bridge.core.model import Severity


def test_defaults_without_file() -> None:
    """No file and no env: the built-in defaults."""
    settings = load_settings(None, {})
    assert settings.namespace == "telemetry"
    assert len(settings.rules) == 10
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 9470)
    assert settings.server.webhook_token is None


def test_file_env_and_flags_layer(write_config: Any) -> None:
    """File values, then ALERTBRIDGE_* env, then flags, each overriding the one before."""
    path = write_config(
        """
namespace: shop
server: {host: 127.0.0.2, port: 9000, db: file.db}
prometheus: {scrape_interval: 5s, url: "http://127.0.0.1:9090"}
alertmanager:
  group_interval: 1m
  receivers:
    - {name: ops, type: slack, severities: [critical, error], config: {channel: "#ops"}}
rules:
  - {name: high_cpu, threshold: 90}
"""
    )
    env = {"ALERTBRIDGE_PORT": "9100", "ALERTBRIDGE_DB": "env.db"}
    settings = load_settings(path, env, db="flag.db", host=None)
    assert settings.namespace == "shop"
    assert settings.server.host == "127.0.0.2"
    assert settings.server.port == 9100
    assert settings.server.db == "flag.db"
    assert settings.prometheus.scrape_interval == 5
    assert settings.alertmanager.group_interval == 60
    (receiver,) = settings.alertmanager.receivers
    assert receiver.severities == (Severity.CRITICAL, Severity.ERROR)
    high = settings.rules.get("high_cpu")
    assert high is not None
    assert high.threshold == 90
    assert settings.source == str(path)


def test_config_path_from_env(write_config: Any) -> None:
    """ALERTBRIDGE_CONFIG names the file when no path is given."""
    path = write_config("namespace: fromenv\n")
    assert load_settings(None, {"ALERTBRIDGE_CONFIG": str(path)}).namespace == "fromenv"


def test_secrets_from_env_and_file(tmp_path: Path) -> None:
    """Tokens come from env or a *_FILE, and never show in repr."""
    token_file = tmp_path / "api-token"
    token_file.write_text("file-secret\n", encoding="utf-8")
    env = {"ALERTBRIDGE_WEBHOOK_TOKEN": "env-secret", "ALERTBRIDGE_API_TOKEN_FILE": str(token_file)}
    settings = load_settings(None, env)
    assert settings.server.webhook_token == Secret("env-secret")
    assert settings.server.api_token is not None
    assert settings.server.api_token.value == "file-secret"
    text = repr(settings) + str(settings.server.api_token)
    assert "env-secret" not in text
    assert "file-secret" not in text


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("namespace: [", "yaml", ""),
        ("- 1\n", "file", "top level must be a mapping"),
        ("colour: blue\n", "colour", "unknown setting"),
        ("namespace: bad-name\n", "namespace", "must match"),
        ("server: 5\n", "server", "must be a mapping"),
        ("server: {port: 0}\n", "server.port", "positive integer"),
        ("server: {port: 70000}\n", "server.port", "1..65535"),
        ("server: {port: '80'}\n", "server.port", "positive integer"),
        ("server: {webhook_token: abc}\n", "server.webhook_token", "unknown setting"),
        ("server: {host: ''}\n", "server.host", "non-empty string"),
        ("prometheus: {scrape_interval: soon}\n", "prometheus.scrape_interval", "duration"),
        ("alertmanager: {receivers: {}}\n", "alertmanager.receivers", "must be a list"),
        (
            "alertmanager: {receivers: [{name: a b, type: slack}]}\n",
            "alertmanager.receivers[0].name",
            "letters",
        ),
        (
            "alertmanager: {receivers: [{name: alertbridge, type: slack}]}\n",
            "alertmanager.receivers[0].name",
            "defined twice",
        ),
        (
            "alertmanager: {receivers: [{name: t, type: teams}]}\n",
            "alertmanager.receivers[0].type",
            "must be one of",
        ),
        (
            "alertmanager: {receivers: [{name: t, type: slack, severities: [loud]}]}\n",
            "alertmanager.receivers[0].severities",
            "unknown severity",
        ),
        (
            "alertmanager: {receivers: [{name: t, type: slack, config: 1}]}\n",
            "alertmanager.receivers[0].config",
            "must be a mapping",
        ),
        (
            "alertmanager: {receivers: [{name: t, type: slack, url: x}]}\n",
            "alertmanager.receivers[0].url",
            "unknown setting",
        ),
        ("rules: [{name: high_cpu, threshold: .nan}]\n", "rules.high_cpu.threshold", "finite"),
        (
            "alertmanager: {webhook_url: 'http://a/x', webhook_urls: ['http://b/x']}\n",
            "alertmanager.webhook_urls",
            "not both",
        ),
        (
            "alertmanager: {webhook_urls: ['http://a/x', 'bridge-2:9470/x']}\n",
            "alertmanager.webhook_urls[1]",
            "must be http(s)",
        ),
        (
            "alertmanager: {webhook_urls: ['http://a/x', 'http://a/x']}\n",
            "alertmanager.webhook_urls",
            "listed twice",
        ),
        ("alertmanager: {webhook_urls: 'http://a/x'}\n", "alertmanager.webhook_urls", "a list"),
        ("server: {stream_priority: low}\n", "server.stream_priority", "one of idle, normal"),
    ],
)
def test_config_errors_name_file_and_key(
    write_config: Any, text: str, key: str, fragment: str
) -> None:
    """Each bad setting raises ConfigError naming the file and the key."""
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, {})
    assert info.value.source == str(path)
    assert info.value.key == key
    assert fragment in info.value.reason


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is reported, not a traceback."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yml", {})


def test_bad_env_values(tmp_path: Path) -> None:
    """A non-numeric port in env and an unreadable or empty token file are named errors."""
    with pytest.raises(ConfigError, match="ALERTBRIDGE_PORT: port"):
        load_settings(None, {"ALERTBRIDGE_PORT": "http"})
    with pytest.raises(ConfigError, match="ALERTBRIDGE_API_TOKEN_FILE: file: cannot read"):
        load_settings(None, {"ALERTBRIDGE_API_TOKEN_FILE": str(tmp_path / "nope")})
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is empty"):
        load_settings(None, {"ALERTBRIDGE_WEBHOOK_TOKEN_FILE": str(empty)})


def test_limits_and_server_hardening_settings(write_config: Any) -> None:
    """limits.* and the server's timeouts, cap and allowed hosts come from the file; a derived
    field is not a setting."""
    path = write_config(
        "server: {header_timeout: 2s, body_timeout: 3s, keepalive_timeout: 1m,"
        " max_connections: 50, query_timeout: 1s, allowed_hosts: [bridge.example]}\n"
        "limits: {max_labels: 10, max_annotation_value: 1000}\n"
    )
    settings = load_settings(path, {})
    assert settings.server.header_timeout == 2
    assert settings.server.keepalive_timeout == 60
    assert settings.server.allowed_hosts == ("bridge.example",)
    assert settings.limits.max_labels == 10
    assert settings.limits.smallest_size == 1000
    bad = write_config("limits: {smallest_size: 3}\n", name="bad.yml")
    with pytest.raises(ConfigError, match=r"limits\.smallest_size: unknown setting"):
        load_settings(bad, {})
    hosts = write_config("server: {allowed_hosts: bridge}\n", name="hosts.yml")
    with pytest.raises(ConfigError, match=r"server\.allowed_hosts: must be a list"):
        load_settings(hosts, {})


def test_keys_file_of_a_postgresql_store_is_only_the_one_named(write_config: Any) -> None:
    """Beside a SQLite file by default; a PostgreSQL store has no directory of its own, so its
    keys file is the one named (replicas share it), else none."""
    assert load_settings(None, {}, db="a/b.db").server.keys_path == "a/b.db.keys.json"
    url = "postgresql://bridge@127.0.0.1:5432/alerts"
    assert load_settings(None, {}, db=url).server.keys_path is None
    named = load_settings(None, {"ALERTBRIDGE_KEYS_FILE": "/k.json"}, db=url).server
    assert named.keys_path == "/k.json"


def test_stream_priority_from_file_and_env(write_config: Any) -> None:
    """The stream worker runs at SCHED_IDLE unless told otherwise, by the file or the env."""
    assert load_settings(None, {}).server.stream_priority == "idle"
    path = write_config("server: {stream_priority: normal}\n")
    assert load_settings(path, {}).server.stream_priority == "normal"
    env = {"ALERTBRIDGE_STREAM_PRIORITY": "idle"}
    assert load_settings(path, env).server.stream_priority == "idle"
    with pytest.raises(ConfigError) as info:
        load_settings(path, {"ALERTBRIDGE_STREAM_PRIORITY": "high"})
    assert str(info.value) == (
        "ALERTBRIDGE_STREAM_PRIORITY: server.stream_priority: must be one of idle, normal"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"ALERTBRIDGE_TELEMETRY_SYSTEM": "snmp"})
    assert str(info.value).startswith("ALERTBRIDGE_TELEMETRY_SYSTEM: telemetry.system: ")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ALERTBRIDGE_STREAM_PRIORITY": ""},
         "ALERTBRIDGE_STREAM_PRIORITY: server.stream_priority: must be a non-empty string, got ''"),
        ({"ALERTBRIDGE_PROMETHEUS_URL": "prometheus:9090"},
         "ALERTBRIDGE_PROMETHEUS_URL: prometheus.url: must be an http(s) URL,"
         " got 'prometheus:9090'"),
    ],
)  # fmt: skip
def test_a_bad_value_from_the_environment_names_its_variable(
    write_config: Any, env: dict[str, str], expected: str
) -> None:
    """Even beside a file (which the variable overrides), and for every setting checked by
    type as well as by value."""
    path = write_config("server: {port: 9000}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env)
    assert str(info.value) == expected


def test_a_bad_value_from_a_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, {}, db="")
    assert str(info.value) == "--db: server.db: must be a non-empty string, got ''"


def test_the_store_password_file_and_the_export_key_are_settings(tmp_path: Path) -> None:
    """ALERTBRIDGE_STORE_PASSWORD_FILE names server.db_password_file; the export key comes
    from ALERTBRIDGE_EXPORT_KEY or the file ALERTBRIDGE_EXPORT_KEY_FILE names, never shown."""
    key = tmp_path / "export.key"
    key.write_text("pseudonyms\n")
    settings = load_settings(None, {"ALERTBRIDGE_STORE_PASSWORD_FILE": "/run/secrets/pg",
                                    "ALERTBRIDGE_EXPORT_KEY_FILE": str(key)})  # fmt: skip
    assert settings.server.db_password_file == "/run/secrets/pg"
    assert settings.server.export_key is not None
    assert settings.server.export_key.data == b"pseudonyms"
    assert "pseudonyms" not in repr(settings)
    assert load_settings(None, {}).server.export_key is None
