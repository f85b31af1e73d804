"""The operators' page over HTTP: sign-in and sessions, the list and an alert's page, the
actions with their CSRF tokens, escaping of what alerts carry, and what a read key, a revoked
key, a cross-site form and a signed-out browser get. In a real browser:
tests/test_e2e_browser.py."""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.config import Secret, load_settings
from bridge.host import apikeys
from bridge.http.app import create_app
from bridge.http.keys import KEYRING, SESSIONS
from bridge.http.pages import CSP
from bridge.http.sessions import COOKIE
from tests.payloads import am_alert, notification

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
HOOK = {"Authorization": "Bearer hook-secret"}
MARKUP = "<script>alert(1)</script>"
#: Sign-ins the site takes (these tests sign in often; test_sign_in_is_rate_limited the few).
SIGNINS = "1000/minute"


@pytest.fixture
async def site(aiohttp_client: MakeClient, tmp_path: Path) -> tuple[Client, dict[str, str]]:
    """A bridge with keys for rita (read), root (write), the shared token "shared", and three
    alerts: 1 carries markup in a label and its summary, 2 is critical, 3 resolved."""
    path = tmp_path / "keys.json"
    tokens = {n: apikeys.add(path, n, r)[1] for n, r in (("rita", "read"), ("root", "write"))}
    base = load_settings(None, {"ALERTBRIDGE_KEYS_FILE": str(path)}, db=str(tmp_path / "a.db"))
    server = dataclasses.replace(base.server, webhook_token=Secret("hook-secret"),
                                 api_token=Secret("shared"), signin_attempts=SIGNINS)  # fmt: skip
    client = await aiohttp_client(
        create_app(dataclasses.replace(base, server=server), background=False)
    )
    marked = am_alert("0000000000000001", instance=MARKUP)
    marked["annotations"]["summary"] = f"CPU {MARKUP} hot"
    payload = notification(
        marked,
        am_alert("0000000000000002", alertname="disk_full", severity="critical"),
        am_alert("0000000000000003", "resolved", ends_at="2026-11-23T10:10:00Z"),
    )
    assert (await client.post("/api/v1/alertmanager", json=payload, headers=HOOK)).status == 200
    return client, tokens


async def sign_in(client: Client, token: str, name: str = "") -> None:
    client.session.cookie_jar.clear()
    response = await client.post("/signin", data={"token": token, "name": name, "next": "/alerts"},
                                 allow_redirects=False)  # fmt: skip
    assert response.status == 303, await response.text()


async def csrf_of(client: Client, path: str = "/alerts") -> str:
    text = await (await client.get(path)).text()
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found, text[:500]
    return found[1]


async def test_without_a_session_the_page_sends_you_to_sign_in(site: Any) -> None:
    client, _ = site
    response = await client.get("/alerts?status=firing", allow_redirects=False)
    assert response.status == 303
    location = urllib.parse.urlsplit(response.headers["Location"])
    assert location.path == "/signin"
    assert urllib.parse.parse_qs(location.query) == {"next": ["/alerts?status=firing"]}
    post = await client.post("/alerts/1/ack", data={"csrf": "x"}, allow_redirects=False)
    assert post.status == 403
    assert "sign in again" in await post.text()


async def test_signing_in_with_a_key_sets_a_strict_session_cookie(site: Any) -> None:
    client, tokens = site
    response = await client.post("/signin", data={"token": tokens["root"], "next": "/alerts/2"},
                                 allow_redirects=False)  # fmt: skip
    assert response.status == 303
    assert response.headers["Location"] == "/alerts/2"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert tokens["root"] not in cookie  # the cookie is a session id, not the key
    page = await client.get("/alerts")
    assert page.status == 200
    assert "root (write)" in await page.text()


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"token": "abk_wrong"}, "not a key of this bridge"),
        ({"token": "shared"}, "say who you are"),
        ({"token": ""}, "not a key of this bridge"),
    ],
)
async def test_a_bad_sign_in_says_why(site: Any, form: dict[str, str], message: str) -> None:
    client, _ = site
    response = await client.post("/signin", data=form)
    assert response.status == 401
    assert message in await response.text()
    assert COOKIE not in response.cookies


