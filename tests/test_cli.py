"""The `alertbridge` command line: rules list/generate/check and clean failures."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.generate import ALERTMANAGER_PATH, RULES_PATH

LOOPBACK_ADDRESS = "127.0.0.1"


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_rules_list_table_shows_units_and_durations() -> None:
    """The table has a row per rule with threshold units, cooldown and for."""
    result = run("rules", "list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "NAME", "METRIC", "COND", "THRESHOLD", "SEVERITY", "COOLDOWN", "FOR", "ENABLED"
    ]  # fmt: skip
    assert lines[1].split() == [
        "high_cpu", "system.cpu.percent", ">", "80", "%", "warning", "5m", "5m", "yes"
    ]  # fmt: skip
    assert len(lines) == 11


def test_rules_list_json(write_config: Any) -> None:
    """-o json gives every field, honouring the config file."""
    path = write_config("rules: [{name: critical_cpu, enabled: false}]\n")
    result = run("--config", str(path), "rules", "list", "-o", "json")
    data = json.loads(result.output)
    cpu = next(r for r in data if r["name"] == "critical_cpu")
    assert cpu["enabled"] is False
    assert cpu["threshold"] == 95
    assert cpu["threshold_base"] == 0.95
    assert cpu["threshold_base_text"] == "95%"


def test_generate_writes_the_tree(tmp_path: Path) -> None:
    """rules generate --out DIR writes the four files."""
    result = run("rules", "generate", "--out", str(tmp_path))
    assert result.exit_code == 0
    assert (tmp_path / RULES_PATH).is_file()
    assert (tmp_path / ALERTMANAGER_PATH).is_file()
    assert result.output.count("wrote ") == 8  # with the notification templates


@pytest.mark.e2e
def test_check_passes_and_fails_with_tool_output(tmp_path: Path) -> None:
    """rules check prints a line per check; a broken tree exits 1 with the tool's message."""
    ok = run("rules", "check")
    assert ok.exit_code == 0
    assert ok.output.count("ok  ") == 16  # with the two template renders
    run("rules", "generate", "--out", str(tmp_path))
    rules = tmp_path / RULES_PATH
    rules.write_text(rules.read_text().replace("expr: max by", "expr: max by by", 1))
    bad = run("rules", "check", "--dir", str(tmp_path))
    assert bad.exit_code == 1
    assert "FAIL  promtool check rules" in bad.output
    assert "parse error" in bad.output


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            "rules: [{name: high_cpu, threshold: hot}]\n",
            "rules.high_cpu.threshold: must be a number",
        ),
        ("severity: [\n", "yaml:"),
    ],
)
def test_bad_config_is_one_line_and_exit_1(write_config: Any, config: str, message: str) -> None:
    """Configuration errors print `alertbridge: error: FILE: KEY: reason` and exit 1."""
    path = write_config(config)
    result = CliRunner().invoke(main, ["--config", str(path), "rules", "list"])
    assert result.exit_code == 1
    assert result.output.startswith(f"alertbridge: error: {path}: ")
    assert message in result.output
    assert "Traceback" not in result.output


