"""The operators' page in a real browser: Debian's headless Chromium driven by Selenium, on a
real bridge beside a real Alertmanager. Sign in; an alert sent by webhook appears in the list
without a reload; acknowledge it and see its silence in Alertmanager; add a note; search;
bulk-acknowledge; the phone width; sign out. Screenshots go to the test's directory
(screenshots/), to be looked at."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
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
    return str(chrome.find_element(By.CSS_SELECTOR, css).text)


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
        until(chrome, "none left", lambda c: "No alert matches" in text_of(c, "table.alerts"))
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
