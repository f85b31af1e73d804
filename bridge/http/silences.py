"""Silences the page makes and shows: a snooze (a silence on one alert's labels for a while,
with the operator's comment, recorded in the alert's trail), the list of Alertmanager's
silences, and their expiry.

A snooze is not an acknowledgement: the alert stays firing and unacknowledged, its escalation
goes on (Alertmanager sends nothing while the silence holds: the escalation copies carry the
alert's labels plus their own, so the silence mutes them too), and the silence simply ends.
The reconciler's next round shows the alert muted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import aiohttp

from bridge.alertmanager.client import AlertmanagerCluster
from bridge.core.errors import AlertmanagerError, Conflict, Unprocessable
from bridge.core.times import NS, format_time, parse_duration, parse_rfc3339
from bridge.http.errors import HttpError
from bridge.store import StoredAlert
from bridge.store.interface import Actions

#: How the bridge's silences name their alert: an acknowledgement's "(alertbridge alert 7)",
#: a snooze's "(alert 7)".
_ABOUT = re.compile(r"\((alertbridge alert|alert) (\d{1,18})\)")
#: The lengths the page offers (any duration up to MAX_SNOOZE is taken).
CHOICES = ("15m", "1h", "4h", "8h", "24h")
MAX_SNOOZE = 7 * 86400


def cluster(urls: Sequence[str], session: aiohttp.ClientSession) -> AlertmanagerCluster:
    """The configured Alertmanager; 409 when there is none."""
    if not urls:
        raise HttpError(
            409, "no_alertmanager", "No Alertmanager is configured (alertmanager.url): no silences."
        )
    return AlertmanagerCluster.of(urls, session)


def _unavailable(what: str, exc: AlertmanagerError) -> HttpError:
    return HttpError(502, "alertmanager_unavailable", f"{what}: {exc}")


def snooze_seconds(raw: str, what: str = "a snooze") -> int:
    """Seconds of a chosen length (default 1h), 1m to 7d; Unprocessable naming `for`."""
    try:
        seconds = parse_duration(raw or "1h")
    except ValueError as exc:
        raise Unprocessable("for", str(exc)) from None
    if not 60 <= seconds <= MAX_SNOOZE:
        raise Unprocessable("for", f"{what} lasts from 1m to 7d")
    return seconds


async def snooze(store: Actions, silences: AlertmanagerCluster, alert: StoredAlert, by: str,
                 raw_for: str, comment: str, at: int) -> str:  # fmt: skip
    """Silence `alert`'s labels for the chosen time and record it in its trail; the
    silence's id. Conflict for an alert that is not firing."""
    seconds = snooze_seconds(raw_for)
    if alert.status != "firing":
        raise Conflict(f"alert {alert.id} is {alert.status}: nothing to snooze")
    until = at + seconds * NS
    said = f"snoozed from alertbridge (alert {alert.id}) for {raw_for or '1h'}"
    try:
        silence_id = await silences.create_silence(
            alert.labels,
            at,
            until,
            by,
            f"{said}: {comment}" if comment else said,
            clipped=alert.clipped,
        )
    except AlertmanagerError as exc:
        raise _unavailable("Alertmanager did not take the silence", exc) from None
    detail = f"for {raw_for or '1h'}, until {format_time(until)}, silence {silence_id}"
    await store.add_note(alert.id, by, f"{detail}: {comment}" if comment else detail, at,
                         kind="snoozed")  # fmt: skip
    return silence_id


def _matchers(silence: dict[str, Any]) -> str:
    out = []
    for m in silence.get("matchers") or []:
        op = ("=~" if m.get("isRegex") else "=") if m.get("isEqual", True) else (
            "!~" if m.get("isRegex") else "!=")  # fmt: skip
        out.append(f'{m.get("name")}{op}"{m.get("value")}"')
    return ", ".join(out)


async def listed(silences: AlertmanagerCluster) -> list[dict[str, Any]]:
    """Alertmanager's silences that are active or pending, soonest to end first, as the page
    shows them (expired ones are Alertmanager's history, not something to act on)."""
    try:
        raw = await silences.silences()
    except AlertmanagerError as exc:
        raise _unavailable("Alertmanager did not answer", exc) from None
    out = []
    for s in raw:
        state = (s.get("status") or {}).get("state")
        if state not in ("active", "pending"):
            continue
        try:
            ends = parse_rfc3339(str(s.get("endsAt")))
        except ValueError:
            ends = None
        comment = str(s.get("comment", ""))
        about = _ABOUT.search(comment)
        out.append({"id": str(s.get("id")), "state": state, "matchers": _matchers(s),
                    "created_by": s.get("createdBy", ""), "comment": comment, "ends_at": ends,
                    "alert": int(about.group(2)) if about else None,
                    "ack": bool(about and about.group(1) == "alertbridge alert")})  # fmt: skip
    return sorted(out, key=lambda s: (s["ends_at"] is None, s["ends_at"] or 0))
