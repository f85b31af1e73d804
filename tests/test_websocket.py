"""The feed over a WebSocket (`/api/v1/events/ws`): the same events as the event stream from
the same position, exact resumption by `after`, filters, keys, the server's share of
connections, and keepalives as pings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.http.keys import HUB
from tests.test_stream import API, HOOK, TIMEOUT, Client, MakeClient, fire, make_client

WS = "/api/v1/events/ws"


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    return await make_client(aiohttp_client, tmp_path)


async def messages(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        message = await asyncio.wait_for(ws.receive(), TIMEOUT)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        out.append(json.loads(message.data))
    return out


async def stream_ids(client: Client, after: int, n: int) -> list[int]:
    """The ids the event stream gives from `after` (what the WebSocket must match)."""
    from tests.test_stream import Watcher

    response = await client.get("/api/v1/events/stream", params={"after": str(after)},
                                headers=API)  # fmt: skip
    try:
        return [i for i, _ in await Watcher(response).messages(n)]
    finally:
        response.close()


async def test_the_websocket_carries_what_the_stream_does_and_resumes_exactly(
    client: Client,
) -> None:
    for n in range(1, 4):
        await fire(client, n, team="infra")
    async with client.ws_connect(WS, params={"after": "0"}, headers=API) as ws:
        first = await messages(ws, 3)
        assert [m["event"]["kind"] for m in first] == ["fired"] * 3
        assert [m["id"] for m in first] == [m["event"]["id"] for m in first]
        assert [m["id"] for m in first] == await stream_ids(client, 0, 3)
        assert first[0]["event"]["alert"]["labels"]["team"] == "infra"
        ack = await client.post("/api/v1/alerts/2/ack", json={"by": "alice"}, headers=API)
        assert ack.status == 200
        (live,) = await messages(ws, 1)  # live, as it happens
        assert (live["event"]["kind"], live["event"]["actor"]) == ("acknowledged", "alice")
    async with client.ws_connect(WS, params={"after": str(first[0]["id"])}, headers=API) as ws:
        again = await messages(ws, 3)  # exactly what came after, once, in order
        assert [m["id"] for m in again] == [first[1]["id"], first[2]["id"], live["id"]]


async def test_filters_keys_and_handshakes(client: Client) -> None:
    await fire(client, 1, alertname="high_cpu")
    await fire(client, 2, alertname="slow_search")
    params = {"after": "0", "rule": "slow_search"}
    async with client.ws_connect(WS, params=params, headers=API) as ws:
        (only,) = await messages(ws, 1)
        assert only["event"]["alert"]["alertname"] == "slow_search"
        await fire(client, 3, alertname="high_cpu")
        await fire(client, 4, alertname="slow_search")
        (next_one,) = await messages(ws, 1)
        assert next_one["event"]["alert_id"] == 4
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(WS, headers=HOOK)  # the webhook's token reads nothing
    assert refused.value.status == 401
    plain = await client.get(WS, headers=API)
    assert plain.status == 426
    assert (await plain.json())["error"] == "upgrade_required"
    bad = await client.get(WS, params={"kind": "nope"}, headers=API)
    assert bad.status == 400


async def test_websockets_take_only_the_servers_share_of_connections(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """max_connections 8: the server serves 2 streams itself; a third WebSocket is 503."""
    client = await make_client(aiohttp_client, tmp_path, max_connections=8)
    hub = client.app[HUB]
    async with (client.ws_connect(WS, headers=API) as one,
                client.ws_connect(WS, headers=API) as two):  # fmt: skip
        for _ in range(int(TIMEOUT / 0.005)):  # (registered by their handlers' tasks)
            if hub.watchers == 2:
                break
            await asyncio.sleep(0.005)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(WS, headers=API)
        assert refused.value.status == 503
        assert not one.closed
        assert not two.closed


async def test_a_quiet_feed_pings(client: Client) -> None:
    client.app[HUB].keepalive = 0.05
    async with client.ws_connect(WS, headers=API, autoping=False) as ws:
        message = await asyncio.wait_for(ws.receive(), TIMEOUT)
        assert message.type == aiohttp.WSMsgType.PING
