"""The server-wide budget of webhook bodies in flight: past it 503 (which Alertmanager
retries), never 413; the first body in flight always passes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from bridge.http.keys import STORE
from tests.payloads import am_alert, notification
from tests.stores import sqlite_of
from tests.test_receiver import BEARER, WEBHOOK, MakeClient, make_app, metric, stored
from tests.test_writer import writer_held


def group(size: int, first: int = 0) -> bytes:
    """A notification of `size` alerts, as bytes."""
    alerts = [am_alert(f"{first + i:016x}", instance=f"web-{first + i}") for i in range(size)]
    return json.dumps(notification(*alerts)).encode()


async def test_a_body_past_the_budget_in_flight_waits_for_none_and_gets_503(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """While one notification is being stored, a second that would pass the budget is
    answered 503 with Retry-After (counted); once the first is stored, it is taken."""
    first, second = group(200), group(200, 1000)
    budget = len(first) + len(second) // 2
    client = await aiohttp_client(make_app(tmp_path, max_bodies_in_flight_bytes=budget))
    headers = {**BEARER, "Content-Type": "application/json"}
    writer = sqlite_of(client.app[STORE]).writer
    async with writer_held(writer):
        pending = asyncio.ensure_future(client.post(WEBHOOK, data=first, headers=headers))
        deadline = time.monotonic() + 10
        while writer.queued < 1:  # the first is parsed and waits for the writer
            assert time.monotonic() < deadline, "the first notification never reached the writer"
            await asyncio.sleep(0.005)
        refused = await client.post(WEBHOOK, data=second, headers=headers)
        assert refused.status == 503
        assert refused.headers["Retry-After"] == "1"
        assert (await refused.json())["error"] == "busy"
    assert (await pending).status == 200
    assert (await client.post(WEBHOOK, data=second, headers=headers)).status == 200
    assert len(await stored(client)) == 400
    assert await metric(client, "alertbridge_webhook_busy_total") == 1


async def test_one_body_larger_than_the_budget_still_passes_alone(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """The budget never refuses a body that is alone in flight: any body up to
    max_body_bytes gets through."""
    body = group(300)
    client = await aiohttp_client(make_app(tmp_path, max_bodies_in_flight_bytes=1000))
    answer = await client.post(
        WEBHOOK, data=body, headers={**BEARER, "Content-Type": "application/json"}
    )
    assert answer.status == 200, await answer.text()
    assert len(await stored(client)) == 300


async def test_bodies_read_before_their_signature_is_checked_hold_a_share_of_their_own(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """With Grafana's HMAC set, a body carrying the signature header is read before it can be
    checked: such bodies are held against a quarter of the budget (at least one body), so
    that senders who only claim a signature never hold what Alertmanager's webhook needs."""
    from bridge.config import Secret

    mib = 1024 * 1024
    client = await aiohttp_client(make_app(
        tmp_path, max_body_bytes=mib, max_bodies_in_flight_bytes=2 * mib,
        grafana_hmac_secret=Secret("grafana-secret"),
    ))  # fmt: skip
    stalled = []
    for _ in range(3):  # each claims a full body, sends a byte of it, and stops
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(f"POST {WEBHOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"X-Grafana-Alerting-Signature: 00\r\nContent-Length: {mib}\r\n"
                     "Content-Type: application/json\r\n\r\n{".encode())  # fmt: skip
        await writer.drain()
        stalled.append((reader, writer))
    statuses = []
    for reader, _ in stalled[1:]:  # the share holds one: the others are refused at once
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        statuses.append(int(head.split()[1]))
    assert statuses == [503, 503]
    answer = await client.post(WEBHOOK, data=group(100),
                               headers={**BEARER, "Content-Type": "application/json"})  # fmt: skip
    assert answer.status == 200, await answer.text()
    for _, writer in stalled:
        writer.close()
