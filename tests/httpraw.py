"""A guarded server in the test's event loop, and raw HTTP/1.1 over asyncio streams."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge.config import Secret, Settings, load_settings
from bridge.http.app import create_app
from bridge.http.keys import GUARD
from bridge.http.server import start
from tests.support import LOOPBACK, free_port

WEBHOOK_TOKEN = "hook-secret"
API_TOKEN = "api-secret"


def settings_for(tmp_path: Path, **server: Any) -> Settings:
    """Default settings on a database under tmp_path with both tokens, `server` overridden."""
    base = load_settings(None, {}, db=str(tmp_path / "alerts.db"))
    fields = {"webhook_token": Secret(WEBHOOK_TOKEN), "api_token": Secret(API_TOKEN), **server}
    return dataclasses.replace(base, server=dataclasses.replace(base.server, **fields))


@dataclass
class Running:
    """A started app: its port and the app itself (for its store, writer, guard)."""

    app: web.Application
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


@asynccontextmanager
async def guarded_server(settings: Settings) -> AsyncIterator[Running]:
    """`create_app(settings)` served by bridge.http.server (GuardedHandler) on a free port."""
    app = create_app(settings, background=False)
    port = free_port()
    runner = await start(app, LOOPBACK, port, app[GUARD])
    try:
        yield Running(app, port)
    finally:
        await runner.cleanup()


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def read_response(reader: asyncio.StreamReader, timeout: float = 10.0) -> RawResponse:
    """One response from the stream (Content-Length framed, as every answer here is)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
    return RawResponse(status, headers, body)


async def raw_request(port: int, data: bytes, timeout: float = 10.0) -> RawResponse:
    """Send bytes on a new connection and read one response."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_response(reader, timeout)
    finally:
        writer.close()
        await writer.wait_closed()


def request_bytes(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    host: str = LOOPBACK,
) -> bytes:
    """An HTTP/1.1 request with Host and Content-Length (unless headers give their own)."""
    fields = {"Host": host, **(headers or {})}
    if body and "Transfer-Encoding" not in fields:
        fields.setdefault("Content-Length", str(len(body)))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + body