def test_python_dash_m_bridge_is_the_same_cli() -> None:
    """`python -m bridge` runs the same command line."""
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "--version"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "alertbridge, version 0.1.0"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("192.0.2.10", False), ("bridge.example.org", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    """Only loopback addresses (and localhost) count as private; host names do not."""
    from bridge.cli import is_loopback

    assert is_loopback(host) is loopback


def test_serve_refuses_exposed_address_without_tokens() -> None:
    """Binding 0.0.0.0 without tokens is a usage error (exit 2) before listening, naming the
    missing variables."""
    result = CliRunner(env={"ALERTBRIDGE_API_TOKEN": "x"}).invoke(
        main, ["serve", "--host", "0.0.0.0", "--port", "1"]
    )
    assert result.exit_code == 2
    assert result.output.startswith("alertbridge: error: refusing")
    assert "refusing to listen on 0.0.0.0 without ALERTBRIDGE_WEBHOOK_TOKEN" in result.output
    assert "ALERTBRIDGE_API_TOKEN" not in result.output.split("without", 1)[1].split("(")[0]


def test_status_falls_back_to_local_system_metrics() -> None:
    """No bridge at the URL: status says so and evaluates local CPU and memory only."""
    from tests.support import free_port

    url = f"http://127.0.0.1:{free_port()}"
    result = run("status", "--url", url, "-o", "json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["source"].startswith(f"local (bridge not reachable at {url}")
    states = {r["rule"]: r["state"] for r in data["rules"]}
    assert states["slow_search"] == "NO_DATA"
    assert states["high_memory"] in {"OK", "WARNING"}


def test_status_rejects_non_http_url() -> None:
    """--url must be http(s): a file: URL is refused with a clear message."""
    result = run("status", "--url", "file:///etc/passwd")
    assert result.exit_code == 1
    assert "--url must be http:// or https://" in result.output


def test_serve_with_an_unopenable_database_fails_cleanly(tmp_path: Path) -> None:
    """No traceback and no claim of listening: one line naming the database, exit 1."""
    from tests.support import free_port

    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "serve", "--port", str(free_port()),
         "--db", str(tmp_path / "missing-dir" / "a.db")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "cannot open database" in proc.stderr
    assert "listening" not in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("serve_args", "logged"), [((), False), (("--log-level", "debug"), True)])
def test_serve_logs_requests_only_at_debug(
    tmp_path: Path, serve_args: tuple[str, ...], logged: bool
) -> None:
    """No line per request at the default level (a webhook POST or a scrape each would be one);
    --log-level debug turns aiohttp's access log on."""
    from tests.support import LOOPBACK, bridge_env, free_port, http_text, running, start_bridge

    port = free_port()
    with running(start_bridge(tmp_path, port, bridge_env(), serve_args=serve_args)) as bridge:
        assert "alertbridge_" in http_text(f"http://{LOOPBACK}:{port}/metrics")
    assert ('"GET /metrics HTTP/1.1" 200' in bridge.output()) is logged


def _unprivileged(argv: list[str]) -> list[str]:
    """argv run without the capabilities that let root ignore file permissions."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *argv]


def _serve(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    from tests.support import bridge_env

    return subprocess.run(
        _unprivileged([sys.executable, "-m", "bridge", "serve", *args]),
        capture_output=True, text=True, timeout=30, check=False, env=env or bridge_env(),
    )  # fmt: skip


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("alertbridge: error: ")
    assert text in lines[0]


@pytest.mark.parametrize("broken", ["file", "directory", "directory, no database yet"])
def test_serve_refuses_a_database_it_cannot_write(tmp_path: Path, broken: str) -> None:
    """A read-only database file, or a read-only directory (no journal can be created there):
    one line naming the database, exit 1, never 'listening' (it used to start, say ready and
    answer 503 to every write)."""
    from bridge.store.sqlite.database import Database
    from tests.support import free_port

    data = tmp_path / "data"
    data.mkdir()
    db = data / "a.db"
    if broken != "directory, no database yet":
        Database(db).close()
    if broken == "file":
        db.chmod(0o444)
    else:
        data.chmod(0o555)
    try:
        proc = _serve(["--port", str(free_port()), "--db", str(db)])
    finally:
        data.chmod(0o755)
        if db.exists():
            db.chmod(0o644)
    _one_line_error(proc, 1, str(db))
    assert "listening" not in proc.stderr


def test_serve_refuses_a_busy_port(tmp_path: Path) -> None:
    """Another process on the port: one line, exit 1, no traceback."""
    with socket.socket() as other:
        other.bind((LOOPBACK_ADDRESS, 0))
        other.listen()
        port = other.getsockname()[1]
        proc = _serve(["--port", str(port), "--db", str(tmp_path / "a.db")])
    _one_line_error(proc, 1, f"cannot listen on 127.0.0.1:{port}: ")
    assert "in use" in proc.stderr


def test_serve_refuses_an_address_that_is_not_ours(tmp_path: Path) -> None:
    """An address of no interface here (TEST-NET-1), tokens set: one line, exit 1."""
    from tests.support import bridge_env, free_port

    env = bridge_env(ALERTBRIDGE_WEBHOOK_TOKEN="w", ALERTBRIDGE_API_TOKEN="a")
    proc = _serve(["--host", "192.0.2.1", "--port", str(free_port()), "--db",
                   str(tmp_path / "a.db")], env)  # fmt: skip
    _one_line_error(proc, 1, "cannot listen on 192.0.2.1:")


@pytest.mark.parametrize(
    ("args", "text"),
    [(["alerts", "--nope"], "No such option '--nope'"),
     (["alerts", "--limt", "3"], "(see 'alertbridge alerts --help')"),
     (["ack"], "Missing argument 'ALERT_ID'"),
     (["ack", "x"], "Invalid value for 'ALERT_ID': must be an integer"),
     (["alerts", "--status", "maybe"], "Invalid value for '--status'"),
     (["frobnicate"], "No such command 'frobnicate'"),
     (["ack", "\u0661"], "must be an integer from 1 to 9223372036854775807"),
     (["alerts", "--limit", "\u0661\u0660"], "must be an integer from 1 to 1000"),
     (["serve", "--port", "70000"], "must be an integer from 1 to 65535")],
)  # fmt: skip
def test_usage_errors_are_one_line_and_exit_2(args: list[str], text: str) -> None:
    """click's own usage errors take the one error form, exit 2."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("alertbridge: error: ")
    assert text in lines[0]


def test_runtime_errors_are_one_line_and_exit_1(tmp_path: Path) -> None:
    """A missing database is a runtime error: one line, exit 1."""
    result = CliRunner().invoke(main, ["alerts", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 1
    assert result.output.startswith("alertbridge: error: no alert database at ")


def test_serve_near_its_open_files_limit_keeps_answering_quietly(tmp_path: Path) -> None:
    """The issue's case: a hard limit of 1,024 open files and 1,100 idle sockets (which used to
    stop every webhook and flood the log). Now the cap (640 here) closes the oldest idle ones
    to make room, the webhook is stored, and neither 'Too many open files' nor a traceback
    reaches the log."""
    from tests.support import LOOPBACK, Proc, bridge_env, free_port, http_text, running, wait_for

    port = free_port()
    argv = ["prlimit", "--nofile=1024:1024", sys.executable, "-m", "bridge", "serve", "--port",
            str(port), "--db", str(tmp_path / "a.db")]  # fmt: skip
    env = bridge_env(ALERTBRIDGE_WEBHOOK_TOKEN="hook")
    with running(Proc("bridge", argv, tmp_path / "bridge.log", env)) as bridge:
        wait_for("ready", lambda: http_text(f"http://{LOOPBACK}:{port}/-/ready"), 20)
        idle = [socket.create_connection((LOOPBACK, port)) for _ in range(1100)]
        try:
            body = json.dumps({
                "version": "4", "status": "firing", "receiver": "r", "alerts": [{
                    "status": "firing", "fingerprint": "0123456789abcdef",
                    "labels": {"alertname": "x"}, "startsAt": "2026-11-23T10:00:00Z"}],
            }).encode()  # fmt: skip
            request = urllib.request.Request(
                f"http://{LOOPBACK}:{port}/api/v1/alertmanager", data=body,
                headers={"Authorization": "Bearer hook", "Content-Type": "application/json"},
            )  # fmt: skip
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        finally:
            for sock in idle:
                sock.close()
        log = bridge.output()
    assert "at most 640 connections" in log
    assert "Too many open files" not in log
    assert "Traceback" not in log
