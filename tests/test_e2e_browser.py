"""The operators' page in a real browser: Debian's headless Chromium driven by Selenium, on a
real bridge beside a real Alertmanager. Sign in; an alert sent by webhook appears in the list
without a reload; acknowledge it and see its silence in Alertmanager; add a note; search;
bulk-acknowledge; the phone width; sign out. Screenshots go to the test's directory
(screenshots/), to be looked at."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from bridge.host import apikeys
from tests.payloads import am_alert, notification
from tests.support import (
    LOOPBACK,
    bridge_env,
    free_port,
    http_json,
    running,
    start_alertmanager,
    start_bridge,
)

pytestmark = pytest.mark.e2e
WAIT = 30.0  # bound on every wait for the page; met in well under a second when all is well
AM_CONFIG = """
route:
  receiver: nowhere
  group_wait: 0s
receivers:
  - name: nowhere
"""


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        raise AssertionError("chromium and chromium-driver are missing: run scripts/setup")
    return browser, driver


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    binary, driver = _chromium()
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,800", "--disable-gpu"):  # fmt: skip
        options.add_argument(arg)
    options.binary_location = binary
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    chrome.set_page_load_timeout(WAIT)
    try:
        yield chrome
    finally:
        chrome.quit()


def until(chrome: WebDriver, what: str, check: Any) -> Any:
    try:
        # (the page's live refresh may replace an element between a find and its use)
        wait = WebDriverWait(chrome, WAIT, poll_frequency=0.05,
                             ignored_exceptions=(NoSuchElementException,
                                                 StaleElementReferenceException))  # fmt: skip
        return wait.until(check, f"waiting for {what}")
    except Exception:
        shots = SHOTS.get("dir")
        if shots is not None:  # what the page showed, to look at
            chrome.save_screenshot(str(shots / "failed.png"))
            (shots / "failed.html").write_text(chrome.page_source)
        raise


SHOTS: dict[str, Path] = {}


def text_of(chrome: WebDriver, css: str) -> str:
    try:
        return str(chrome.find_element(By.CSS_SELECTOR, css).text)
    except WebDriverException as exc:
        # Chromium 156 sometimes reports an element the live refresh replaced between the find
        # and the read as an inspector error, not as a stale element: the same race, retried.
        if "does not belong to the document" in str(exc.msg):
            raise StaleElementReferenceException(exc.msg) from exc
        raise


def click(chrome: WebDriver, css: str) -> None:
    until(chrome, f"a click on {css}", lambda c: c.find_element(By.CSS_SELECTOR, css).click()
          or True)  # fmt: skip


def type_in(chrome: WebDriver, css: str, text: str) -> None:
    until(chrome, f"typing in {css}", lambda c: c.find_element(By.CSS_SELECTOR, css).send_keys(
        text) or True)  # fmt: skip


def send(base: str, *alerts: dict[str, Any]) -> None:
    status, body = http_json(f"{base}/api/v1/alertmanager", notification(*alerts), "hook")
    assert status == 200, body


def test_an_operators_morning(tmp_path: Path, browser: WebDriver) -> None:
    shots = SHOTS["dir"] = tmp_path / "screenshots"
    shots.mkdir()
    keys = tmp_path / "keys.json"
    _, token = apikeys.add(keys, "alice", "write")
    am_port, port = free_port(), free_port()
    (tmp_path / "am.yml").write_text(AM_CONFIG)
    am = start_alertmanager(tmp_path, tmp_path / "am.yml", am_port)
    env = bridge_env(ALERTBRIDGE_WEBHOOK_TOKEN="hook", ALERTBRIDGE_KEYS_FILE=str(keys),
                     ALERTBRIDGE_ALERTMANAGER_URL=f"http://{LOOPBACK}:{am_port}")  # fmt: skip
    with running(am), running(start_bridge(tmp_path, port, env)):
        base = f"http://{LOOPBACK}:{port}"
        chrome = browser

        # Signing in: the page sends a signed-out browser to sign in, then back.
        chrome.get(f"{base}/alerts?status=firing")
        assert "/signin" in chrome.current_url
        chrome.find_element(By.NAME, "token").send_keys("abk_not-a-key")
        chrome.find_element(By.CSS_SELECTOR, "form.signin button").click()
        until(chrome, "the refusal", lambda c: "not a key of this bridge" in text_of(c, ".error"))
        chrome.find_element(By.NAME, "token").send_keys(token)
        chrome.find_element(By.CSS_SELECTOR, "form.signin button").click()
        until(chrome, "the list", lambda c: "/alerts?status=firing" in c.current_url)
        until(chrome, "the live stream", lambda c: "is-live" in c.find_element(
            By.TAG_NAME, "body").get_attribute("class"))  # fmt: skip
        chrome.save_screenshot(str(shots / "1-empty-list.png"))

        # An alert arrives by webhook: it shows up without a reload.
        chrome.execute_script("window.notReloaded = true;")
        send(base, am_alert("00000000000000a1", alertname="disk_full", severity="critical",
                            instance="<b>db-1</b>"))  # fmt: skip
        until(chrome, "the alert's row", lambda c: c.find_elements(By.CSS_SELECTOR, "tr[data-id]"))
        assert chrome.execute_script("return window.notReloaded === true;")
        row = text_of(chrome, "tr[data-id]")
        assert "disk_full" in row
        assert "<b>db-1</b>" in row  # markup in a label is text
        chrome.save_screenshot(str(shots / "2-alert-arrived.png"))

        # Acknowledge it on its page: acknowledged by alice, and a silence in Alertmanager.
        chrome.find_element(By.CSS_SELECTOR, "tr[data-id] a").click()
        until(chrome, "the alert page", lambda c: "disk_full" in c.title)
        type_in(chrome, 'form[action$="/ack"] input[name="comment"]', "looking at it")
        click(chrome, 'form[action$="/ack"] button')
        until(chrome, "the acknowledgement", lambda c: "acknowledged by alice" in text_of(
            c, ".timeline").replace("\n", " ") or "alice" in text_of(c, ".facts"))  # fmt: skip
        until(chrome, "the silence", lambda c: "active" in text_of(c, ".facts"))
        silences = http_json(f"http://{LOOPBACK}:{am_port}/api/v2/silences")[1]
        assert [s["createdBy"] for s in silences if s["status"]["state"] == "active"]
        chrome.save_screenshot(str(shots / "3-acknowledged.png"))

        # A note, shown in the timeline.
        click(chrome, "details.more summary")  # (note, assign, resolve: under More actions)
        type_in(chrome, 'form[action$="/note"] input[name="text"]', "replacing the disk <now>")
        click(chrome, 'form[action$="/note"] button')
        until(chrome, "the note", lambda c: "replacing the disk <now>" in text_of(c, ".timeline"))

        # Search finds it by its note; other alerts do not match.
        send(base, am_alert("00000000000000b1", instance="web-1"),
             am_alert("00000000000000b2", instance="web-2"))  # fmt: skip
        chrome.get(f"{base}/alerts")
        box = chrome.find_element(By.NAME, "q")
        box.send_keys("replacing")
        box.submit()
        until(chrome, "the search", lambda c: "q=replacing" in c.current_url)
        until(chrome, "only #1", lambda c: [r.get_attribute("data-id") for r in c.find_elements(
            By.CSS_SELECTOR, "tr[data-id]")] == ["1"])  # fmt: skip

        # Bulk: select every firing alert on the page, acknowledge them at once.
        chrome.get(f"{base}/alerts?status=firing&acknowledged=false")
        until(chrome, "two unacknowledged", lambda c: len(c.find_elements(
            By.CSS_SELECTOR, "tr[data-id]")) == 2)  # fmt: skip
        click(chrome, "#select-all")
        click(chrome, "form#bulk button")
        until(chrome, "the confirmation", lambda c: "Acknowledge 2 alerts?" in c.title)
        assert len(chrome.find_elements(By.CSS_SELECTOR, "ul.picked li")) == 2
        click(chrome, "#confirm")
        until(chrome, "none left", lambda c: "No alert matches" in text_of(c, "table.alerts"))
        assert "Acknowledged 2 alerts" in text_of(chrome, ".done")
        chrome.save_screenshot(str(shots / "4-bulk-acknowledged.png"))
        listed = http_json(f"{base}/api/v1/alerts?acknowledged=true", None, token)[1]
        assert sorted(a["acked_by"] for a in listed["alerts"]) == ["alice"] * 3

        # Phone width: the list still reads (no page-wide horizontal scroll of the layout).
        chrome.set_window_size(390, 844)
        chrome.get(f"{base}/alerts")
        until(
            chrome, "the rows", lambda c: len(c.find_elements(By.CSS_SELECTOR, "tr[data-id]")) == 3
        )
        width = chrome.execute_script("return document.documentElement.scrollWidth;")
        assert width <= 400, width
        chrome.save_screenshot(str(shots / "5-phone.png"))
        chrome.set_window_size(1280, 800)

        # Sign out: the page asks to sign in again.
        click(chrome, "form.signout button")
        until(chrome, "the sign-in page", lambda c: "/signin" in c.current_url)
        chrome.get(f"{base}/alerts")
        assert "/signin" in chrome.current_url


# --- a phone and a desk (issue 34) ------------------------------------------------------------

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
AXE_VERSION = "4.10.3"
SIZES = {"phone": (390, 844), "desk": (1280, 800)}


def axe_violations(chrome: WebDriver) -> list[str]:
    """axe-core's serious and critical violations of the page shown (WCAG 2 A and AA), each
    as "rule: the first element's selector"."""
    chrome.execute_script(AXE.read_text())
    found = chrome.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "var tags = ['wcag2a', 'wcag2aa', 'best-practice'];"
        "axe.run(document, {runOnly: {type: 'tag', values: tags}}).then(function (r) {"
        " done({version: axe.version, v: r.violations.map(function (v) {"
        " return [v.id, v.impact, v.nodes.map(function (n) { return n.target.join(' '); })];"
        " })}); }, function (e) { done({error: String(e)}); });"
    )
    assert "error" not in found, found
    assert found["version"] == AXE_VERSION
    return [f"{rule} ({impact}): {', '.join(nodes[:3])}" for rule, impact, nodes in found["v"]
            if impact in ("serious", "critical")]  # fmt: skip


def no_sideways_scroll(chrome: WebDriver) -> int:
    width: int = chrome.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"
    )
    return width


def test_the_page_on_a_phone_and_at_a_desk(tmp_path: Path, browser: WebDriver) -> None:
    """At 390x844 and 1280x800, light and dark: no sideways scroll on the list, an alert's
    page, the reports and the silences; Acknowledge inside the first screen of an alert's page;
    no serious axe-core violation; relative ages; the keyboard; a snooze makes a silence in the
    real Alertmanager and the row shows the alert muted; a read key sees no action button."""
    shots = SHOTS["dir"] = tmp_path / "screenshots"
    shots.mkdir()
    keys = tmp_path / "keys.json"
    _, token = apikeys.add(keys, "alice", "write")
    _, reader = apikeys.add(keys, "rita", "read")
    am_port, port = free_port(), free_port()
    (tmp_path / "am.yml").write_text(f"""
