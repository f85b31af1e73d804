"""`alertbridge watch`: the feed of changes as it happens, a line per event (or JSON lines),
from a running bridge's event stream (--url) or a local database (--db, polled).

Over --url it follows `GET /api/v1/events/stream` and, when the connection drops, connects
again with Last-Event-ID after a bounded backoff: no event is printed twice or skipped. It runs
until Ctrl-C (exit 130), or until --count events were printed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import click

from bridge.cli.client import remote_error
from bridge.cli.common import Whole, fail_cleanly, filter_params, main, settings_of, short_time
from bridge.config import Secret
from bridge.core.errors import BridgeError
from bridge.feed.hub import WatchFilter, items_after
from bridge.store import exists as store_exists
from bridge.store import open_store

#: A stream silent this long is dead (the server sends a comment every 15 s).
READ_TIMEOUT = 45.0
#: Seconds between attempts to connect again (at most 2 s: the retry a server advises).
BACKOFF = (0.25, 0.5, 1.0, 2.0)
LOCAL_POLL = 0.5


def line_of(data: dict[str, Any]) -> str:
    """One event for a terminal: time, alert, kind, actor, detail."""
    alert = data.get("alert") or {}
    what = f"{alert.get('alertname', '?')}/{alert.get('severity', '?')}" if alert else "(pruned)"
    detail = " ".join(str(data.get("detail") or "").split())[:100]
    return (f"{short_time(data['at'])}  #{data['alert_id']:<6} {what:<28} {data['kind']:<16}"
            f" {data['actor']:<14} {detail}").rstrip()  # fmt: skip


def sse_messages(lines: Iterator[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(id, data) of each message of an event stream (comments and retry lines skipped)."""
    fields: dict[str, str] = {}
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if "data" in fields and "id" in fields:
                yield int(fields["id"]), json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def _remote(url: str, token: Secret | None, params: list[tuple[str, str]], after: int | None,
            emit: Any, count: int | None) -> None:  # fmt: skip
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise BridgeError(f"--url must be http:// or https://, got {url!r}")
    failures, printed = 0, 0  # (Last-Event-ID: where to start, and where to resume)
    while True:
        query = urllib.parse.urlencode(params)
        request = urllib.request.Request(f"{base}/api/v1/events/stream?{query}")  # noqa: S310
        if token is not None:
            request.add_header("Authorization", f"Bearer {token.value}")
        if after is not None:
            request.add_header("Last-Event-ID", str(after))
        try:
            with urllib.request.urlopen(request, timeout=READ_TIMEOUT) as response:  # noqa: S310
                failures = 0
                for event_id, data in sse_messages(iter(response.readline, b"")):
                    emit(data)
                    after, printed = event_id, printed + 1
                    if count is not None and printed >= count:
                        return
        except urllib.error.HTTPError as exc:
            raise remote_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            wait = BACKOFF[min(failures, len(BACKOFF) - 1)]
            failures += 1
            reason = getattr(exc, "reason", exc)
            click.echo(f"alertbridge: stream from {base} lost ({reason}); connecting again in"
                       f" {wait:g}s", err=True)  # fmt: skip
            time.sleep(wait)


def _local(db: str, params: dict[str, list[str]], after: int | None, emit: Any,
           count: int | None, password_file: str | None = None) -> None:  # fmt: skip
    if not store_exists(db):
        raise BridgeError(f"no alert database at {db} (pass --db PATH, or --url)")
    wanted = WatchFilter.parse(params)

    async def follow() -> None:
        store = open_store(db, password_file=password_file)
        printed = 0
        try:
            position = await store.last_event_id() if after is None else after
            while True:
                items = await items_after(store, position, 500)
                for item in items:
                    if wanted.wants(item):
                        emit(json.loads(item.entry.data))
                        printed += 1
                        if count is not None and printed >= count:
                            return
                if items:
                    position = items[-1].entry.id
                else:
                    await asyncio.sleep(LOCAL_POLL)  # another process writes: nothing to await
        finally:
            await store.close()

    asyncio.run(follow())


@main.command("watch")
@click.option("--status", type=click.Choice(["firing", "resolved"]), default=None)
@click.option("--severity", multiple=True, help="Repeat or comma-separate.")
@click.option("--rule", default=None, help="Alert (rule) name.")
@click.option("--filter", "filters", multiple=True, help='Label matcher, e.g. team="infra".')
@click.option("--acknowledged/--unacknowledged", default=None)
@click.option("--kind", "kinds", multiple=True,
              help="Event kinds only (fired, acknowledged, note, escalated, ...).")  # fmt: skip
@click.option("--alert", "alert_id", type=Whole(1, 2**63 - 1), default=None,
              help="One alert's events.")  # fmt: skip
@click.option("--after", type=Whole(0, 2**63 - 1), default=None,
              help="Start after this event id (default: from now).")  # fmt: skip
@click.option("--count", type=Whole(1, 10**9), default=None, help="Stop after N events.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              help="json: one event a line, as the stream's data.")  # fmt: skip
@click.option("--url", default=None, help="A running bridge (token from ALERTBRIDGE_API_TOKEN).")
@click.option("--db", default=None, help="Local database file (default: server.db).")
@click.pass_context
@fail_cleanly
def watch(ctx: click.Context, status: str | None, severity: tuple[str, ...], rule: str | None,
          filters: tuple[str, ...], acknowledged: bool | None, kinds: tuple[str, ...],
          alert_id: int | None, after: int | None, count: int | None, output: str,
          url: str | None, db: str | None) -> None:  # fmt: skip
    """Print events as they happen, filtered as `alerts` filters, until Ctrl-C."""
    params = filter_params(status, severity, rule, filters, acknowledged)
    if kinds:
        params["kind"] = list(kinds)
    if alert_id is not None:
        params["alert_id"] = [str(alert_id)]
    WatchFilter.parse(params)  # a mistake (an unknown kind, a bad matcher) said now, here

    def emit(data: dict[str, Any]) -> None:
        text = json.dumps(data, separators=(",", ":")) if output == "json" else line_of(data)
        click.echo(text)
        sys.stdout.flush()

    if url:
        flat = [(k, v) for k, vs in params.items() for v in vs]
        _remote(url, settings_of(ctx).server.api_token, flat, after, emit, count)
    else:
        settings = settings_of(ctx)
        _local(db or settings.server.db, params, after, emit, count,
               settings.server.db_password_file)  # fmt: skip
