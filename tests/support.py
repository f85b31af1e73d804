"""Real processes on free loopback ports for end-to-end tests: the bridge, Prometheus."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from bridge.cli.dev import free_port
from bridge.host.tools import find_tool

T = TypeVar("T")
LOOPBACK = "127.0.0.1"
__all__ = ["LOOPBACK", "free_port"]  # free_port: the one `alertbridge dev` uses


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 30.0, every: float = 0.1
) -> T:
    """Poll `probe` (bounded in time) until it returns something truthy; that is returned.

    Used only where the event lives in another process (a scrape, a rule evaluation) and there
    is nothing in this process to await.
    """
    deadline = time.monotonic() + timeout
    last_error: str | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except urllib.error.HTTPError as exc:  # e.g. 503 from /-/ready while starting
            exc.close()  # it holds the response's socket
            last_error = f"HTTP {exc.code} from {exc.url}"
        except (OSError, ValueError) as exc:
            # Kept as text: a kept exception keeps its traceback's frames (this one included,
            # a cycle) until the cyclic GC, and with them any socket, which then warns.
            last_error = repr(exc)
        time.sleep(every)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what} (last error: {last_error})"
    )


async def until(condition: Callable[[], object], what: str, seconds: float = 30.0,
                every: float = 0.02) -> None:  # fmt: skip
    """Await (bounded in time) until `condition()` holds: for what another thread or process
    does that sends this event loop no event (a writer thread's progress, a worker's
    message); `every` 0 polls at each turn of the loop."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(every)


def http_json(
    url: str,
    body: Any | None = None,
    token: str | None = None,
    method: str | None = None,
) -> tuple[int, Any]:
    """(status, decoded JSON body) of a request; 4xx/5xx are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text


def scraped(base: str, name: str, **labels: str) -> float:
    """A sample of a process's /metrics (the bridge's, Alertmanager's): 0 when absent."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(http_text(f"{base}/metrics")):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


