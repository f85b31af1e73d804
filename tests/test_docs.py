"""The documentation site builds without a warning (`mkdocs build --strict`: every link and
anchor resolves, every page is in the navigation), its generated pages carry what the code
has, the configuration it documents loads, and the README stays a front page."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import click
import pytest

from bridge.cli import main
from bridge.config import load_settings
from bridge.core.times import NS
from bridge.http.openapi import SPEC
from tests.test_architecture import LAYERS

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # (a banner about MkDocs 2)
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def text_of(site: Path, page: str) -> str:
    html = (site / page / "index.html").read_text()
    return re.sub(r"<[^>]+>", "", html)


def commands(group: click.Group, prefix: str = "alertbridge") -> list[str]:
    ctx = click.Context(group)
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        found.append(f"{prefix} {name}")
        if isinstance(command, click.Group):
            found += commands(command, f"{prefix} {name}")
    return found


def test_the_site_builds_strict_and_fetches_nothing(site: Path) -> None:
    """No page links to a font or script elsewhere: the site is read where nothing may be
    fetched (Material's Google Fonts are off)."""
    index = (site / "index.html").read_text()
    assert "fonts.googleapis.com" not in index
    assert "<!-- generated:" not in "".join(p.read_text() for p in site.rglob("*.html"))


def test_the_cli_reference_has_every_command_and_option(site: Path) -> None:
    page = text_of(site, "reference/cli")
    for path in commands(main):
        assert f"{path}\n" in page or f"{path} " in page, path
    assert "--filter" in page
    assert "stream-worker" not in page  # hidden: started by serve, not by people


def test_the_http_reference_has_every_operation(site: Path) -> None:
    page = text_of(site, "reference/http")
    for path, item in SPEC["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "delete", "patch"):
                assert f"{method.upper()} {path}" in page, (method, path)


def test_the_layer_table_is_the_enforced_one(site: Path) -> None:
    page = text_of(site, "architecture")
    rows = re.findall(r"^\s*(\d+)\s*\n\s*(\S+)\s*$", page, re.M)
    documented = {(int(level), name) for level, name in rows}
    enforced = {(level, name) for level, names in enumerate(LAYERS) for name in names}
    assert enforced <= documented, enforced - documented


def test_the_documented_configuration_loads(tmp_path: Path) -> None:
    """The configuration page's full example is a configuration this version accepts."""
    page = (DOCS / "operating" / "configuration.md").read_text()
    block = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "alertbridge.yml"
    path.write_text(block)
    settings = load_settings(path, {})
    assert settings.server.max_body_bytes == 32 * 1024 * 1024
    assert settings.server.stream_drain_timeout == 30


def test_the_readme_is_a_front_page() -> None:
    """At most 12,000 characters, and every link into docs/ leads to a page that exists."""
    readme = (REPO / "README.md").read_text()
    assert len(readme) <= 12_000, len(readme)
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links
    for link in links:
        assert (REPO / link).is_file(), link
    assert "scripts/run" in readme
    assert "scripts/test" in readme


def documented_commands() -> list[str]:
    """The commands of the getting-started page, in order: its console blocks' `$ ` lines."""
    page = (DOCS / "getting-started.md").read_text()
    blocks = re.findall(r"```console\n(.*?)```", page, re.S)
    return [line[2:] for block in blocks for line in block.splitlines() if line.startswith("$ ")]


@pytest.mark.e2e
def test_getting_started_as_written(tmp_path: Path) -> None:
    """Every command of the getting-started page, as written, in a fresh directory: the
    bridge alone, then `dev` with the real Prometheus and Alertmanager, an alert added with
    amtool, listed, acknowledged, and its silence in Alertmanager. `scripts/run` is the
    project's set-up then `alertbridge`: here `python -m bridge` (CI runs the set-up itself);
    the URLs are the ones `dev` printed, not the page's examples."""
    import signal

    from tests.support import LOOPBACK, bridge_env, free_port, http_text, wait_for

    steps = documented_commands()
    assert steps[0] == "scripts/run"
    assert steps[2].startswith("scripts/run dev ")
    assert steps[3].startswith("BRIDGE=")
    run = f"{sys.executable} -m bridge"
    bash = shutil.which("bash") or "/bin/bash"
    port = free_port()
    env = bridge_env(ALERTBRIDGE_PORT=str(port))

    def shell(command: str, extra: dict[str, str] | None = None) -> str:
        proc = subprocess.run(
            [bash, "-c", command.replace("scripts/run", run)], cwd=tmp_path,
            env={**env, **(extra or {})}, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
        return proc.stdout

    serve = subprocess.Popen([*run.split(), "serve"], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for("serve", lambda: http_text(f"http://{LOOPBACK}:{port}/-/ready"), 30)
        shell(steps[1])  # the alerts of the embedded default: whatever fired so far
    finally:
        serve.send_signal(signal.SIGINT)
        assert serve.wait(30) == 0

    dev = subprocess.Popen([bash, "-c", "exec " + steps[2].replace("scripts/run", run)],
                           cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert dev.stdout is not None
        printed = dict(dev.stdout.readline().split()[:2] for _ in range(3))
        urls = {"BRIDGE": printed["alertbridge"], "AM": printed["alertmanager"]}
        assert set(re.findall(r"(\w+)=", steps[3])) == set(urls)
        later = steps[4:]
        shell(later[0], urls)  # amtool alert add
        assert later[1].startswith("scripts/run alerts")

        def listing() -> str | None:
            out = shell(later[1], urls)
            return out if "high_cpu" in out else None

        listed = wait_for("the alert through the webhook", listing, 90)
        assert "firing" in listed
        shell(later[2], urls)  # ack 1

        def silence() -> str | None:
            out = shell(later[3], urls)
            return out if "looking at it" in out else None

        silences = wait_for("the silence in Alertmanager", silence, 30)
        assert 'instance="web-1:9100"' in silences  # the alert's own labels, matched exactly
        trail = shell(later[4], urls)  # show 1
        assert "acknowledged" in trail.lower()
        assert len(later) == 5, later
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(30)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait(30)
        if dev.stdout is not None:
            dev.stdout.close()


def test_the_oncall_page_as_written(tmp_path: Path) -> None:
    """Its configuration loads, and its table of who is on call is what the schedule says."""
    page = (DOCS / "concepts" / "oncall.md").read_text()
    block = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "oncall.yml"
    path.write_text(block)
    primary = load_settings(path, {}).oncall.schedules["primary"]
    rows = [line.split("|")[1:4] for line in page.splitlines()
            if line.startswith("| ") and "2027" in line]  # fmt: skip
    assert len(rows) == 5
    for when, person, _ in rows:
        local = " ".join(when.split()[1:3])
        instant = dt.datetime.fromisoformat(local).replace(tzinfo=ZoneInfo("Europe/Paris"))
        assert primary.who(int(instant.timestamp()) * NS) == person.strip(), when
