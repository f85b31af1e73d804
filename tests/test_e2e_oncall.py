"""Escalation to people, end to end on the Debian `prometheus-alertmanager`: a policy whose
level 0 is a schedule pages whoever is on call, through the receiver `rules generate` wrote
for that person (their contact methods), and nobody else's; loopback servers stand in for the
people's webhooks and record what they receive."""

from __future__ import annotations

import datetime as dt
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from bridge.cli import main
from bridge.core.times import NS, now_ns
from tests.payloads import am_alert, notification
from tests.support import (
    LOOPBACK,
    bridge_env,
    free_port,
    generate_stack,
    http_json,
    running,
    stack_config,
    start_alertmanager,
    start_bridge,
    wait_for,
)
from tests.test_e2e_browser import browser as headless_chromium
from tests.test_e2e_escalation import StandIn, stand_in

pytestmark = pytest.mark.e2e

API, HOOK = "e2e-api", "e2e-hook"
REST = """\
server:
  public_url: "http://{loop}:{bridge}"
people:
  alice: {{contacts: [{{type: webhook, config: {{url: "{stand_in}/alice"}}}}]}}
  bob: {{contacts: [{{type: webhook, config: {{url: "{stand_in}/bob"}}}}]}}
  carol: {{contacts: [{{type: webhook, config: {{url: "http://{loop}:{closed}/carol"}}}}]}}
schedules:
  primary:
    layers:
      - rotation: {{participants: [{first}, {second}], shift: 1w, start: "{start}"}}
escalation:
  repost_interval: 1s
  policies:
    - name: oncall
      steps:
        - notify: [{{schedule: primary}}]
  routes:
    - {{severities: [critical], policy: oncall}}
"""
CONFIG = stack_config(prometheus=False, rest=REST)
browser = headless_chromium  # the browser tests' fixture


@dataclass
class OnCallStack:
    """Alertmanager (and the bridge, when asked) generated from CONFIG, on free ports, the
    people's webhooks at a stand-in; `first` on call since an hour ago, then `second`."""

    config: Path
    base: str
    am: str


