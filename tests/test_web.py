"""The operators' page over HTTP: sign-in and sessions, the list and an alert's page, the
actions with their CSRF tokens, escaping of what alerts carry, and what a read key, a revoked
key, a cross-site form and a signed-out browser get. In a real browser:
tests/test_e2e_browser.py."""

from __future__ import annotations

import dataclasses
import html
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.config import Secret, load_settings
from bridge.core.times import parse_rfc3339
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
    assert 'aria-label="Actions"' not in alert
    assert "Signed in with a read key" in alert
    await sign_in(client, tokens["root"])  # a write key: the same pages have them
    listing = await (await client.get("/alerts")).text()
    alert = await (await client.get("/alerts/1")).text()
    assert "Acknowledge selected" in listing
    assert 'form="bulk"' in listing
    assert 'aria-label="Actions"' in alert


async def test_bulk_acknowledge_of_a_selection(site: Any) -> None:
    client, tokens = site
    await sign_in(client, tokens["root"])
    csrf = await csrf_of(client)
    form = [("csrf", csrf), ("id", "1"), ("id", "2"), ("comment", "on it"),
            ("back", "/alerts?status=firing&acked=9")]  # fmt: skip
    # first the confirmation: what would be acknowledged, nothing done yet
    asked = await client.post("/alerts/ack", allow_redirects=False, data=form)
    assert asked.status == 200
    page = await asked.text()
    assert "Acknowledge 2 alerts?" in page
    assert re.findall(r'<li><a href="/alerts/(\d+)">', page) == ["1", "2"]
    assert f"CPU {html.escape(MARKUP)} hot" in page  # a summary's markup is text here too
    assert 'name="confirm" value="yes"' in page

    async def acked() -> list[int]:
        listed = await client.get("/api/v1/alerts", params={"acknowledged": "true"},
                                  headers=_bearer(tokens["root"]))  # fmt: skip
        return sorted(a["id"] for a in (await listed.json())["alerts"])

    assert await acked() == []
    done = await client.post("/alerts/ack", allow_redirects=False,
                             data=[*form, ("confirm", "yes")])  # fmt: skip
    assert (done.status, done.headers["Location"]) == (303, "/alerts?status=firing&acked=1,2")
    assert await acked() == [1, 2]
    # the list says so and offers the undo
    listing = await (await client.get(done.headers["Location"])).text()
    assert "Acknowledged 2 alerts: #1, #2." in listing
    assert 'action="/alerts/unack"' in listing
    undone = await client.post("/alerts/unack", allow_redirects=False, data=[
        ("csrf", csrf), ("id", "1"), ("id", "2"), ("back", done.headers["Location"])])  # fmt: skip
    assert (undone.status, undone.headers["Location"]) == (303, "/alerts?status=firing&unacked=1,2")
    assert await acked() == []
    listing = await (await client.get(undone.headers["Location"])).text()
    assert "Undone: the acknowledgement of 2 alerts: #1, #2." in listing
    assert 'action="/alerts/unack"' not in listing
    events = await (await client.get("/api/v1/alerts/1", headers=_bearer(tokens["root"]))).json()
    assert [(e["kind"], e["actor"]) for e in events["events"]][-2:] == [
        ("acknowledged", "root"), ("unacknowledged", "root")]  # fmt: skip
    # each on its own: one already acknowledged or resolved does not stop the others
    await client.post("/alerts/ack", data=[*form[:2], ("confirm", "yes")])
    partly = await client.post("/alerts/ack", data=[("csrf", csrf), ("id", "1"), ("id", "3"),
                                                    ("confirm", "yes")])  # fmt: skip
    assert partly.status == 409
    text = await partly.text()
    assert "acknowledged 0" in text
    assert "already acknowledged" in text
    assert await acked() == [1]
    for data, status, said in [
        ([("csrf", csrf)], 400, "Select at least one alert"),
        ([("csrf", csrf), ("id", "x")], 400, "id"),
        ([("csrf", csrf), ("id", "77")], 404, "None of the selected alerts exists"),
        ([("csrf", csrf)] + [("id", str(n)) for n in range(501)], 400, "At most 500"),
        ([("id", "2"), ("confirm", "yes")], 403, "CSRF"),
    ]:
        refused = await client.post("/alerts/ack", data=data)
        assert refused.status == status, data[:3]
        assert said in await refused.text()
    assert await acked() == [1]


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


# --- snooze, silences, escalation buttons, the header (issue 34) ------------------------------


@pytest.fixture
async def with_am(aiohttp_client: MakeClient, aiohttp_server: Any,
                  tmp_path: Path) -> tuple[Client, dict[str, str], list[Any]]:  # fmt: skip
    """A bridge whose Alertmanager is a stand-in keeping the silences it is sent (the real
    one: tests/test_e2e_browser.py), and one firing alert."""
    from aiohttp import web

    kept: list[Any] = []

    async def post(request: web.Request) -> web.Response:
        body = await request.json()
        body["id"] = f"5111e{len(kept):03d}"
        body["status"] = {"state": "active"}
        kept.append(body)
        return web.json_response({"silenceID": body["id"]})

    async def listing(request: web.Request) -> web.Response:
        old = {"id": "0ld", "status": {"state": "expired"}, "matchers": []}
        return web.json_response([*kept, old])

    async def expire(request: web.Request) -> web.Response:
        for s in kept:
            if s["id"] == request.match_info["id"]:
                s["status"]["state"] = "expired"
                return web.Response()
        if request.match_info["id"] == "b00":
            return web.Response(status=500, text="boom")
        return web.Response(status=500, text="silence not found")

    stand_in = web.Application()
    stand_in.router.add_post("/api/v2/silences", post)
    stand_in.router.add_get("/api/v2/silences", listing)
    stand_in.router.add_delete("/api/v2/silence/{id}", expire)
    am = await aiohttp_server(stand_in)
    path = tmp_path / "keys.json"
    tokens = {n: apikeys.add(path, n, r)[1] for n, r in (("rita", "read"), ("root", "write"))}
    env = {"ALERTBRIDGE_KEYS_FILE": str(path),
           "ALERTBRIDGE_ALERTMANAGER_URL": str(am.make_url("/"))}  # fmt: skip
    base = load_settings(None, env, db=str(tmp_path / "a.db"))
    server = dataclasses.replace(base.server, webhook_token=Secret("hook-secret"))
    client = await aiohttp_client(create_app(dataclasses.replace(base, server=server),
                                             background=False))  # fmt: skip
    payload = notification(am_alert("0000000000000001", instance="db-1"))
    assert (await client.post("/api/v1/alertmanager", json=payload, headers=HOOK)).status == 200
    return client, tokens, kept