route:
  receiver: bridge
  group_wait: 0s
  group_interval: 1s
receivers:
  - name: bridge
    webhook_configs:
      - url: http://{LOOPBACK}:{port}/api/v1/alertmanager
        http_config: {{authorization: {{credentials: hook}}}}
""")
    am = start_alertmanager(tmp_path, tmp_path / "am.yml", am_port)
    am_url = f"http://{LOOPBACK}:{am_port}"
    env = bridge_env(ALERTBRIDGE_WEBHOOK_TOKEN="hook", ALERTBRIDGE_KEYS_FILE=str(keys),
                     ALERTBRIDGE_ALERTMANAGER_URL=am_url)  # fmt: skip
    with running(am), running(start_bridge(tmp_path, port, env)):
        base = f"http://{LOOPBACK}:{port}"
        chrome = browser
        # alerts as Prometheus sends them, through Alertmanager to the bridge's webhook
        fired = [{"labels": {"alertname": name, "severity": sev, "instance": inst},
                  "annotations": {"summary": summary, "runbook_url": "https://runbooks.example/x"}}
                 for name, sev, inst, summary in [
                     ("disk_full", "critical", "db-1:9100", "Disk /var is 97% full on db-1"),
                     ("high_cpu", "warning", "web-7:9100", "CPU above 90% for 10 minutes"),
                     ("error_ratio", "warning", "api-2:8080", "5xx above 2% of all")]]  # fmt: skip
        assert http_json(f"{am_url}/api/v2/alerts", fired)[0] == 200
        chrome.get(f"{base}/signin?next=/alerts")
        chrome.find_element(By.NAME, "token").send_keys(token)
        chrome.find_element(By.CSS_SELECTOR, "form.signin button").click()
        until(chrome, "three alerts", lambda c: len(c.find_elements(
            By.CSS_SELECTOR, "tr[data-id]")) == 3)  # fmt: skip

        # a stream the server refuses (503: busy, or its stream worker restarting) is opened
        # again by the page, from the last event seen: a browser does not retry a refusal
        refusing = chrome.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
            (function () {
              var Real = window.EventSource;
              window.opened = [];
              window.EventSource = function (url) {
                window.opened.push(url);
                if (window.opened.length > 1) return new Real(url);
                var refused = {readyState: 2, lastEventId: ""};
                setTimeout(function () { refused.onerror(); }, 50);
                return refused;
              };
            })();"""})  # fmt: skip
        chrome.get(f"{base}/alerts")
        until(chrome, "live again", lambda c: "is-live" in c.find_element(
            By.TAG_NAME, "body").get_attribute("class"))  # fmt: skip
        opened = chrome.execute_script("return window.opened;")
        assert len(opened) == 2, opened
        assert opened[0] == opened[1]
        assert "/api/v1/events/stream?" in opened[1]
        chrome.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", refusing)

        # relative ages, the exact time on a tap
        age = chrome.find_element(By.CSS_SELECTOR, "tr[data-id] time")
        assert re.fullmatch(r"just now|\d+[mhd] ago", age.text), age.text
        age.click()
        assert not re.fullmatch(r"just now|\d+[mhd] ago", age.text), age.text

        # the keyboard: j moves to the first row (the critical one), o opens it, a goes to the
        # acknowledgement's comment, Enter acknowledges
        body = chrome.find_element(By.TAG_NAME, "body")
        body.send_keys("j")
        body.send_keys("o")
        until(chrome, "the critical alert's page", lambda c: "disk_full" in c.title)
        critical = chrome.current_url
        chrome.find_element(By.TAG_NAME, "body").send_keys("a")
        comment = chrome.switch_to.active_element
        assert comment.get_attribute("name") == "comment"
        comment.send_keys("on it\n")
        until(chrome, "acknowledged by alice", lambda c: "alice" in text_of(c, ".facts"))

        # snooze the warning on web-7 for 1h: a silence in Alertmanager, the row muted
        chrome.get(f"{base}/alerts?rule=high_cpu")
        click(chrome, "tr[data-id] a")
        until(chrome, "its page", lambda c: "high_cpu" in c.title)
        type_in(chrome, 'form[action$="/snooze"] input[name="comment"]', "deploying web-7")
        click(chrome, 'form[action$="/snooze"] button')
        until(chrome, "snoozed", lambda c: "Snoozed" in text_of(c, ".done"))
        silences = http_json(f"{am_url}/api/v2/silences")[1]
        [snooze] = [s for s in silences if s["status"]["state"] == "active"
                    and "deploying web-7" in s["comment"]]  # fmt: skip
        assert snooze["createdBy"] == "alice"
        assert {"name": "instance", "value": "web-7:9100", "isRegex": False,
                "isEqual": True} in snooze["matchers"]  # fmt: skip
        assert "snoozed" in text_of(chrome, ".timeline")
        chrome.get(f"{base}/alerts?rule=high_cpu")
        until(chrome, "the row muted", lambda c: "(muted)" in text_of(c, "tr[data-id]"))
        chrome.get(f"{base}/silences")
        assert "deploying web-7" in text_of(chrome, "ul.cards")
        chrome.get(f"{base}/alerts")

        pages = {"list": f"{base}/alerts", "alert": critical, "reports": f"{base}/reports",
                 "silences": f"{base}/silences", "oncall": f"{base}/oncall"}  # fmt: skip
        problems: list[str] = []
        for scheme in ("light", "dark"):
            chrome.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [
                {"name": "prefers-color-scheme", "value": scheme}]})  # fmt: skip
            for size, (width, height) in SIZES.items():
                chrome.set_window_size(width, height)
                for view, url in pages.items():
                    chrome.get(url)
                    until(chrome, f"{view} loaded", lambda c: c.execute_script(
                        "return document.readyState") == "complete")  # fmt: skip
                    chrome.save_screenshot(str(shots / f"{view}-{size}-{scheme}.png"))
                    if no_sideways_scroll(chrome) > 0:
                        problems.append(f"{view} at {size}: scrolls sideways by"
                                        f" {no_sideways_scroll(chrome)} px")  # fmt: skip
                    problems += [f"{view} at {size}, {scheme}: {v}" for v in axe_violations(chrome)]
                    if view == "alert":
                        top = chrome.execute_script(
                            "var b = document.querySelector('form[action$=\"/unack\"] button');"
                            "return b.getBoundingClientRect().bottom;")  # fmt: skip
                        if top > height:
                            problems.append(f"the alert's first action at {size} ends at y={top}")
                    if view == "list" and size == "phone":
                        cards = chrome.find_elements(By.CSS_SELECTOR, "tr[data-id]")
                        assert cards[0].value_of_css_property("display") == "grid"
                        assert not chrome.find_element(By.ID, "filters").get_attribute("open")
        # the narrowest phones (360 px) too
        chrome.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        chrome.set_window_size(360, 740)
        for view, url in pages.items():
            chrome.get(url)
            until(chrome, f"{view} loaded", lambda c: c.execute_script(
                "return document.readyState") == "complete")  # fmt: skip
            if no_sideways_scroll(chrome) > 0:
                problems.append(f"{view} at 360 px: scrolls sideways")
        assert problems == []
        # (and axe does find what is wrong: an image with no text alternative, a button with
        # no name: the check above is not vacuous)
        chrome.execute_script("document.querySelector('main').insertAdjacentHTML('beforeend',"
                              " '<img src=\"/static/app.css\"><button></button>');")  # fmt: skip
        found = axe_violations(chrome)
        assert any(v.startswith("image-alt (critical)") for v in found), found
        assert any(v.startswith("button-name (critical)") for v in found), found

        # a fresh alert's Acknowledge is inside a phone's first screen
        chrome.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        chrome.set_window_size(*SIZES["phone"])
        chrome.get(f"{base}/alerts?status=firing&acknowledged=false&rule=error_ratio")
        click(chrome, "tr[data-id] a")
        until(chrome, "its page", lambda c: "error_ratio" in c.title)
        button = chrome.find_element(By.CSS_SELECTOR, 'form[action$="/ack"] button')
        bottom = chrome.execute_script("return arguments[0].getBoundingClientRect().bottom;",
                                       button)  # fmt: skip
        assert 0 < bottom <= SIZES["phone"][1], bottom
        print(f"the Acknowledge button ends at y={bottom:.0f} of {SIZES['phone'][1]}")
        chrome.save_screenshot(str(shots / "alert-unacknowledged-phone.png"))

        # a read key's page has no action button
        click(chrome, "form.signout button")
        until(chrome, "signed out", lambda c: "/signin" in c.current_url)
        chrome.find_element(By.NAME, "token").send_keys(reader)
        chrome.find_element(By.CSS_SELECTOR, "form.signin button").click()
        until(chrome, "the list", lambda c: "/alerts" in c.current_url)
        for url in (f"{base}/alerts", critical, f"{base}/silences"):
            chrome.get(url)
            buttons = [
                (b.get_attribute("textContent") or "").strip()
                for b in chrome.find_elements(By.CSS_SELECTOR, "main button")
            ]
            assert buttons == [] or set(buttons) == {"Show"}, (url, buttons)
