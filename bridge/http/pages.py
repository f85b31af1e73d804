"""The operators' page: sign in with a key, the alert list (the CLI's filters, free text,
grouping by rule), an alert's page (labels, annotations, silence and escalation state, its
timeline), and the actions (acknowledge, unacknowledge, note, assign, resolve, escalate, bulk
acknowledge), all server-rendered; `static/app.js` keeps them live from the event stream.

Every response carries a strict Content-Security-Policy (scripts and styles from this origin
only, no inline code, no framing); every form carries the session's CSRF token and is refused
(403) without it; the session cookie is HttpOnly and SameSite=Strict (and Secure when the
bridge is reached over https, as `server.public_url` says). Templates are autoescaped: label
values and annotations holding markup show as text.
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit

import jinja2
from aiohttp import web

from bridge.core.errors import AlertmanagerError, BridgeError, RequestError, StoreError
from bridge.core.oncall import DAYS, OnCall, local_time
from bridge.core.signing import AckLink, LinkRefused
from bridge.core.times import NS, format_duration, format_time, now_ns
from bridge.escalation.engine import change_of, override
from bridge.export.report import seconds_text
from bridge.host.apikeys import allows, token_hash
from bridge.http import silences
from bridge.http.api import observe_ack, report_data
from bridge.http.auth import identify, session_of
from bridge.http.errors import status_of
from bridge.http.keys import ADAPTER_SESSION, ATTEMPTS, ESCALATOR, SESSIONS, SETTINGS, STORE
from bridge.http.oncall import feed_link, signing_key
from bridge.http.rules import MANAGER, firing_counts, recent_episodes
from bridge.http.sessions import COOKIE, LIFETIME, Session, SessionsFull
from bridge.http.wake import kick_reconciler
from bridge.store import MAX_TEXT, SYSTEM_ACTORS, StoredAlert
from bridge.store.interface import Actions, Escalations, Reads
from bridge.store.query import parse_alert_query, parse_id

log = logging.getLogger(__name__)

routes = web.RouteTableDef()
HERE = Path(__file__).parent  # templates/ and static/ beside this module
ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["rfc3339"] = format_time
CSP = "; ".join((
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "connect-src 'self'", "form-action 'self'", "frame-ancestors 'none'", "base-uri 'none'",
))  # fmt: skip
#: The list's filters, as the CLI and GET /api/v1/alerts name them.
FILTERS = ("status", "severity", "rule", "filter", "acknowledged", "am_state", "q", "sort",
           "cursor", "limit")  # fmt: skip
STATIC = {"app.js": "text/javascript", "app.css": "text/css"}
#: The schedules of the request being answered (a page's header names who is on call).
_ONCALL: contextvars.ContextVar[OnCall | None] = contextvars.ContextVar("oncall", default=None)
NOT_SIGNED_IN = "Not signed in (or the session ended): sign in again."


def _page(template: str, status: int = 200, **context: Any) -> web.Response:
    """A page; `can_act`: whether the signed-in key may act (a read key gets no buttons it
    cannot use)."""
    session = context.get("session")
    context.setdefault("can_act", session is not None and allows(session.role, "write"))
    oncall = _ONCALL.get()
    whole = not template.startswith("_")  # (fragments the live refresh fetches: no header)
    context.setdefault("on_call", oncall.now(now_ns())[:3] if oncall and session and whole
                       else [])  # fmt: skip
    body = ENV.get_template(template).render(**context)
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    _harden(response)
    return response


def _harden(response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"


def _to_signin(request: web.Request) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"/signin?{urlencode({'next': request.path_qs})}")


Handler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


class Refused(Exception):
    """A form the page will not act on: its status and why (shown as an HTML page)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def signed_in(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A page that needs a session: without one, to the sign-in page."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        session = session_of(request)
        if session is None:
            if request.method != "GET":
                return _page("error.html", status=403, session=None, back="/signin",
                             message=NOT_SIGNED_IN)  # fmt: skip
            raise _to_signin(request)
        _ONCALL.set(request.app[SETTINGS].oncall)  # (the header's "on call now")
        try:
            return await handler(request, session)
        except Refused as exc:
            return _page("error.html", status=exc.status, session=session, message=str(exc),
                         back=request.headers.get("Referer", "/alerts"))  # fmt: skip
        except RequestError as exc:  # a bad filter, an unknown alert: said on a page
            return _page("error.html", status=status_of(exc), session=session, message=str(exc),
                         back="/alerts")  # fmt: skip

    return wrapper


async def _form(request: web.Request, session: Session, needed: str = "write") -> Mapping[str, str]:
    """A POSTed form of this session (CSRF token checked), if its role allows `needed`."""
    form = await request.post()
    if not session.csrf_ok(form.get("csrf")):
        raise Refused(403, "The form's CSRF token is missing or wrong: reload the page.")
    if not allows(session.role, needed):
        raise Refused(403, f"Key {session.name} has role {session.role}: it may look, not act.")
    return {k: v for k, v in form.items() if isinstance(v, str)}


#: What a browser drops from a URL (tab, line feed, carriage return anywhere) or trims (other
#: control characters and spaces at its ends): `/\t/evil.example` is `//evil.example` to it.
_URL_DROPPED = re.compile(r"[\t\n\r]")


def _safe_next(target: str | None) -> str:
    r"""Only a path of this site: normalised first as a browser reads a URL (control
    characters dropped, backslashes as slashes), then refused unless it is a path (no scheme,
    no //host); not an open redirect.

    >>> _safe_next("/alerts?x=1"), _safe_next("/\t/evil.example"), _safe_next("/\\evil")
    ('/alerts?x=1', '/alerts', '/alerts')
    """
    if not target:
        return "/alerts"
    path = _URL_DROPPED.sub("", target).strip("".join(map(chr, range(0x21)))).replace("\\", "/")
    parts = urlsplit(path)
    if (not path.startswith("/") or path.startswith("//") or parts.scheme or parts.netloc
            or any(ord(c) < 0x20 or c == "\x7f" for c in path)):  # fmt: skip
        return "/alerts"
    return path


# --- signing in and out -------------------------------------------------------------------


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/alerts")


@routes.get("/signin")
async def signin_page(request: web.Request) -> web.Response:
    open_api = identify(request, None) is not None
    return _page("signin.html", open_api=open_api, next=_safe_next(request.query.get("next")),
                 error=None, session=None)  # fmt: skip


@routes.post("/signin")
async def signin(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    token = str(form.get("token") or "").strip()
    name = str(form.get("name") or "").strip()
    target = _safe_next(str(form.get("next") or ""))
    open_api = identify(request, None) is not None
    principal = identify(request, token or None)
    who = [request.remote or ""] + ([f"key:{principal.name}"] if principal and principal.name
                                    else [])  # fmt: skip
    wait = request.app[ATTEMPTS].signin(*who)
    if wait is not None:
        response = _page(
            "signin.html",
            status=429,
            open_api=open_api,
            next=target,
            session=None,
            error="Too many sign-ins; wait a minute and try again.",
        )
        response.headers["Retry-After"] = str(int(wait))
        return response
    error = None
    if principal is None:
        error = "That token is not a key of this bridge (or it was revoked)."
    elif principal.name is None and not name:
        error = "This token has no name of its own: say who you are."
    elif principal.name is None and len(name) > 100:
        error = "A name of at most 100 characters."
    if error is not None or principal is None:
        return _page("signin.html", status=401, open_api=open_api, next=target, error=error,
                     session=None)  # fmt: skip
    key_sha = token_hash(token) if principal.name is not None else None
    try:
        session = request.app[SESSIONS].open(principal.name, principal.role, key_sha,
                                             by=principal.name or name)  # fmt: skip
    except SessionsFull:
        log.warning("sign-in refused: every session slot is taken (server restart ends them)")
        return _page("signin.html", status=503, open_api=open_api, next=target, session=None,
                     error="Too many people are signed in right now; try again later.")  # fmt: skip
    response = web.HTTPSeeOther(target)
    public = request.app[SETTINGS].server.public_url or ""
    response.set_cookie(COOKIE, session.id, httponly=True, samesite="Strict", path="/",
                        max_age=int(LIFETIME), secure=public.startswith("https://")
                        or request.secure)  # fmt: skip
    raise response


@routes.post("/signout")
@signed_in
async def signout(request: web.Request, session: Session) -> web.StreamResponse:
    await _form(request, session, needed="read")
    request.app[SESSIONS].close(session.id)
    response = web.HTTPSeeOther("/signin")
    response.del_cookie(COOKIE, path="/")
    raise response


# --- the alert list -------------------------------------------------------------------------


def _params(request: web.Request) -> dict[str, list[str]]:
    return {k: [v for v in request.query.getall(k) if v] for k in FILTERS if k in request.query}


def _query_string(params: Mapping[str, list[str]], **extra: str) -> str:
    pairs = [(k, v) for k, vs in params.items() for v in vs if k not in extra]
    return urlencode(pairs + [(k, v) for k, v in extra.items() if v])


def _stream_url(params: Mapping[str, list[str]], **fixed: str) -> str:
    """The event stream the page listens to (only what it changes with: no cursor, no sort)."""
    keep = {k: v for k, v in params.items() if k in ("severity", "rule", "filter")}
    return "/api/v1/events/stream?" + _query_string(keep, **fixed)


async def _list_context(request: web.Request) -> dict[str, Any]:
    params = _params(request)
    query = parse_alert_query({**params}, now_ns(), default_sort="attention")
    # Read before the page: the stream then starts where the page left off, and a change
    # committed while it loads is not missed.
    position = await request.app[STORE].last_event_id()
    page = await request.app[STORE].list_page(query)
    grouped = request.query.get("group") == "rule"
    groups: dict[str, list[StoredAlert]] = {}
    if grouped:  # in the list's order: the group needing attention most comes first
        for alert in page.alerts:
            groups.setdefault(alert.alertname, []).append(alert)
    active = sum(1 for k in FILTERS if k not in ("sort", "cursor", "limit") and params.get(k))
    return {
        "done": _done(request),
        "active_filters": active,
        "alerts": page.alerts,
        "groups": list(groups.items()),
        "grouped": grouped,
        "params": params,
        "one": {k: (params[k][-1] if params.get(k) else "") for k in FILTERS},
        "next_url": "/alerts?"
        + _query_string(params, cursor=page.next_cursor, group="rule" if grouped else "")
        if page.next_cursor
        else None,
        "rows_url": "/alerts/rows?" + _query_string(params, group="rule" if grouped else ""),
        "stream_url": _stream_url(params, after=str(position)),
        "here": request.path_qs,
    }


def _done(request: web.Request) -> dict[str, Any] | None:
    """What a bulk action just did, from the query its redirect added (see _with_done)."""
    for key, said in (("acked", "Acknowledged"), ("unacked", "Undone: the acknowledgement of")):
        raw = request.query.get(key, "")
        ids = [int(t) for t in raw.split(",")[:MAX_BULK] if t.isascii() and t.isdigit()]
        if ids:
            shown = ", ".join(f"#{i}" for i in ids[:20]) + (" ..." if len(ids) > 20 else "")
            plural = "s" if len(ids) != 1 else ""
            return {"message": f"{said} {len(ids)} alert{plural}: {shown}.",
                    "undo": ids if key == "acked" else []}  # fmt: skip
    return None


@routes.get("/alerts")
@signed_in
async def alerts_page(request: web.Request, session: Session) -> web.Response:
    return _page("alerts.html", session=session, **await _list_context(request))


@routes.get("/alerts/rows")
@signed_in
async def alert_rows(request: web.Request, session: Session) -> web.Response:
    """The list's rows alone: what the page's script fetches when the stream says something
    changed."""
    return _page("_rows.html", session=session, **await _list_context(request))


#: The most alerts one bulk action takes (a page of the list holds at most 500).
MAX_BULK = 500


def _with_done(back: str, key: str, ids: list[int]) -> str:
    """`back` with what a bulk action did (the list shows it, with an undo)."""
    parts = urlsplit(back)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("acked", "unacked")]
    query.append((key, ",".join(map(str, ids[:MAX_BULK]))))
    return f"{parts.path}?{urlencode(query)}"


def _bulk_ids(form: Any) -> list[int]:
    raw = [v if isinstance(v, str) else "?" for v in form.getall("id", [])]
    if not raw:
        raise Refused(400, "Select at least one alert (the boxes beside them) first.")
    if len(raw) > MAX_BULK:
        raise Refused(400, f"At most {MAX_BULK} alerts at once (selected: {len(raw)}).")
    return list(dict.fromkeys(parse_id(text) for text in raw))


@routes.post("/alerts/ack")
@signed_in
async def bulk_ack(request: web.Request, session: Session) -> web.StreamResponse:
    """Acknowledge the selected alerts, once confirmed: the first POST shows what would be
    acknowledged, the confirmation's POST (`confirm=yes`) acknowledges each on its own (one
    already acknowledged or resolved does not stop the others) and goes back to the list,
    which says what was done and offers to undo it."""
    fields = await _form(request, session)
    ids = _bulk_ids(await request.post())
    store, at = request.app[STORE], now_ns()
    back = _safe_next(fields.get("back"))
    comment = fields.get("comment", "")
    if fields.get("confirm") != "yes":
        found = await store.get_alerts(ids)
        missing = sorted(set(ids) - {a.id for a in found})
        if not found:
            raise Refused(404, "None of the selected alerts exists any more.")
        return _page("confirm.html", session=session, alerts=found, missing=missing,
                     comment=comment, back=back)  # fmt: skip
    done, skipped = [], []
    for alert_id in ids:
        try:
            acked = await store.acknowledge(alert_id, session.by, comment, at)
            observe_ack(request, acked)
            done.append(alert_id)
        except RequestError as exc:
            skipped.append(f"#{alert_id}: {exc}")
    if done:
        await kick_reconciler(request.app)
    if skipped:
        return _page("error.html", status=409 if not done else 200, session=session,
                     message=f"acknowledged {len(done)}; not: " + "; ".join(skipped[:20]),
                     back=_with_done(back, "acked", done) if done else back)  # fmt: skip
    raise web.HTTPSeeOther(_with_done(back, "acked", done))


@routes.post("/alerts/unack")
@signed_in
async def bulk_unack(request: web.Request, session: Session) -> web.StreamResponse:
    """Undo a bulk acknowledgement: withdraw each of these acknowledgements (their silences
    expire, escalation goes on)."""
    fields = await _form(request, session)
    ids = _bulk_ids(await request.post())
    store, at = request.app[STORE], now_ns()
    done, skipped = [], []
    for alert_id in ids:
        try:
            await store.unacknowledge(alert_id, session.by, "undo of a bulk acknowledgement", at)
            done.append(alert_id)
        except RequestError as exc:
            skipped.append(f"#{alert_id}: {exc}")
    if done:
        await kick_reconciler(request.app)
    back = _safe_next(fields.get("back"))
    if skipped:
        return _page("error.html", status=409 if not done else 200, session=session,
                     message=f"undone {len(done)}; not: " + "; ".join(skipped[:20]),
                     back=back)  # fmt: skip
    raise web.HTTPSeeOther(_with_done(back, "unacked", done))


# --- one alert ------------------------------------------------------------------------------


class _DetailStore(Reads, Escalations, Protocol):
    """An alert's page: the alert, its trail, its escalations."""


async def _alert_context(store: _DetailStore, alert_id: int) -> dict[str, Any]:
    position = await store.last_event_id()  # (before the page: see _list_context)
    detail = await store.alert_detail(alert_id)
    return {"alert": detail.alert, "events": detail.events,
            "escalations": await store.escalations(alert_id),
            "rows_url": f"/alerts/{alert_id}/timeline",
            "stream_url": _stream_url({}, alert_id=str(alert_id), after=str(position))}  # fmt: skip


#: What an alert's page says after an action that leaves nothing else to see at once.
DONE = {"snooze": "Snoozed: the silence is in Alertmanager (see the timeline).",
        "pause": "Escalation paused.", "resume": "Escalation resumed.",
        "escalate": "Escalated to the next level."}  # fmt: skip


def _detail_page(request: web.Request, session: Session, context: dict[str, Any],
                 status: int = 200, error: str | None = None) -> web.Response:  # fmt: skip
    return _page("alert.html", status=status, session=session, error=error, here=request.path,
                 done=DONE.get(request.query.get("done", "")),
                 snooze_choices=silences.CHOICES, **context)  # fmt: skip


@routes.get("/alerts/{id}")
@signed_in
async def alert_page(request: web.Request, session: Session) -> web.Response:
    context = await _alert_context(request.app[STORE], parse_id(request.match_info["id"]))
    return _detail_page(request, session, context)


@routes.get("/alerts/{id}/timeline")
@signed_in
async def alert_timeline(request: web.Request, session: Session) -> web.Response:
    context = await _alert_context(request.app[STORE], parse_id(request.match_info["id"]))
    return _page("_detail.html", session=session, error=None, **context)


#: The escalation's overrides an alert's page offers (pause: for a while or until resumed).
OVERRIDES = ("escalate", "pause", "resume")
ACTIONS: dict[str, Callable[[Actions, int, str, Mapping[str, str], int], Awaitable[object]]] = {
    "ack": lambda s, i, by, f, at: s.acknowledge(i, by, f.get("comment", ""), at),
    "unack": lambda s, i, by, f, at: s.unacknowledge(i, by, f.get("comment", ""), at),
    "note": lambda s, i, by, f, at: s.add_note(i, by, f.get("text", ""), at),
    "assign": lambda s, i, by, f, at: s.assign(i, by, f.get("assignee", ""), at),
    "resolve": lambda s, i, by, f, at: s.resolve(i, by, f.get("comment", ""), at),
}


@routes.post("/alerts/{id}/{action}")
@signed_in
async def alert_action(request: web.Request, session: Session) -> web.StreamResponse:
    action = request.match_info["action"]
    if action not in (*ACTIONS, *OVERRIDES, "snooze"):
        raise web.HTTPNotFound(text=f"no action {action!r}")
    fields = await _form(request, session)
    store = request.app[STORE]
    try:
        alert_id = parse_id(request.match_info["id"])
        if action in OVERRIDES:
            seconds = None
            if action == "pause" and fields.get("for"):
                seconds = silences.snooze_seconds(fields["for"], "a pause")
            change = change_of(action, None, seconds)
            engine = request.app.get(ESCALATOR)
            if engine is not None:
                await engine.override(alert_id, session.by, change)
            else:
                await override(store, alert_id, session.by, change, now_ns())
        elif action == "snooze":
            settings = request.app[SETTINGS]
            cluster = silences.cluster(settings.alertmanager.urls, request.app[ADAPTER_SESSION])
            await silences.snooze(
                store,
                cluster,
                await store.get_alert(alert_id),
                session.by,
                fields.get("for", ""),
                fields.get("comment", ""),
                now_ns(),
            )
            await kick_reconciler(request.app)
        else:
            result = await ACTIONS[action](store, alert_id, session.by, fields, now_ns())
            if action == "ack" and isinstance(result, StoredAlert):
                observe_ack(request, result)
            await kick_reconciler(request.app)
    except (RequestError, StoreError) as exc:
        status = status_of(exc) if isinstance(exc, RequestError) else 503
        try:
            context = await _alert_context(store, parse_id(request.match_info["id"]))
        except BridgeError:
            return _page("error.html", status=status, session=session, message=str(exc),
                         back="/alerts")  # fmt: skip
        return _detail_page(request, session, context, status, str(exc))
    done = f"?done={action}" if action in DONE else ""
    raise web.HTTPSeeOther(f"/alerts/{alert_id}{done}")


# --- silences ---------------------------------------------------------------------------------


@routes.get("/silences")
@signed_in
async def silences_page(request: web.Request, session: Session) -> web.Response:
    """Alertmanager's active and pending silences, each with an Expire button."""
    settings = request.app[SETTINGS]
    listed, error = [], None
    try:
        cluster = silences.cluster(settings.alertmanager.urls, request.app[ADAPTER_SESSION])
        listed = await silences.listed(cluster)
    except RequestError as exc:
        error = str(exc)
    return _page("silences.html", session=session, silences=listed, error=error,
                 done=request.query.get("expired", "")[:40])  # fmt: skip


@routes.post("/silences/{id}/expire")
@signed_in
async def silence_expire(request: web.Request, session: Session) -> web.StreamResponse:
    """Expire one of Alertmanager's silences. An acknowledgement's silence comes back at its
    next refresh by the reconciler while the alert stays acknowledged (the page says so:
    unacknowledge the alert to end it for good)."""
    await _form(request, session)
    silence_id = request.match_info["id"]
    if not re.fullmatch(r"[0-9a-fA-F-]{1,64}", silence_id):
        raise Refused(400, "Not a silence id.")
    settings = request.app[SETTINGS]
    cluster = silences.cluster(settings.alertmanager.urls, request.app[ADAPTER_SESSION])
    try:
        await cluster.expire_silence(silence_id)
    except AlertmanagerError as exc:
        raise Refused(502, f"Alertmanager did not expire the silence: {exc}") from None
    log.info("silence %s expired by %s from the page", silence_id, session.by)
    raise web.HTTPSeeOther(f"/silences?expired={silence_id}")


# --- on call ----------------------------------------------------------------------------------


@routes.get("/oncall")
@signed_in
async def oncall_page(request: web.Request, session: Session) -> web.Response:
    """Who is on call now in each schedule and the shifts of the next 14 days (in the
    schedule's zone), and the people."""
    oncall = request.app[SETTINGS].oncall
    now = now_ns()
    schedules = []
    for name, schedule in sorted(oncall.schedules.items()):
        person, source = schedule.on_call(now)
        zone = schedule.timezone
        shifts = [{"start": local_time(s.start, zone), "end": local_time(s.end, zone),
                   "start_iso": format_time(s.start), "end_iso": format_time(s.end),
                   "person": s.person, "source": s.source}
                  for s in schedule.shifts(now, now + DAYS * 86400 * NS)]  # fmt: skip
        schedules.append({"name": name, "timezone": schedule.timezone, "shifts": shifts,
                          "now": {"person": person, "source": source},
                          "calendar": await feed_link(request, "schedules", name)})  # fmt: skip
    return _page("oncall.html", session=session, schedules=schedules,
                 people=oncall.directory())  # fmt: skip


# --- rules ------------------------------------------------------------------------------------

#: Episodes shown per rule, and changes shown, on the rules page.
RULE_EPISODES = 5
RULE_CHANGES = 20


@routes.get("/rules")
@signed_in
async def rules_page(request: web.Request, session: Session) -> web.Response:
    """Each rule of the set in force: its definition, state (firing, inactive, disabled)
    and recent episodes; the latest changes with their differences."""
    manager = request.app.get(MANAGER)
    rules = manager.rules if manager is not None else request.app[SETTINGS].rules
    store = request.app[STORE]
    counts = await firing_counts(store)
    episodes = await recent_episodes(store, RULE_EPISODES)
    shown = []
    for rule in rules:
        recent = episodes.get(rule.name, [])
        count = counts.get(rule.name, 0)
        shown.append({
            "name": rule.name, "description": rule.description, "expr": rule.expr,
            "metric": rule.metric_name, "condition": rule.condition.value,
            "threshold_text": f"{rule.threshold:g} {rule.unit}".strip(),
            "severity": rule.severity.value, "enabled": rule.enabled,
            "for_text": format_duration(rule.for_seconds),
            "state": "disabled" if not rule.enabled else ("firing" if count else "inactive"),
            "firing": count, "episodes": recent,
        })  # fmt: skip
    history = [{**v.record(), "at_iso": format_time(v.at)}
               for v in await store.rule_history(RULE_CHANGES)]  # fmt: skip
    return _page("rules.html", session=session, rules=shown, history=history,
                 version=manager.version if manager is not None else 0,
                 mode=request.app[SETTINGS].managed_rules.mode)  # fmt: skip


# --- acknowledgement links ------------------------------------------------------------------

#: The longest name a person following an unnamed link may give.
MAX_NAME = 100


async def _link(request: web.Request) -> tuple[AckLink, StoredAlert]:
    """The link followed and its alert: LinkRefused or RequestError naming why not."""
    alert_id = parse_id(request.match_info["id"])
    key = await signing_key(request.app)
    link = AckLink.checked(key, alert_id, request.query, now_ns())
    alert = await request.app[STORE].get_alert(alert_id)
    return link, alert


def _link_page(status: int, message: str, alert: StoredAlert | None = None) -> web.Response:
    """The link's page saying `message` (and showing the alert), with no button."""
    return _page("ack.html", status=status, session=None, message=message, alert=alert,
                 link=None, action="")  # fmt: skip


def _done_already(alert: StoredAlert) -> str | None:
    """Why the link has nothing left to do, if it has not."""
    if alert.status != "firing":
        return f"Alert {alert.id} ({alert.alertname}) is resolved: nothing to acknowledge."
    if alert.acked_by is not None:
        return (f"Alert {alert.id} ({alert.alertname}) is acknowledged already, by"
                f" {alert.acked_by} at {format_time(alert.acked_at)}.")  # fmt: skip
    return None


@routes.get("/ack/{id}")
async def ack_link_page(request: web.Request) -> web.Response:
    """Where an acknowledgement link leads: the alert and a button. A GET changes nothing
    (link previews and mail scanners fetch every URL); the button POSTs."""
    try:
        link, alert = await _link(request)
    except LinkRefused as exc:
        return _link_page(403, str(exc))
    except RequestError as exc:
        return _link_page(status_of(exc), str(exc))
    done = _done_already(alert)
    if done is not None:
        return _link_page(200, done, alert=alert)
    return _page("ack.html", session=None, message=None, alert=alert, link=link,
                 action=request.path_qs)  # fmt: skip


@routes.post("/ack/{id}")
async def ack_link_act(request: web.Request) -> web.Response:
    """Acknowledge by the link: as its person (or the name given, for a link to whoever
    follows it), "via link"; the escalation stops and the alert is silenced as any ack."""
    try:
        link, alert = await _link(request)
    except LinkRefused as exc:
        return _link_page(403, str(exc))
    except RequestError as exc:
        return _link_page(status_of(exc), str(exc))
    form = await request.post()
    by = link.person or str(form.get("name") or "").strip()
    if not by or len(by) > MAX_NAME or by in SYSTEM_ACTORS:
        return _page("ack.html", status=400, session=None, alert=alert, link=link,
                     action=request.path_qs,
                     message=f"Give your name (at most {MAX_NAME} characters).")  # fmt: skip
    comment = str(form.get("comment") or "").strip()[:MAX_TEXT]
    try:
        acked = await request.app[STORE].acknowledge(
            alert.id, by, "via link" + (f": {comment}" if comment else ""), now_ns()
        )
    except RequestError as exc:  # acknowledged or resolved meanwhile
        return _link_page(status_of(exc), str(exc), alert=alert)
    observe_ack(request, acked)
    await kick_reconciler(request.app)
    return _link_page(200, f"Acknowledged by {by}: escalation stops, and Alertmanager silences"
                      " the alert.", alert=acked)  # fmt: skip


# --- reports --------------------------------------------------------------------------------


def bars(pairs: list[tuple[str, float]], unit: str = "") -> dict[str, Any]:
    """A horizontal bar chart as numbers the template draws (server-side: no script): each
    bar's length in percent of the largest, drawn by an SVG that stretches to its line (the
    labels and values stay text, readable at any width)."""
    top = max((v for _, v in pairs), default=0) or 1
    return {"rows": [{"label": k, "value": v, "percent": round(100 * v / top, 1),
                      "text": _fmt(v, unit)} for k, v in pairs]}  # fmt: skip


def _fmt(value: float, unit: str) -> str:
    return seconds_text(value) if unit == "s" else f"{value:g}"


@routes.get("/reports")
@signed_in
async def reports_page(request: web.Request, session: Session) -> web.Response:
    data = await report_data(request)
    tta = data["time_to_acknowledge"]["rule"]
    ttr = data["time_to_resolve"]["rule"]
    charts = {
        "noisiest": bars([(r["rule"], r["episodes"]) for r in data["noisiest_rules"]]),
        "tta": bars([(k, v["median_seconds"]) for k, v in tta.items()], "s"),
        "ttr": bars([(k, v["median_seconds"]) for k, v in ttr.items()], "s"),
    }
    return _page("reports.html", session=session, data=data, charts=charts, fmt=_fmt,
                 since=request.query.get("since", "30d"), until=request.query.get("until", ""),
                 flap=request.query.get("flap", "10m"))  # fmt: skip


# --- static files ---------------------------------------------------------------------------


@routes.get("/static/{name}")
async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    response = web.Response(body=(HERE / "static" / name).read_bytes(),
                            content_type=STATIC[name])  # fmt: skip
    _harden(response)
    response.headers["Cache-Control"] = "no-cache"
    return response