async def test_sign_in_never_redirects_off_the_site(site: Any) -> None:
    client, tokens = site
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example",
                   "/\t/evil.example", "/\n/evil.example", "/\r/evil.example",
                   " //evil.example", "\x00//evil.example", "/\\/evil.example",
                   "javascript:alert(1)", "/%09/evil.example"):  # fmt: skip
        response = await client.post("/signin", data={"token": tokens["root"], "next": target},
                                     allow_redirects=False)  # fmt: skip
        location = response.headers["Location"]
        assert location in ("/alerts", "/%09/evil.example"), (target, location)
        assert not location.startswith("//"), target
    # From a plain link: the sign-in page's form carries the same normalised target.
    page = await (await client.get("/signin?next=/%09/evil.example")).text()
    assert 'value="//' not in page
    kept = await client.post("/signin", data={"token": tokens["root"], "next": "/alerts/2?x=1"},
                             allow_redirects=False)  # fmt: skip
    assert kept.headers["Location"] == "/alerts/2?x=1"


async def test_a_key_signing_in_again_and_again_signs_nobody_else_out(site: Any) -> None:
    """Sessions are capped per key, its own oldest going first: a read key signing in 60
    times leaves the operator's session alone, and keeps at most 20 of its own."""
    client, tokens = site
    await sign_in(client, tokens["root"])
    operator = client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value
    first_of_rita = None
    for n in range(60):
        response = await client.post("/signin", data={"token": tokens["rita"], "next": "/"},
                                     allow_redirects=False)  # fmt: skip
        assert response.status == 303
        if n == 0:
            first_of_rita = response.cookies[COOKIE].value
    sessions = client.app[SESSIONS]
    assert sessions.get(operator) is not None
    assert sessions.get(first_of_rita) is None
    assert len(sessions) == 1 + 20


async def test_a_full_session_table_refuses_the_newcomer(site: Any) -> None:
    """When every slot holds someone's live session, a sign-in is refused (503), nobody is
    signed out."""
    client, tokens = site
    client.app[SESSIONS].limit = 1
    await sign_in(client, tokens["root"])
    response = await client.post("/signin", data={"token": tokens["rita"], "next": "/"},
                                 allow_redirects=False)  # fmt: skip
    assert response.status == 503
    assert "Too many people are signed in" in await response.text()
    assert len(client.app[SESSIONS]) == 1


async def test_every_page_has_a_strict_csp_and_markup_stays_text(site: Any) -> None:
    client, tokens = site
    await sign_in(client, tokens["rita"])
    for path in ("/alerts", "/alerts/1", "/signin", "/alerts/rows", "/alerts/1/timeline"):
        response = await client.get(path)
        assert response.status == 200, path
        assert response.headers["Content-Security-Policy"] == CSP
        text = await response.text()
        assert "<script>alert" not in text, path
    listed = await (await client.get("/alerts")).text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in listed
    assert "script-src 'self'" in CSP
    assert "'unsafe-inline'" not in CSP


async def test_acting_from_the_page_is_audited_as_the_key(site: Any) -> None:
    client, tokens = site
    await sign_in(client, tokens["root"])
    csrf = await csrf_of(client, "/alerts/2")
    done = await client.post("/alerts/2/ack", data={"csrf": csrf, "comment": "looking"},
                             allow_redirects=False)  # fmt: skip
    assert (done.status, done.headers["Location"]) == (303, "/alerts/2")
    noted = await client.post("/alerts/2/note", data={"csrf": csrf, "text": "disk <b>sdb</b>"})
    assert noted.status == 200
    text = await noted.text()
    assert "acknowledged</strong> by root" in text
    assert "disk &lt;b&gt;sdb&lt;/b&gt;" in text
    again = await client.post("/alerts/2/ack", data={"csrf": csrf})
    assert again.status == 409
    assert "already acknowledged by root" in await again.text()
    for action, fields in (("assign", {"assignee": "bob"}), ("unack", {}), ("resolve", {})):
        response = await client.post(f"/alerts/2/{action}", data={"csrf": csrf, **fields})
        assert response.status == 200, action
    detail = await (await client.get("/api/v1/alerts/2", headers=_bearer(tokens["root"]))).json()
    assert detail["assignee"] == "bob"
    assert detail["status"] == "resolved"
    assert {e["actor"] for e in detail["events"][1:]} == {"root"}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_forms_without_the_csrf_token_or_from_elsewhere_are_refused(site: Any) -> None:
    client, tokens = site
    await sign_in(client, tokens["root"])
    csrf = await csrf_of(client)
    for data, headers in (
        ({}, {}),
        ({"csrf": "forged"}, {}),
        ({"csrf": csrf}, {"Origin": "http://evil.example"}),
        ({"csrf": csrf}, {"Sec-Fetch-Site": "cross-site"}),
    ):
        response = await client.post("/alerts/1/ack", data=data, headers=headers)
        assert response.status == 403, (data, headers)
    detail = await (await client.get("/api/v1/alerts/1", headers=_bearer(tokens["root"]))).json()
    assert detail["acked_by"] is None


