"""`alertbridge dev`: a local stack of the real Prometheus and Alertmanager plus the bridge.

Generates the configuration for free loopback ports into a work directory, starts
`prometheus`, `prometheus-alertmanager` (gossip off; with `ha`, two replicas gossiping on
loopback, both alerted by Prometheus, both notifying the bridge, both read by its
reconciler) and `alertbridge serve`, prints the URLs, and stops them all (SIGTERM, then
SIGKILL after a grace period) on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bridge.config import Settings
from bridge.core.errors import BridgeError
from bridge.generate import ALERTMANAGER_PATH, PROMETHEUS_PATH, render_all, write_all
from bridge.host.tools import find_tool

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Stack:
    """Where the stack's parts listen."""

    bridge: str
    prometheus: str
    alertmanager: str
    workdir: Path
    alertmanagers: tuple[str, ...] = ()  # every replica (alertmanager is the first)


def _wait_ready(name: str, url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BridgeError(f"{name} exited with status {proc.returncode} (see its log)")
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=2):  # noqa: S310 - loopback
                return
        except OSError:
            time.sleep(0.2)
    raise BridgeError(f"{name} not ready at {url} after {timeout:.0f}s (see its log)")


def run_dev(
    settings: Settings,
    workdir: Path,
    on_ready: Callable[[Stack], None],
    stop: threading.Event,
    ha: bool = False,
) -> None:
    """Start the stack, call `on_ready`, block until `stop` is set, then tear it all down."""
    replicas = ["alertmanager", "alertmanager-2"] if ha else ["alertmanager"]
    ports = {name: free_port() for name in ("bridge", "prometheus", *replicas)}
    urls = {name: f"http://{LOOPBACK}:{port}" for name, port in ports.items()}
    gossip = {name: free_port() for name in replicas}
    workdir.mkdir(parents=True, exist_ok=True)
    token_file = workdir / "webhook-token"
    token = secrets.token_urlsafe(24)
    token_file.write_text(token, encoding="utf-8")
    token_file.chmod(0o600)
    settings = replace(
        settings,
        prometheus=replace(
            settings.prometheus,
            url=urls["prometheus"],
            scrape_interval=min(settings.prometheus.scrape_interval, 5),
            evaluation_interval=min(settings.prometheus.evaluation_interval, 5),
            scrape_target=f"{LOOPBACK}:{ports['bridge']}",
            alertmanager_target=",".join(f"{LOOPBACK}:{ports[r]}" for r in replicas),
        ),
        alertmanager=replace(
            settings.alertmanager,
            url=urls["alertmanager"],
            urls=tuple(urls[r] for r in replicas),
            webhook_urls=(urls["bridge"] + "/api/v1/alertmanager",),
            webhook_token_file=str(token_file),
        ),
    )
    write_all(render_all(settings), workdir)
    env = {k: v for k, v in os.environ.items() if k != "ALERTBRIDGE_CONFIG"}
    env["ALERTBRIDGE_WEBHOOK_TOKEN"] = token  # the child reads it from its environment only
    env["ALERTBRIDGE_ALERTMANAGER_URL"] = ",".join(urls[r] for r in replicas)
    # What the bridge needs to generate the files written above again, after a change of
    # its rules over the API (bridge.generate.managed), into the same directory.
    prom = settings.prometheus
    env |= {
        "ALERTBRIDGE_PROMETHEUS_URL": urls["prometheus"],
        "ALERTBRIDGE_PROMETHEUS_SCRAPE_TARGET": prom.scrape_target,
        "ALERTBRIDGE_PROMETHEUS_ALERTMANAGER_TARGET": prom.alertmanager_target,
        "ALERTBRIDGE_PROMETHEUS_SCRAPE_INTERVAL": f"{prom.scrape_interval}s",
        "ALERTBRIDGE_PROMETHEUS_EVALUATION_INTERVAL": f"{prom.evaluation_interval}s",
        "ALERTBRIDGE_WEBHOOK_URLS": ",".join(settings.alertmanager.webhook_urls),
        "ALERTBRIDGE_WEBHOOK_TOKEN_FILE": str(token_file),
        "ALERTBRIDGE_RULES_OUTPUT": str(workdir),
    }

    def cluster(name: str) -> list[str]:
        if not ha:
            return ["--cluster.listen-address="]
        peer = next(r for r in replicas if r != name)
        return [f"--cluster.listen-address={LOOPBACK}:{gossip[name]}",
                f"--cluster.advertise-address={LOOPBACK}:{gossip[name]}",
                f"--cluster.peer={LOOPBACK}:{gossip[peer]}"]  # fmt: skip

    commands = {
        name: [
            find_tool("prometheus-alertmanager"),
            f"--config.file={workdir / ALERTMANAGER_PATH}",
            f"--storage.path={workdir / (name + '-data')}",
            f"--web.listen-address={LOOPBACK}:{ports[name]}",
            f"--web.external-url={urls[name]}",
            *cluster(name),
        ]
        for name in replicas
    }
    commands |= {
        "prometheus": [
            find_tool("prometheus"),
            f"--config.file={workdir / PROMETHEUS_PATH}",
            f"--storage.tsdb.path={workdir / 'prometheus-data'}",
            f"--web.listen-address={LOOPBACK}:{ports['prometheus']}",
            f"--web.external-url={urls['prometheus']}",
            "--web.enable-lifecycle",  # the bridge reloads it after a change of the rules
        ],
        "bridge": [
            sys.executable,
            "-m",
            "bridge",
            *(["--config", settings.source] if Path(settings.source).is_file() else []),
            "serve",
            "--host",
            LOOPBACK,
            "--port",
            str(ports["bridge"]),
            "--db",
            str(workdir / "alertbridge.db"),
        ],
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = []
    try:
        for name, argv in commands.items():
            log = (workdir / f"{name}.log").open("wb")
            logs.append(log)
            procs[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        for name, proc in procs.items():
            _wait_ready(name, urls[name], proc, 30)
        on_ready(Stack(urls["bridge"], urls["prometheus"], urls["alertmanager"], workdir,
                       tuple(urls[r] for r in replicas)))  # fmt: skip
        while not stop.wait(0.5):
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise BridgeError(f"{name} exited with status {proc.returncode}")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for log in logs:
            log.close()