class Proc:
    """A child process with its log file."""

    def __init__(self, name: str, argv: list[str], log: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.log = log
        self._handle = log.open("wb")
        self.popen = subprocess.Popen(
            argv, stdout=self._handle, stderr=subprocess.STDOUT, env=dict(env),
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def output(self) -> str:
        if not self._handle.closed:
            self._handle.flush()
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the process and wait for it; SIGKILL if it does not stop in time."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        self._handle.close()
        return self.popen.returncode


@contextmanager
def running(proc: Proc) -> Iterator[Proc]:
    """Stop the process however the block ends; show its log if the block failed."""
    try:
        yield proc
    except BaseException:
        sys.stderr.write(f"--- {proc.name} log ---\n{proc.output()[-4000:]}\n")
        raise
    finally:
        proc.stop()


def bridge_env(**extra: str) -> dict[str, str]:
    """The environment for a bridge child: this one minus ALERTBRIDGE_*, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTBRIDGE_")}
    env.update(extra)
    return env


def start_bridge(
    tmp: Path,
    port: int,
    env: Mapping[str, str],
    config: Path | None = None,
    name: str = "bridge",
    db: str = "bridge.db",
    serve_args: Sequence[str] = (),
) -> Proc:
    """`alertbridge serve [serve_args]` on loopback with its database tmp/db (or the
    PostgreSQL URL db); returns once
    /-/ready answers."""
    argv = [sys.executable, "-m", "bridge"]
    if config is not None:
        argv += ["--config", str(config)]
    target = db if "://" in db else str(tmp / db)  # a PostgreSQL URL, or a file in tmp
    argv += ["serve", "--host", LOOPBACK, "--port", str(port), "--db", target, *serve_args]
    proc = Proc(name, argv, tmp / f"{name}.log", env)
    url = f"http://{LOOPBACK}:{port}/-/ready"
    try:
        wait_for(f"{name} ready", lambda: proc.popen.poll() is None and http_text(url), 20)
    except AssertionError:
        proc.stop()
        raise AssertionError(f"{name} did not start:\n{proc.output()[-3000:]}") from None
    return proc


def start_prometheus(tmp: Path, config: Path, port: int, extra: Sequence[str] = ()) -> Proc:
    """The Debian `prometheus` binary with `config`, its TSDB under tmp, on loopback."""
    url = f"http://{LOOPBACK}:{port}"
    argv = [
        find_tool("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'prometheus-data'}",
        f"--web.listen-address={LOOPBACK}:{port}",
        f"--web.external-url={url}",
        "--log.level=warn",
        *extra,
    ]
    proc = Proc("prometheus", argv, tmp / "prometheus.log", os.environ)
    try:
        wait_for("prometheus ready", lambda: http_text(f"{url}/-/ready"), 30)
    except AssertionError:
        proc.stop()
        raise AssertionError(f"prometheus did not start:\n{proc.output()[-3000:]}") from None
    return proc


def prom_query(base: str, expr: str) -> list[dict[str, Any]]:
    """Instant query results (empty list when there are none)."""
    status, body = http_json(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    if status != 200 or body["status"] != "success":
        raise ValueError(f"query {expr!r} failed: {body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def start_alertmanager(tmp: Path, config: Path, port: int, name: str = "alertmanager",
                       cluster: list[str] | None = None) -> Proc:  # fmt: skip
    """The Debian `prometheus-alertmanager` on loopback; gossip off unless `cluster` is given."""
    url = f"http://{LOOPBACK}:{port}"
    argv = [
        find_tool("prometheus-alertmanager"),
        f"--config.file={config}",
        f"--storage.path={tmp / (name + '-data')}",
        f"--web.listen-address={LOOPBACK}:{port}",
        f"--web.external-url={url}",
        "--log.level=warn",
    ]
    argv += cluster if cluster is not None else ["--cluster.listen-address="]
    proc = Proc(name, argv, tmp / f"{name}.log", os.environ)
    try:
        wait_for(f"{name} ready", lambda: http_text(f"{url}/-/ready"), 30)
    except AssertionError:
        proc.stop()
        raise AssertionError(f"{name} did not start:\n{proc.output()[-3000:]}") from None
    return proc


@contextmanager
def scraped_bridge(tmp: Path, token: str) -> Iterator[tuple[str, str]]:
    """`serve` taking pushed system metrics, scraped every second by a real Prometheus with no
    rules; yields (Prometheus URL, bridge URL)."""
    from bridge.generate.prometheus import render_prometheus_config

    bridge_port, prom_port = free_port(), free_port()
    config = tmp / "prometheus.yml"
    text = render_prometheus_config(
        1, 1, "alertbridge", f"{LOOPBACK}:{bridge_port}", f"{LOOPBACK}:{free_port()}", "none.yml"
    )
    config.write_text(text.replace("rule_files:\n- none.yml\n", "rule_files: []\n"))
    env = bridge_env(ALERTBRIDGE_API_TOKEN=token, ALERTBRIDGE_TELEMETRY_SYSTEM="push")
    with (
        running(start_bridge(tmp, bridge_port, env)),
        running(start_prometheus(tmp, config, prom_port)),
    ):
        yield f"http://{LOOPBACK}:{prom_port}", f"http://{LOOPBACK}:{bridge_port}"


#: The bridge takes its telemetry pushed (the tests set it), sampled every second.
PUSH_TELEMETRY = "telemetry: {{system: push, sample_interval: 1s}}\n"


def stack_config(
    *,
    rules: str = "",
    scrape: bool = True,
    alertmanager_target: str = "{loop}:{am}",
    prometheus: bool = True,
    am: str | None = 'url: "http://{loop}:{am}"',
    reconcile: str | None = "1s",
    resend: str | None = None,
    receivers: str = "",
    rest: str = "",
) -> str:
    """The YAML template of an end-to-end stack, for `generate_stack`: Prometheus evaluating
    every second and scraping the bridge, Alertmanager grouping within a second and notifying
    the bridge's webhook with the token file; `{loop}`, `{bridge}`, `{am}` and `{token}` are
    filled in then (as are a test's own fields; braces of YAML itself doubled). `rules`,
    `receivers` (under alertmanager) and `rest` (more sections) are YAML of the test's."""
    text = f"rules:\n{rules}" if rules else ""
    if prometheus:
        text += "prometheus:\n"
        if scrape:
            text += (
                "  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                '  scrape_target: "{loop}:{bridge}"\n'
            )
        text += f'  alertmanager_target: "{alertmanager_target}"\n'
    text += "alertmanager:\n"
    if am:
        text += f"  {am}\n"
    text += (
        '  webhook_url: "http://{loop}:{bridge}/api/v1/alertmanager"\n'
        '  webhook_token_file: "{token}"\n'
        "  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n"
    )
    if reconcile:
        text += f"  reconcile_interval: {reconcile}\n"
    if resend:
        text += f"  resend_window: {resend}\n"
    return text + receivers + rest


def generate_stack(tmp: Path, template: str, token: str, **fields: object) -> tuple[Path, Path]:
    """Write the webhook token file and the config (`template` formatted with `fields` and
    `token` = the token file's path), run `alertbridge rules generate` into tmp/gen.

    Returns (config path, generated tree).
    """
    from click.testing import CliRunner

    from bridge.cli import main

    token_file = tmp / "webhook-token"
    token_file.write_text(token)
    config = tmp / "alertbridge.yml"
    config.write_text(template.format(token=token_file, **fields))
    gen = tmp / "gen"
    result = CliRunner().invoke(
        main, ["--config", str(config), "rules", "generate", "--out", str(gen)]
    )
    assert result.exit_code == 0, result.output
    return config, gen