@contextmanager
def on_call_stack(tmp_path: Path, people: StandIn, first: str = "alice",
                  bridge: bool = True) -> Iterator[OnCallStack]:  # fmt: skip
    """The stack; with the bridge, alert 1 (critical disk_full) already sent to it."""
    second = "bob" if first == "alice" else "alice"
    began = dt.datetime.fromtimestamp(now_ns() // NS - 3600, dt.UTC).strftime("%Y-%m-%dT%H:%M")
    bridge_port, am_port = free_port(), free_port()
    config, gen = generate_stack(tmp_path, CONFIG, HOOK, loop=LOOPBACK, bridge=bridge_port,
                                 am=am_port, stand_in=people.url, first=first, second=second,
                                 start=began, closed=free_port())  # fmt: skip
    env = bridge_env(ALERTBRIDGE_API_TOKEN=API, ALERTBRIDGE_WEBHOOK_TOKEN=HOOK)
    stack = OnCallStack(config, f"http://{LOOPBACK}:{bridge_port}", f"http://{LOOPBACK}:{am_port}")
    with running(start_alertmanager(tmp_path, gen / "alertmanager/alertmanager.yml", am_port)):
        if not bridge:
            yield stack
            return
        with running(start_bridge(tmp_path, bridge_port, env, config)):
            alert = am_alert("00000000000000aa", alertname="disk_full", severity="critical")
            status, body = http_json(f"{stack.base}/api/v1/alertmanager", notification(alert),
                                     HOOK)  # fmt: skip
            assert status == 200, body
            yield stack


def reposted(base: str, count: int) -> None:
    """Wait (bounded) until the engine has posted alert 1's copies again `count` times: the
    window in which a page to someone else would have shown."""
    seen: set[str] = set()

    def more() -> bool:
        _, body = http_json(f"{base}/api/v1/alerts/1/escalation", token=API)
        seen.add(str(body["escalations"][0]["reposted_at"]))
        return len(seen) > count

    wait_for(f"{count} reposts", more, 30)


@pytest.mark.parametrize("first", ["alice", "bob"])
def test_a_schedule_step_pages_the_person_on_call_and_nobody_else(
    tmp_path: Path, first: str
) -> None:
    """Whoever the rotation has on call now (it began an hour ago) gets the page through
    their own receiver, once; the other person's receiver gets nothing while the copy is
    posted again; the trail names who."""
    second = "bob" if first == "alice" else "alice"
    with stand_in() as people, on_call_stack(tmp_path, people, first) as stack:
        people.wait(f"/{first}")
        ((page, _),) = people.at(f"/{first}")
        labels = page["alerts"][0]["labels"]
        assert (labels["alertname"], labels["escalation_people"]) == ("disk_full", first)

        def trail() -> list[str]:  # (the engine posts the copy, then records the step)
            status, detail = http_json(f"{stack.base}/api/v1/alerts/1", token=API)
            assert status == 200, detail
            return [e["detail"] for e in detail["events"] if e["kind"] == "escalated"]

        steps = wait_for("the step in the trail", trail, 30)
        assert steps == [f"level 0: schedule primary -> {first} (webhook)"]
        reposted(stack.base, 3)  # the copy posted again: the other's receiver had its chances
        assert people.at(f"/{second}") == []
        assert len(people.at(f"/{first}")) == 1


def test_the_person_paged_acknowledges_from_the_notification(
    tmp_path: Path, browser: WebDriver
) -> None:
    """The link in alice's page: fetched as a link preview would, it changes nothing; opened
    in headless Chromium it shows the alert and a button; the button acknowledges as alice,
    the escalation stops and Alertmanager gets the silence. A forged link gets a page saying
    so."""
    with stand_in() as people, on_call_stack(tmp_path, people) as stack:
        base = stack.base
        people.wait("/alice")
        ((page, _),) = people.at("/alice")
        link = page["alerts"][0]["annotations"]["alertbridge_ack_url"]
        assert link.startswith(f"{base}/ack/1?person=alice&exp=")
        with urllib.request.urlopen(link, timeout=10) as preview:
            assert preview.status == 200
            assert b"Acknowledge as <strong>alice</strong>?" in preview.read()
        assert http_json(f"{base}/api/v1/alerts/1", token=API)[1]["acked_by"] is None
        browser.get(link)
        button = browser.find_element(By.CSS_SELECTOR, "form.ack-form button")
        button.click()
        WebDriverWait(browser, 30).until(
            lambda b: "Acknowledged by alice" in b.page_source, "the acknowledgement"
        )
        _, detail = http_json(f"{base}/api/v1/alerts/1", token=API)
        assert (detail["acked_by"], detail["ack_comment"]) == ("alice", "via link")

        def stopped() -> bool:  # the engine takes the ack from the feed, after the answer
            _, escalation = http_json(f"{base}/api/v1/alerts/1/escalation", token=API)
            return bool(escalation["escalations"][0]["state"] == "acknowledged")

        wait_for("the escalation stopped by the acknowledgement", stopped, 30)
        _, after = http_json(f"{base}/api/v1/alerts/1", token=API)
        stops = [e for e in after["events"] if e["kind"] == "escalation_stopped"]
        assert [e["detail"] for e in stops] == ["acknowledged"]

        def silenced() -> list[Any]:
            _, silences = http_json(f"{stack.am}/api/v2/silences")
            return [s for s in silences if s["status"]["state"] == "active"]

        (silence,) = wait_for("the silence in Alertmanager", silenced, 30)
        assert silence["createdBy"] == "alice"
        browser.get(link[:-4] + "0000")
        assert "not one this bridge made" in browser.page_source


def test_people_test_sends_one_notification_through_each_method(tmp_path: Path) -> None:
    """`alertbridge people test NAME` on the real Alertmanager: alice's method delivers
    (her stand-in gets the test notification, and nobody else does); carol's webhook listens
    nowhere: FAIL naming the integration, exit 1; a person unknown: said so."""
    with stand_in() as people, on_call_stack(tmp_path, people, bridge=False) as stack:
        config = stack.config
        runner = CliRunner()
        ok = runner.invoke(main, ["--config", str(config), "people", "test", "alice"])
        assert ok.exit_code == 0, ok.output
        assert ok.output.startswith("ok: alice webhook: delivered by Alertmanager's webhook")
        ((body, _),) = people.at("/alice")
        assert body["receiver"] == "person-alice"
        assert body["alerts"][0]["labels"]["alertbridge_test"] == "person-alice"
        assert people.at("/bob") == []
        failed = runner.invoke(main, ["--config", str(config), "people", "test", "carol",
                                      "--timeout", "20"])  # fmt: skip
        assert failed.exit_code == 1
        assert "FAIL: carol webhook: Alertmanager's webhook integration failed" in (failed.output)
        unknown = runner.invoke(main, ["--config", str(config), "people", "test", "zed"])
        assert unknown.exit_code == 1
        assert "no person 'zed' (people: alice, bob, carol)" in unknown.output
