"""A page in the operator's browser cannot use the API: requests for a foreign Host name are
refused (DNS rebinding), so are state-changing requests from another origin (cross-site
request forgery) and JSON endpoints fed another Content-Type."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from bridge.config import load_settings
from bridge.http.keys import STORE
from bridge.http.util import allowed_hosts, host_allowed, host_name
from bridge.store import AlertQuery
from tests.httpraw import guarded_server, raw_request, request_bytes
from tests.payloads import am_alert, notification

WEBHOOK = json.dumps(notification(am_alert())).encode()
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def open_server(tmp_path: Path) -> Any:
    """The loopback default: no tokens at all, so only these checks stand in the way."""
    async with guarded_server(load_settings(None, {}, db=str(tmp_path / "a.db"))) as running:
        yield running


async def stored(server: Any) -> int:
    return len(await server.app[STORE].list_alerts(AlertQuery()))


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/api/v1/alertmanager", WEBHOOK, {"Content-Type": "text/plain"}),
        ("/api/v1/alertmanager", WEBHOOK, {**JSON, "Origin": "https://evil.example"}),
        ("/api/v1/alertmanager", WEBHOOK, {**JSON, "Origin": "null"}),
        ("/api/v1/alertmanager", WEBHOOK, {**JSON, "Sec-Fetch-Site": "cross-site"}),
        ("/api/v1/telemetry", b'{"documents": 5}', {"Content-Type": "text/plain"}),
        ("/api/v1/telemetry", b'{"documents": 5}',
         {"Content-Type": "application/x-www-form-urlencoded"}),
        ("/api/v1/alerts/1/ack", b"", {"Origin": "http://evil.example:9470"}),
        ("/api/v1/alerts/1/ack", b'{"by": "x"}', {**JSON, "Origin": "http://127.0.0.1:1"}),
    ],
)  # fmt: skip
async def test_browser_style_cross_site_posts_are_refused(
    open_server: Any, path: str, body: bytes, headers: dict[str, str]
) -> None:
    """What a foreign page can make a browser send (a simple form or text/plain POST, or a
    fetch with its Origin) is refused with 403 or 415 and changes nothing."""
    await raw_request(open_server.port, request_bytes("POST", "/api/v1/alertmanager", WEBHOOK,
                                                      JSON))  # fmt: skip
    answer = await raw_request(open_server.port, request_bytes("POST", path, body, headers))
    assert answer.status in (403, 415), answer.body
    assert answer.json()["error"] in ("cross_origin", "unsupported_media_type")
    assert await stored(open_server) == 1
    detail = await raw_request(open_server.port, request_bytes("GET", "/api/v1/alerts/1"))
    assert detail.json()["acked_at"] is None


@pytest.mark.parametrize("host", ["evil.example", "evil.example:9470", "127.0.0.1.evil.example"])
async def test_foreign_host_names_are_refused(open_server: Any, host: str) -> None:
    """A DNS-rebound page reaches us with its own name as Host: nothing is served to it."""
    for path in ("/api/v1/alerts", "/api/v1/status", "/metrics"):
        answer = await raw_request(open_server.port, request_bytes("GET", path, host=host))
        assert answer.status == 403
        assert answer.json()["error"] == "host_not_allowed"


@pytest.mark.parametrize(
    "host", ["127.0.0.1:9470", "localhost:9470", "LOCALHOST", "[::1]:9470", "10.1.2.3",
             "app.localhost", ""],
)  # fmt: skip
async def test_addresses_and_localhost_are_served(open_server: Any, host: str) -> None:
    """IP literals cannot be rebound, localhost is ours: served as before."""
    answer = await raw_request(open_server.port, request_bytes("GET", "/api/v1/alerts", host=host))
    assert answer.status == 200


async def test_same_origin_requests_with_the_token_work(tmp_path: Path) -> None:
    """A same-origin POST (Origin equal to Host) with the token acts; a configured name is
    served."""
    base = load_settings(None, {}, db=str(tmp_path / "a.db"))
    settings = dataclasses.replace(
        base, server=dataclasses.replace(base.server, allowed_hosts=("bridge.example",))
    )
    async with guarded_server(settings) as server:
        await raw_request(server.port, request_bytes("POST", "/api/v1/alertmanager", WEBHOOK,
                                                     JSON))  # fmt: skip
        origin = {"Origin": "http://bridge.example:9470", **JSON}
        answer = await raw_request(
            server.port,
            request_bytes("POST", "/api/v1/alerts/1/ack", b'{"by": "ann"}', origin,
                          host="bridge.example:9470"),
        )  # fmt: skip
        assert answer.status == 200, answer.body
        assert answer.json()["acked_by"] == "ann"


def test_host_names_of_the_generated_configs_are_allowed() -> None:
    """Alertmanager's webhook URL and Prometheus's scrape target name us: those names pass."""
    hosts = allowed_hosts(["Extra.Example."], ["http://bridge:9470/api/v1/alertmanager",
                                               "alertbridge.monitoring.svc:9470"])  # fmt: skip
    assert hosts == {"extra.example", "bridge", "alertbridge.monitoring.svc"}
    assert host_allowed("bridge:9470", hosts)
    assert not host_allowed("other:9470", hosts)
    assert host_allowed("anything", frozenset({"*"}))
    assert host_name("[fe80::1%eth0]:80") == "fe80::1%eth0"
