"""People and on-call over HTTP: who is on call (`/api/v1/oncall`), the people, and each
schedule's and person's iCalendar feed (`/calendar/...`) to subscribe to in a calendar.

A calendar application cannot send a bearer token: a feed's link carries a signature
(bridge.core.signing) with the key the store keeps, shown to API callers with the schedule
or the person. The link reads that one feed and nothing else, on every replica; it stays
valid until the key is replaced (remove `signing_key` from the database's meta table:
every signed link then stops working)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from bridge.core.errors import NotFound
from bridge.core.oncall import OnCall, parse_at, parse_days
from bridge.core.signing import sign, valid
from bridge.core.times import NS, now_ns
from bridge.escalation.links import signing_key as kept_signing_key
from bridge.http.auth import authorize
from bridge.http.errors import HttpError
from bridge.http.keys import SETTINGS, STORE
from bridge.http.util import json_response
from bridge.store.interface import Exports

routes = web.RouteTableDef()
#: What a feed shows: the shifts from this long ago up to its days ahead (default 60).
FEED_PAST_DAYS = 7
FEED_DAYS = 60


class SigningKey:
    """The key that signs links, read from the store once (generated once per database)."""

    def __init__(self) -> None:
        self.key: bytes | None = None
        self.lock = asyncio.Lock()

    async def get(self, store: Exports) -> bytes:
        if self.key is None:
            async with self.lock:
                if self.key is None:
                    self.key = await kept_signing_key(store)
        return self.key


SIGNING = web.AppKey("signing_key", SigningKey)


async def signing_key(app: web.Application) -> bytes:
    return await app[SIGNING].get(app[STORE])


async def feed_link(request: web.Request, kind: str, name: str) -> str:
    """The signed link of a feed (`kind`: schedules or people), absolute where
    server.public_url is set."""
    signature = sign(await signing_key(request.app), "calendar", kind, name)
    path = f"/calendar/{kind}/{name}.ics?sig={signature}"
    base = request.app[SETTINGS].server.public_url
    return f"{base.rstrip('/')}{path}" if base else path


def _oncall(request: web.Request) -> OnCall:
    return request.app[SETTINGS].oncall


@routes.get("/api/v1/people")
async def people(request: web.Request) -> web.Response:
    """The people of the configuration (bridge.core.oncall): time zone, contact methods
    (their kinds, never their addresses), the schedules they are in, their feed's link."""
    authorize(request, "read")
    out = _oncall(request).directory()
    for record in out:
        record["calendar"] = await feed_link(request, "people", record["name"])
    return json_response(out)


@routes.get("/api/v1/oncall")
async def oncall_now(request: web.Request) -> web.Response:
    """Who is on call in every schedule at ?at= (RFC 3339; default now)."""
    authorize(request, "read")
    at = parse_at(request.query.get("at"), now_ns())
    return json_response(_oncall(request).now(at))


@routes.get("/api/v1/oncall/{schedule}")
async def oncall_schedule(request: web.Request) -> web.Response:
    """One schedule: its layers and overrides, who is on call at ?at=, the shifts over the
    ?days= (default 14) from then, and its feed's link."""
    authorize(request, "read")
    at = parse_at(request.query.get("at"), now_ns())
    days = parse_days(request.query.get("days"))
    name = request.match_info["schedule"]
    body = _oncall(request).listing(name, at, days)
    body["calendar"] = await feed_link(request, "schedules", name)
    return json_response(body)


@routes.get("/calendar/{kind}/{name}.ics")
async def calendar_feed(request: web.Request) -> web.Response:
    """A schedule's shifts, or a person's across the schedules, as iCalendar: with the
    link's signature (a calendar application) or a bearer token of any role."""
    kind, name = request.match_info["kind"], request.match_info["name"]
    if kind not in ("schedules", "people"):
        raise NotFound(f"no calendars of {kind!r} (schedules, people)")
    signature = request.query.get("sig")
    if signature is None:
        authorize(request, "read")
    elif not valid(await signing_key(request.app), signature, "calendar", kind, name):
        raise HttpError(403, "bad_signature", "this link's signature is not this feed's")
    oncall = _oncall(request)
    now = now_ns()
    start = now - FEED_PAST_DAYS * 86400 * NS
    end = now + parse_days(request.query.get("days") or str(FEED_DAYS)) * 86400 * NS
    if kind == "schedules":
        shifts = [(name, s) for s in oncall.schedule(name).shifts(start, end)]
        title = f"On call: {name}"
    else:
        if name not in oncall.people:
            raise NotFound(f"no person {name!r}")
        shifts = [(n, s) for n, schedule in sorted(oncall.schedules.items())
                  for s in schedule.shifts(start, end) if s.person == name]  # fmt: skip
        title = f"On call: {name}"
    from bridge.core.ical import calendar_of  # (not at import: bridge.config says why)

    body = await asyncio.to_thread(calendar_of, title, shifts, now)
    return web.Response(body=body, content_type="text/calendar", charset="utf-8",
                        headers={"Cache-Control": "private, max-age=300"})  # fmt: skip
