"""Acknowledging from the notification: a signed link per alert and person (GET shows a
confirmation and changes nothing, as link previews and mail scanners fetch every URL; only
the page's POST acknowledges, as the person, "via link"); forged, expired, used-up links and
resolved alerts get a clear page; the copies the engine posts carry the link."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bridge.config import Secret, load_settings
from bridge.core.signing import AckLink
from bridge.core.times import NS, now_ns
from bridge.escalation import transitions
from bridge.escalation.engine import copy_body
from bridge.escalation.links import ack_links
from bridge.http.app import create_app
from bridge.http.keys import STORE
from bridge.http.oncall import signing_key
from bridge.store import open_store
from bridge.store.records import Copy
from tests.payloads import am_alert, notification
from tests.stores import stored
from tests.test_oncall import escalating

HOOK = {"Authorization": "Bearer hook-secret"}
PUBLIC = "https://bridge.example"


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> Any:
    base = load_settings(None, {}, db=str(tmp_path / "a.db"))
    server = dataclasses.replace(base.server, webhook_token=Secret("hook-secret"),
                                 api_token=Secret("api-secret"), public_url=PUBLIC)  # fmt: skip
    made = await aiohttp_client(create_app(dataclasses.replace(base, server=server),
                                           background=False))  # fmt: skip
    body = notification(am_alert("00000000000000aa", alertname="disk_full", severity="critical"))
    assert (await made.post("/api/v1/alertmanager", json=body, headers=HOOK)).status == 200
    return made


async def link_for(client: Any, person: str = "alice", expires: int | None = None,
                   alert_id: int = 1) -> str:  # fmt: skip
    """The path and query of a link as the engine makes it."""
    key = await signing_key(client.app)
    expires = expires if expires is not None else now_ns() // NS + 3600
    url = AckLink(alert_id, person, expires).url(PUBLIC, key)
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def post(client: Any, path: str, **form: str) -> Any:
    return await client.post(
        path, data=form, headers={"Origin": f"http://{client.host}:{client.port}"}
    )


async def test_a_get_confirms_and_only_the_post_acknowledges(client: Any) -> None:
    path = await link_for(client)
    for _ in range(3):  # a link preview, a mail scanner, the person opening it
        page = await client.get(path)
        assert page.status == 200
        text = await page.text()
        assert "Acknowledge as <strong>alice</strong>?" in text
        assert "disk_full" in text
    alert = await client.app[STORE].get_alert(1)
    assert alert.acked_by is None  # no GET changed anything
    done = await post(client, path, comment="on my way")
    assert done.status == 200
    assert "Acknowledged by alice" in await done.text()
    alert = await client.app[STORE].get_alert(1)
    assert (alert.acked_by, alert.ack_comment) == ("alice", "via link: on my way")
    again = await post(client, path)  # used up
    assert again.status == 409
    assert "already acknowledged" in await again.text()
    shown = await client.get(path)
    assert "acknowledged already, by alice" in await shown.text()
    assert '<form method="post"' not in await shown.text()


async def test_a_link_to_whoever_follows_it_asks_for_a_name(client: Any) -> None:
    path = await link_for(client, person="")
    page = await (await client.get(path)).text()
    assert 'name="name"' in page
    refused = await post(client, path, name="  ")
    assert refused.status == 400
    assert "Give your name" in await refused.text()
    system = await post(client, path, name="escalation")  # not a name a person may take
    assert system.status == 400
    done = await post(client, path, name="night operator")
    assert done.status == 200
    assert (await client.app[STORE].get_alert(1)).acked_by == "night operator"


async def test_forged_expired_and_misdirected_links_are_refused_with_a_page(client: Any) -> None:
    good = await link_for(client)
    cases = [
        (good.replace("person=alice", "person=mallory"), 403, "not one this bridge made"),
        (good[:-4] + "0000", 403, "not one this bridge made"),
        (good.replace("/ack/1?", "/ack/2?"), 403, "not one this bridge made"),  # other alert
        (await link_for(client, expires=now_ns() // NS - 1), 403, "has expired"),
        ("/ack/1?person=alice", 403, "incomplete"),
        (await link_for(client, alert_id=99), 404, "no alert with id 99"),
    ]
    for path, status, said in cases:
        for response in (await client.get(path), await post(client, path)):
            assert response.status == status, path
            assert said in await response.text(), path
    assert (await client.app[STORE].get_alert(1)).acked_by is None


async def test_a_resolved_alert_has_nothing_to_acknowledge(client: Any) -> None:
    path = await link_for(client)
    body = notification(am_alert("00000000000000aa", alertname="disk_full", severity="critical",
                                 status="resolved", ends_at="2026-11-23T11:00:00Z"))  # fmt: skip
    assert (await client.post("/api/v1/alertmanager", json=body, headers=HOOK)).status == 200
    page = await client.get(path)
    assert "is resolved: nothing to acknowledge" in await page.text()
    assert (await post(client, path)).status == 409


async def test_the_copies_carry_the_link_for_their_person(tmp_path: Path) -> None:
    """One person paged: the link is theirs; receivers or several people: whoever follows
    it. Its validity runs from the copy's start, so a repost carries the same link."""
    settings = escalating(tmp_path)
    store = open_store(str(tmp_path / "l.db"))
    await store.start()
    try:
        links = await ack_links(store, PUBLIC, 3600)
        assert links is not None
        assert await ack_links(store, None, 3600) is None  # no public URL: no links
        alert = stored(id=5)
        esc = transitions.start(5, settings.escalation.policy("oncall"), "high", 0, 0)
        one = Copy(0, 1, 1_800_000_000 * NS, (), people=("bob",))
        url = copy_body(alert, esc, one, 0, links)["annotations"]["alertbridge_ack_url"]
        assert url.startswith(f"{PUBLIC}/ack/5?person=bob&exp=1800003600&sig=")
        assert copy_body(alert, esc, one, 99, links)["annotations"]["alertbridge_ack_url"] == url
        many = Copy(0, 1, 0, ("ops",), people=("alice", "bob"))
        assert (
            "person=&"
            in copy_body(alert, esc, many, 0, links)["annotations"]["alertbridge_ack_url"]
        )
        assert "alertbridge_ack_url" not in copy_body(alert, esc, one, 0)["annotations"]
    finally:
        await store.close()