async def test_a_read_key_may_look_but_not_act(site: Any) -> None:
    client, tokens = site
    await sign_in(client, tokens["rita"])
    csrf = await csrf_of(client)
    response = await client.post("/alerts/1/ack", data={"csrf": csrf})
    assert response.status == 403
    assert "role read" in await response.text()
    bulk = await client.post("/alerts/ack", data={"csrf": csrf, "id": "1"})
    assert bulk.status == 403
    detail = await (await client.get("/api/v1/alerts/1", headers=_bearer(tokens["rita"]))).json()
    assert detail["acked_by"] is None
    # ... and is shown no button it cannot use (the forms would answer 403 "Not done")
    listing = await (await client.get("/alerts")).text()
    alert = await (await client.get("/alerts/1")).text()
    rows = await (await client.get("/alerts/rows")).text()
    assert "Acknowledge selected" not in listing
    assert 'form="bulk"' not in listing + rows
    assert "<h3>Act</h3>" not in alert
    assert "Signed in with a read key" in alert
    await sign_in(client, tokens["root"])  # a write key: the same pages have them
    listing = await (await client.get("/alerts")).text()
    alert = await (await client.get("/alerts/1")).text()
    assert "Acknowledge selected" in listing
    assert 'form="bulk"' in listing
    assert "<h3>Act</h3>" in alert


async def test_bulk_acknowledge_of_a_selection(site: Any) -> None:
    client, tokens = site
    await sign_in(client, tokens["root"])
    csrf = await csrf_of(client)
    done = await client.post("/alerts/ack", allow_redirects=False, data=[
        ("csrf", csrf), ("id", "1"), ("id", "2"), ("comment", "on it"),
        ("back", "/alerts?status=firing")])  # fmt: skip
    assert (done.status, done.headers["Location"]) == (303, "/alerts?status=firing")
    partly = await client.post("/alerts/ack", data=[("csrf", csrf), ("id", "1"), ("id", "3"),
                                                    ("id", "x")])  # fmt: skip
    assert partly.status == 409
    text = await partly.text()
    assert "acknowledged 0" in text
    assert "already acknowledged" in text
    listed = await client.get("/api/v1/alerts", params={"acknowledged": "true"},
                              headers=_bearer(tokens["root"]))  # fmt: skip
    assert sorted(a["id"] for a in (await listed.json())["alerts"]) == [1, 2]


async def test_list_filters_search_and_grouping(site: Any) -> None:
    client, tokens = site
    await sign_in(client, tokens["root"])
    csrf = await csrf_of(client)
    await client.post("/alerts/2/note", data={"csrf": csrf, "text": "replaced the SSD"})

    async def shown(query: str) -> list[str]:
        text = await (await client.get(f"/alerts?{query}")).text()
        return re.findall(r'<a href="/alerts/(\d+)">', text)

    assert await shown("") == ["2", "1", "3"]  # attention order: critical first
    assert await shown("status=firing") == ["2", "1"]
    assert await shown("severity=critical") == ["2"]
    assert await shown("q=ssd") == ["2"]
    assert await shown("q=HOT") == ["1"]
    assert await shown("rule=disk_full") == ["2"]
    grouped = await (await client.get("/alerts?group=rule")).text()
    assert "disk_full (1)" in grouped
    assert "high_cpu (2)" in grouped
    bad = await client.get("/alerts?filter=team%3D~%22(%22")
    assert bad.status == 400
    assert "bad regular expression" in await bad.text()


async def test_signing_out_and_revoking_end_the_session(site: Any) -> None:
    client, tokens = site
    await sign_in(client, tokens["root"])
    csrf = await csrf_of(client)
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value
    out = await client.post("/signout", data={"csrf": csrf}, allow_redirects=False)
    assert out.status == 303
    client.session.cookie_jar.update_cookies({COOKIE: cookie})  # a copy kept does not work
    assert (await client.get("/alerts", allow_redirects=False)).status == 303
    await sign_in(client, tokens["root"])
    assert (await client.get("/alerts", allow_redirects=False)).status == 200
    ring = client.app[KEYRING]
    apikeys.revoke(ring.path, "root")
    ring._checked = 0.0  # the next request looks at the file now
    assert (await client.get("/alerts", allow_redirects=False)).status == 303
    assert (await client.get("/api/v1/events/stream")).status == 401


