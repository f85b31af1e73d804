"""Hostile and broken requests against the real server: each client error is a JSON 4xx
naming the problem, never a 500, never a traceback in the log, and changes nothing."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from bridge.http.keys import STORE
from bridge.store import AlertQuery
from tests.httpraw import (
    API_TOKEN,
    WEBHOOK_TOKEN,
    Running,
    guarded_server,
    raw_request,
    request_bytes,
    settings_for,
)
from tests.payloads import am_alert, notification

API = {"Authorization": f"Bearer {API_TOKEN}"}
HOOK = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}
JSON = {"Content-Type": "application/json"}
BIG = str(2**63)
HUGE = "9" * 5000


def webhook_with(**edits: Any) -> bytes:
    alert = am_alert()
    alert.update(edits)
    return json.dumps(notification(alert)).encode()


def chunked(body: bytes) -> bytes:
    return f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"


# (name, request bytes, expected status, expected error code, expected field or None)
CASES: list[tuple[str, bytes, int, str, str | None]] = [
    ("non-UTF-8 byte in Authorization", request_bytes(
        "GET", "/api/v1/alerts", headers={"Authorization": "Bearer \udcff\udcfe"}),
     401, "unauthorized", None),
    ("non-UTF-8 byte in the webhook's Authorization", request_bytes(
        "POST", "/api/v1/alertmanager", webhook_with(),
        {"Authorization": "Basic \udcff", "Content-Type": "application/json"}),
     401, "unauthorized", None),
    ("alert id 2^63", request_bytes("GET", f"/api/v1/alerts/{BIG}", headers=API),
     400, "invalid_input", "id"),
    ("alert id of 5000 digits", request_bytes("GET", f"/api/v1/alerts/{HUGE}", headers=API),
     400, "invalid_input", "id"),
    ("alert id in Arabic-Indic digits", request_bytes(
        "POST", "/api/v1/alerts/%D9%A1/ack", b'{"by": "x"}', {**API, **JSON}),
     400, "invalid_input", "id"),
    ("alert id in superscript digits", request_bytes(
        "GET", "/api/v1/alerts/%C2%B9", headers=API), 400, "invalid_input", "id"),
    ("limit 2^63", request_bytes("GET", f"/api/v1/alerts?limit={BIG}", headers=API),
     400, "invalid_input", "limit"),
    ("limit of 5000 digits", request_bytes("GET", f"/api/v1/alerts?limit={HUGE}", headers=API),
     400, "invalid_input", "limit"),
    ("cursor 2^63", request_bytes("GET", f"/api/v1/alerts?cursor={BIG}", headers=API),
     400, "invalid_input", "cursor"),
    ("cursor of 5000 digits", request_bytes("GET", f"/api/v1/alerts?cursor={HUGE}", headers=API),
     400, "invalid_input", "cursor"),
    ("since 5m2h (units out of order)", request_bytes(
        "GET", "/api/v1/alerts?since=5m2h", headers=API), 400, "invalid_input", "since"),
    ("since 1s1s (unit repeated)", request_bytes(
        "GET", "/api/v1/alerts?since=1s1s", headers=API), 400, "invalid_input", "since"),
    ("since 999999999999d", request_bytes(
        "GET", "/api/v1/alerts?since=999999999999d", headers=API), 400, "invalid_input", "since"),
    ("until in year 9999", request_bytes(
        "GET", "/api/v1/alerts?until=9999-01-01T00:00:00Z", headers=API),
     400, "invalid_input", "until"),
    ("startsAt in year 2300", request_bytes(
        "POST", "/api/v1/alertmanager", webhook_with(startsAt="2300-01-01T00:00:00Z"), HOOK),
     400, "invalid_input", "alerts[0].startsAt"),
    ("startsAt in year 1600", request_bytes(
        "POST", "/api/v1/alertmanager", webhook_with(startsAt="1600-01-01T00:00:00Z"), HOOK),
     400, "invalid_input", "alerts[0].startsAt"),
    ("startsAt with a +99:99 offset", request_bytes(
        "POST", "/api/v1/alertmanager", webhook_with(startsAt="2026-11-23T10:00:00+99:99"),
        HOOK), 400, "invalid_input", "alerts[0].startsAt"),
    ("startsAt with non-ASCII digits", request_bytes(
        "POST", "/api/v1/alertmanager",
        webhook_with(startsAt="\u0662\u0660\u0662\u0666-11-23T10:00:00Z"), HOOK),
     400, "invalid_input", "alerts[0].startsAt"),
    ("Content-Encoding gzip on a body that is not gzip", request_bytes(
        "POST", "/api/v1/alertmanager", webhook_with(), {**HOOK, "Content-Encoding": "gzip"}),
     400, "invalid_input", "body"),
    ("bad chunk size", request_bytes(
        "POST", "/api/v1/alertmanager", b"zz\r\nxx\r\n0\r\n\r\n",
        {**HOOK, "Transfer-Encoding": "chunked"}), 400, "bad_request", None),
    ("a request line over 8190 bytes", request_bytes("GET", "/" + "a" * 9000),
     431, "line_too_long", None),
    ("a header over 8190 bytes", request_bytes("GET", "/-/healthy", headers={"X": "a" * 9000}),
     431, "line_too_long", None),
    ("not HTTP at all", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
     400, "bad_request", None),
    ("webhook body declared text/plain", request_bytes(
        "POST", "/api/v1/alertmanager", webhook_with(),
        {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "text/plain"}),
     415, "unsupported_media_type", None),
    ("ack body declared as a form", request_bytes(
        "POST", "/api/v1/alerts/1/ack", b"by=x",
        {**API, "Content-Type": "application/x-www-form-urlencoded"}),
     415, "unsupported_media_type", None),
    ("a bad regular expression", request_bytes(
        "GET", "/api/v1/alerts?filter=x%3D~%22(a)%5C1%22", headers=API),
     400, "invalid_input", "matcher"),
]  # fmt: skip


@pytest.fixture
async def server(tmp_path: Path) -> Any:
    async with guarded_server(settings_for(tmp_path)) as running:
        yield running


async def _stored_one(server: Running) -> None:
    """Store alert 1 through the webhook (so that a wrong id could wrongly act on it)."""
    body = json.dumps(notification(am_alert())).encode()
    answer = await raw_request(server.port, request_bytes("POST", "/api/v1/alertmanager", body,
                                                          HOOK))  # fmt: skip
    assert answer.status == 200, answer.body


@pytest.mark.parametrize(
    ("name", "data", "status", "code", "field"), CASES, ids=[c[0] for c in CASES]
)
async def test_client_errors_are_json_4xx_naming_the_problem(
    server: Running,
    caplog: pytest.LogCaptureFixture,
    name: str,
    data: bytes,
    status: int,
    code: str,
    field: str | None,
) -> None:
    """Each class of bad request gets its JSON 4xx (status, code, the field when there is one);
    nothing is logged at warning or above, and alert 1 is neither changed nor duplicated."""
    await _stored_one(server)
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    answer = await raw_request(server.port, data)
    assert answer.status == status, answer.body
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()
    assert error["error"] == code
    assert error.get("field") == field
    assert error["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    store = server.app[STORE]
    alerts = await store.list_alerts(AlertQuery())
    assert len(alerts) == 1
    assert (await store.get_alert(1)).acked_at is None


async def test_a_gzip_body_that_is_gzip_is_read(server: Running) -> None:
    """Content-Encoding itself is fine: a real gzip body is decoded and stored."""
    body = gzip.compress(webhook_with())
    answer = await raw_request(
        server.port,
        request_bytes("POST", "/api/v1/alertmanager", body, {**HOOK, "Content-Encoding": "gzip"}),
    )
    assert answer.status == 200, answer.body
    assert answer.json()["fired"] == 1


async def test_a_gzip_bomb_is_413_without_inflating_it(server: Running) -> None:
    """A small gzip body that inflates past the body limit is refused as too large."""
    bomb = gzip.compress(b" " * (64 * 1024 * 1024))
    assert len(bomb) < 100_000
    answer = await raw_request(
        server.port,
        request_bytes("POST", "/api/v1/alertmanager", bomb, {**HOOK, "Content-Encoding": "gzip"}),
    )
    assert answer.status == 413
    assert answer.json()["error"] == "too_large"


async def test_chunked_bodies_are_read(server: Running) -> None:
    """Transfer-Encoding: chunked is fine when the chunks are."""
    answer = await raw_request(
        server.port,
        request_bytes("POST", "/api/v1/alertmanager", chunked(webhook_with()),
                      {**HOOK, "Transfer-Encoding": "chunked"}),
    )  # fmt: skip
    assert answer.status == 200, answer.body


async def test_an_oversized_alert_compressed_small_is_still_clipped(server: Running) -> None:
    """Sizes are checked on the decoded body: 70,000 characters gzipped to a few hundred
    bytes are clipped to the annotation's limit, and the alert stored marked."""
    raw = am_alert()
    raw["annotations"] = {"description": "x" * 70_000}
    body = gzip.compress(json.dumps(notification(raw)).encode())
    assert len(body) < 1000
    answer = await raw_request(
        server.port,
        request_bytes("POST", "/api/v1/alertmanager", body, {**HOOK, "Content-Encoding": "gzip"}),
    )
    assert answer.status == 200, answer.body
    assert answer.json()["clipped"] == 1