async def test_snooze_silences_the_alert_in_alertmanager_and_says_so(with_am: Any) -> None:
    client, tokens, kept = with_am
    await sign_in(client, tokens["root"])
    page = await (await client.get("/alerts/1")).text()
    assert 'action="/alerts/1/snooze"' in page
    csrf = await csrf_of(client, "/alerts/1")
    done = await client.post(
        "/alerts/1/snooze",
        allow_redirects=False,
        data={"csrf": csrf, "for": "4h", "comment": "deploy window"},
    )
    assert (done.status, done.headers["Location"]) == (303, "/alerts/1?done=snooze")
    [silence] = kept
    assert silence["createdBy"] == "root"
    assert silence["comment"] == "snoozed from alertbridge (alert 1) for 4h: deploy window"
    matchers = {m["name"]: m["value"] for m in silence["matchers"]}
    assert matchers["instance"] == "db-1"
    length = parse_rfc3339(silence["endsAt"]) - parse_rfc3339(silence["startsAt"])  # type: ignore[operator]
    assert length == 4 * 3600 * 10**9
    detail = await (await client.get("/api/v1/alerts/1", headers=_bearer(tokens["root"]))).json()
    last = detail["events"][-1]
    assert (last["kind"], last["actor"]) == ("snoozed", "root")
    assert "silence 5111e000" in last["detail"]
    assert last["detail"].endswith(": deploy window")
    assert detail["acked_by"] is None  # a snooze is not an acknowledgement
    shown = await (await client.get("/alerts/1?done=snooze")).text()
    assert "Snoozed: the silence is in Alertmanager" in shown
    # the silences page lists it (not the expired one), linked to its alert, and expires it
    listing = await (await client.get("/silences")).text()
    assert 'data-silence="5111e000"' in listing
    assert 'data-silence="0ld"' not in listing
    assert "instance=&#34;db-1&#34;" in listing
    assert '<a href="/alerts/1">#1</a>' in listing
    gone = await client.post("/silences/5111e000/expire", data={"csrf": csrf},
                             allow_redirects=False)  # fmt: skip
    assert (gone.status, gone.headers["Location"]) == (303, "/silences?expired=5111e000")
    assert silence["status"]["state"] == "expired"
    assert "No silence is active or pending" in await (await client.get("/silences")).text()
    # what a person gets wrong, said on the page; nothing sent
    for path, data, status, said in [
        ("/alerts/1/snooze", {"for": "forever"}, 422, "expected a duration"),
        ("/alerts/1/snooze", {"for": "30s"}, 422, "from 1m to 7d"),
        ("/alerts/1/snooze", {"for": "8d"}, 422, "from 1m to 7d"),
        ("/alerts/9/snooze", {"for": "1h"}, 404, "9"),
        ("/silences/not%20an%20id/expire", {}, 400, "Not a silence id"),
        ("/silences/b00/expire", {}, 502, "boom"),
    ]:
        refused = await client.post(path, data={"csrf": csrf, **data})
        assert refused.status == status, (path, data)
        assert said in await refused.text()
    assert len(kept) == 1
    # a read key sees the silences, and no button
    await sign_in(client, tokens["rita"])
    assert "Expire" not in await (await client.get("/silences")).text()
    assert 'action="/alerts/1/snooze"' not in await (await client.get("/alerts/1")).text()


async def test_without_alertmanager_snooze_and_silences_say_why(site: Any) -> None:
    client, tokens = site
    await sign_in(client, tokens["root"])
    csrf = await csrf_of(client, "/alerts/1")
    refused = await client.post("/alerts/1/snooze", data={"csrf": csrf, "for": "1h"})
    assert refused.status == 409
    assert "No Alertmanager is configured" in await refused.text()
    assert "No Alertmanager is configured" in await (await client.get("/silences")).text()
    resolved = await client.post("/alerts/3/snooze", data={"csrf": csrf, "for": "1h"})
    assert resolved.status == 409  # (checked before Alertmanager is asked)


async def test_the_list_is_cards_ready_with_filters_behind_one_control(site: Any) -> None:
    client, tokens = site
    await sign_in(client, tokens["root"])
    page = await (await client.get("/alerts?severity=critical&status=firing")).text()
    assert '<details class="filterbox" id="filters">' in page
    assert "<summary>Filters (2 on)</summary>" in page
    for cell in ("c-sev", "c-age", "c-sum", "c-state", "c-ack"):
        assert f'class="{cell}' in page
    assert "data-rel" in page  # ages made relative by the script, the exact time kept
    grouped = await (await client.get("/alerts?group=rule")).text()
    # groups in the list's order (attention: the critical disk_full first), not by name
    assert grouped.index("disk_full (1)") < grouped.index("high_cpu (2)")