async def test_the_shared_token_signs_in_with_a_name_and_acts_as_it(site: Any) -> None:
    client, _ = site
    await sign_in(client, "shared", name="carol")
    csrf = await csrf_of(client)
    await client.post("/alerts/1/ack", data={"csrf": csrf})
    detail = await (await client.get("/api/v1/alerts/1", headers=_bearer("shared"))).json()
    assert detail["acked_by"] == "carol"


async def test_the_cookie_reads_the_api_but_never_writes_it(site: Any) -> None:
    client, tokens = site
    await sign_in(client, tokens["root"])
    assert (await client.get("/api/v1/alerts")).status == 200
    stream = await client.get("/api/v1/events/stream")
    assert stream.status == 200
    stream.close()
    refused = await client.post("/api/v1/alerts/1/ack", json={})
    assert refused.status == 401


async def test_an_alerts_page_shows_what_was_clipped_and_grafanas_links(site: Any) -> None:
    """A clipped alert says what was cut; a Grafana alert's links are links (http and https
    only: a javascript: URL stays text) and its values are shown."""
    client, tokens = site
    big = am_alert("0000000000000004", pod="p" * 5000)
    assert (await client.post("/api/v1/alertmanager", json=notification(big),
                              headers=HOOK)).status == 200  # fmt: skip
    grafana = {**notification(am_alert("0000000000000005", alertname="g")), "version": "1"}
    grafana["alerts"][0].update(dashboardURL="https://grafana.example/d/x",
                                panelURL="javascript:alert(1)", values={"B": 42.5})  # fmt: skip
    assert (await client.post("/api/v1/alertmanager", json=grafana, headers=HOOK)).status == 200
    await sign_in(client, tokens["rita"])
    clipped = await (await client.get("/alerts/4")).text()
    assert "cut to the limits: labels.pod" in clipped
    page = await (await client.get("/alerts/5")).text()
    assert '<a href="https://grafana.example/d/x"' in page
    assert 'href="javascript:' not in page
    assert "B=42.5" in page


async def test_sign_in_and_wrong_tokens_are_rate_limited(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """Past server.signin_attempts from an address (or for a key), a sign-in is 429 with
    Retry-After, counted; past server.token_failures wrong bearer tokens from an address,
    so is the API; a right token still works."""
    keys = tmp_path / "keys.json"
    _, token = apikeys.add(keys, "rita", "read")
    base = load_settings(None, {"ALERTBRIDGE_KEYS_FILE": str(keys)}, db=str(tmp_path / "a.db"))
    server = dataclasses.replace(base.server, signin_attempts="3/minute",
                                 token_failures="2/minute")  # fmt: skip
    client = await aiohttp_client(create_app(dataclasses.replace(base, server=server),
                                             background=False))  # fmt: skip
    statuses = []
    for _ in range(4):
        response = await client.post("/signin", data={"token": "abk_wrong", "next": "/"},
                                     allow_redirects=False)  # fmt: skip
        statuses.append(response.status)
    assert statuses == [401, 401, 401, 429]
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert "Too many sign-ins" in await response.text()
    api = [await client.get("/api/v1/alerts", headers={"Authorization": "Bearer abk_no"})
           for _ in range(3)]  # fmt: skip
    assert [r.status for r in api] == [401, 401, 429]
    assert (await api[-1].json())["error"] == "too_many_attempts"
    assert "Retry-After" in api[-1].headers
    good = await client.get("/api/v1/alerts", headers={"Authorization": f"Bearer {token}"})
    assert good.status == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'alertbridge_attempts_limited_total{what="signin"} 1.0' in metrics
    assert 'alertbridge_attempts_limited_total{what="token"} 1.0' in metrics


async def test_an_alerts_page_links_its_runbook_and_dashboard(site: Any) -> None:
    """The runbook_url and dashboard_url annotations Prometheus rules conventionally carry
    become links; a URL that is not http(s) stays text (no javascript: link)."""
    client, tokens = site
    alert = am_alert("0000000000000009", alertname="disk_full")
    alert["annotations"] |= {"runbook_url": "https://wiki.example/disk",
                             "dashboard_url": "javascript:alert(1)"}  # fmt: skip
    response = await client.post("/api/v1/alertmanager", json=notification(alert), headers=HOOK)
    assert response.status == 200
    await sign_in(client, tokens["root"])
    page = await (await client.get("/alerts/4")).text()
    assert ('<dt>Runbook</dt><dd><a href="https://wiki.example/disk" rel="noopener noreferrer">'
            in page)  # fmt: skip
    assert 'href="javascript:' not in page
