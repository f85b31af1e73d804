"""Alertmanager API v2: silences for acknowledgements, and reconciliation of the store with it.

Acknowledging an alert only records intent (`silence_state`: pending, expiring); the
reconciler, woken at once by `kick()` and otherwise every interval, does the talking, to the
replicas of one Alertmanager cluster (`AlertmanagerCluster`):
- creates a silence with exact-equality matchers on the alert's full label set on the first
  replica that answers (replicas gossip silences), and extends it before it ends while the
  alert still fires (up to an optional maximum ack duration); expires it on unack or
  resolution;
- stores Alertmanager's view of every firing alert: active, or suppressed with the ids of the
  silences and of the inhibiting alerts (merged over the replicas that answered: active if any
  lists it active);
- learns the resolutions Alertmanager will never send: a muted alert (silenced, by our ack or
  anyone's, or inhibited) sends no "resolved", so one that Alertmanager no longer lists, or
  lists with a past endsAt, is marked resolved, provisionally (a later firing delivery of the
  episode reopens it). Only while the list can be trusted: a replica that restarted answers
  [] until Prometheus resends (every --rules.alert.resend-delay, 1 m by default), so
  resolution is inferred only when a replica up for longer than the resend window answered;
  an alert that any replica lists is not resolved;
- inserts alerts Alertmanager has firing that the store lacks (the bridge was down).
Failures are retried with exponential backoff per alert; nothing here blocks the webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from bridge.actions import AmView, resolve_inferred, set_am_states, set_silence
from bridge.episodes import PROVISIONAL, ingest
from bridge.errors import AlertmanagerError, InvalidInput
from bridge.store import (
    NS,
    Job,
    Store,
    StoredAlert,
    episode_ids,
    episode_states,
    firing_from_alertmanager,
    now_ns,
    silence_work,
)
from bridge.webhook import ReceivedAlert, parse_time

log = logging.getLogger(__name__)
T = TypeVar("T")
_ZERO_TIME = "0001-01-01T00:00:00Z"


def _rfc3339(ns: int) -> str:
    seconds, frac = divmod(ns, NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac // 1000:06d}Z"


class AlertmanagerClient:
    """A small client of the v2 API on one aiohttp session."""

    def __init__(self, url: str, session: aiohttp.ClientSession, timeout: float = 5.0) -> None:
        self.base = url.rstrip("/")
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            async with self.session.request(
                method, self.base + path, json=body, timeout=self.timeout
            ) as response:
                text = await response.text()
                if response.status >= 300:
                    raise AlertmanagerError(
                        f"{method} {path}: HTTP {response.status}: {text.strip()[:200]}"
                    )
                return await response.json(content_type=None) if text.strip() else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AlertmanagerError(f"{method} {path}: {exc.__class__.__name__}: {exc}") from None

    async def create_silence(
        self,
        labels: Mapping[str, str],
        starts_at: int,
        ends_at: int,
        created_by: str,
        comment: str,
        silence_id: str | None = None,
    ) -> str:
        """Create (or, with `silence_id`, update) a silence matching exactly these labels."""
        body: dict[str, Any] = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in sorted(labels.items())
            ],
            "startsAt": _rfc3339(starts_at),
            "endsAt": _rfc3339(ends_at),
            "createdBy": created_by,
            "comment": comment,
        }
        if silence_id:
            body["id"] = silence_id
        result = await self._request("POST", "/api/v2/silences", body)
        if not isinstance(result, dict) or not isinstance(result.get("silenceID"), str):
            raise AlertmanagerError(f"unexpected answer to POST /api/v2/silences: {result!r}")
        silence_id_out: str = result["silenceID"]
        return silence_id_out

    async def expire_silence(self, silence_id: str) -> bool:
        """Expire a silence; False when this replica does not know it or it already expired."""
        try:
            await self._request("DELETE", f"/api/v2/silence/{silence_id}")
        except AlertmanagerError as exc:
            # 0.25 answers 500 "silence not found" (404 from 0.26) and refuses expired ones.
            if "not found" in str(exc) or "already expired" in str(exc):
                return False
            raise
        return True

    async def silence(self, silence_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", f"/api/v2/silence/{silence_id}")
        return result

    async def alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds (active, silenced, inhibited)."""
        result = await self._request("GET", "/api/v2/alerts")
        if not isinstance(result, list):
            raise AlertmanagerError("unexpected answer to GET /api/v2/alerts")
        return result

    async def started_at(self) -> int:
        """When this replica started (GET /api/v2/status `uptime`, an RFC 3339 time), ns."""
        result = await self._request("GET", "/api/v2/status")
        try:
            started = parse_time(result.get("uptime") if isinstance(result, dict) else None, "")
        except InvalidInput:
            started = None
        if started is None:
            raise AlertmanagerError("GET /api/v2/status: no uptime in the answer")
        return started


@dataclass(frozen=True, slots=True)
class ReplicaList:
    """What one replica answered to GET /api/v2/alerts, and whether it can be trusted to
    list every alert (it has been up for longer than Prometheus's resend window)."""

    url: str
    alerts: list[dict[str, Any]] | None  # None: it did not answer
    trusted: bool = False
    error: str = ""


class AlertmanagerCluster:
    """The replicas of one Alertmanager cluster (one URL for a single Alertmanager).

    Reads ask every replica; writes go to the first that answers, since replicas gossip
    silences.
    """

    def __init__(self, clients: Sequence[AlertmanagerClient], resend_window: float = 90.0):
        if not clients:
            raise ValueError("at least one Alertmanager")
        self.clients = list(clients)
        self.resend_window = resend_window

    @classmethod
    def of(
        cls, urls: Sequence[str], session: aiohttp.ClientSession, resend_window: float = 90.0
    ) -> AlertmanagerCluster:
        return cls([AlertmanagerClient(u, session) for u in urls], resend_window)

    async def lists(self, now: int) -> list[ReplicaList]:
        """Every replica's list (None for those that did not answer), with its trust."""

        async def one(client: AlertmanagerClient) -> ReplicaList:
            try:
                started, alerts = await asyncio.gather(client.started_at(), client.alerts())
            except AlertmanagerError as exc:
                return ReplicaList(client.base, None, error=str(exc))
            return ReplicaList(client.base, alerts, now - started > self.resend_window * NS)

        return list(await asyncio.gather(*(one(c) for c in self.clients)))

    async def _first(self, what: str, call: Callable[[AlertmanagerClient], Awaitable[T]]) -> T:
        errors = []
        for client in self.clients:
            try:
                return await call(client)
            except AlertmanagerError as exc:
                errors.append(f"{client.base}: {exc}")
        raise AlertmanagerError(f"{what}: no Alertmanager answered ({'; '.join(errors)})")

    async def create_silence(
        self,
        labels: Mapping[str, str],
        starts_at: int,
        ends_at: int,
        created_by: str,
        comment: str,
        silence_id: str | None = None,
    ) -> str:
        """Create or update a silence on the first replica that answers."""
        return await self._first(
            "silence",
            lambda c: c.create_silence(labels, starts_at, ends_at, created_by, comment,
                                       silence_id),
        )  # fmt: skip

    async def expire_silence(self, silence_id: str) -> None:
        """Expire a silence: done on the first replica that knows it (gossip spreads it), or
        when every replica answered that it knows none such (unknown or already expired)."""
        errors = []
        for client in self.clients:
            try:
                if await client.expire_silence(silence_id):
                    return
            except AlertmanagerError as exc:
                errors.append(f"{client.base}: {exc}")
        if errors:
            raise AlertmanagerError(f"expire {silence_id}: {'; '.join(errors)}")


@dataclass(slots=True)
class _Backoff:
    failures: int = 0
    next_try: float = 0.0


class Reconciler:
    """Keeps silences and alert states in step with Alertmanager."""

    def __init__(
        self,
        store: Store,
        submit: Callable[[Job[Any]], Awaitable[Any]],
        cluster: AlertmanagerCluster,
        *,
        silence_seconds: int = 3600,
        max_ack_seconds: int | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        on_round: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.submit = submit
        self.cluster = cluster
        self.on_round = on_round or (lambda outcome: None)
        self.silence_seconds = silence_seconds
        self.max_ack_seconds = max_ack_seconds
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.clock = clock
        self.wake = asyncio.Event()
        self._backoff: dict[int, _Backoff] = {}
        self.failures = 0

    def kick(self) -> None:
        """Run a round as soon as possible (after an ack, unack or resolution)."""
        self.wake.set()

    async def _read(self, fn: Callable[[Any], T]) -> T:
        return await asyncio.to_thread(self.store.read, fn)

    def _due(self, alert_id: int) -> bool:
        state = self._backoff.get(alert_id)
        return state is None or self.clock() >= state.next_try

    def _failed(self, alert_id: int, exc: Exception) -> None:
        state = self._backoff.setdefault(alert_id, _Backoff())
        state.failures += 1
        delay = min(self.backoff_max, self.backoff_base * 2 ** (state.failures - 1))
        state.next_try = self.clock() + delay
        self.failures += 1
        log.warning("alert %d: Alertmanager call failed (retry in %.0fs): %s", alert_id, delay, exc)

    async def run_once(self) -> None:
        """One round: learn from GET /api/v2/alerts, then do the pending silence work."""
        try:
            self.on_round(await self._sync_alerts())
        except AlertmanagerError as exc:
            self.failures += 1
            self.on_round("failed")
            log.warning("reconciliation skipped: %s", exc)
        for alert in await self._read(silence_work):
            if self._due(alert.id):
                try:
                    await self._silence_step(alert)
                    self._backoff.pop(alert.id, None)
                except AlertmanagerError as exc:
                    self._failed(alert.id, exc)

    async def _sync_alerts(self) -> str:
        """Learn from the replicas' lists; "trusted" or "untrusted" (no replica that answered
        has been up for the resend window: nothing was inferred)."""
        now = now_ns()
        lists = await self.cluster.lists(now)
        answered = [r for r in lists if r.alerts is not None]
        if not answered:
            raise AlertmanagerError("; ".join(f"{r.url}: {r.error}" for r in lists))
        listed = _merge(answered, now)
        trusted = any(r.trusted for r in answered)
        stored = await self._read(firing_from_alertmanager)
        ids = {a.fingerprint: a.id for a in stored}
        views: list[AmView] = []
        for alert in stored:
            seen = listed.get((alert.fingerprint, alert.starts_at))
            if seen is not None:
                views.append(seen.view(alert.id, ids))
            elif trusted and _muted(alert):
                await self.submit(resolve_inferred(alert.id, now, _INFERRED))
        # Listed active but not stored firing: inserted when unknown (the bridge was down),
        # reopened when the bridge resolved it itself; left alone when Alertmanager did.
        firing_keys = {(a.fingerprint, a.starts_at) for a in stored}
        others = [seen.alert for key, seen in listed.items() if key not in firing_keys]
        known = await self._read(lambda c: episode_states(c, others)) if others else {}
        missing = [
            listed[key]
            for key in ((a.fingerprint, a.starts_at) for a in others)
            if key not in known or known[key] in PROVISIONAL
        ]
        if missing:
            alerts = [m.alert for m in missing]
            await self.submit(ingest(alerts, now, source="alertmanager", actor="reconciler"))
            found = await self._read(lambda c: episode_ids(c, alerts))
            ids |= {fp: i for (fp, _), i in found.items()}
            views += [m.view(found[key], ids) for m in missing
                      if (key := (m.alert.fingerprint, m.alert.starts_at)) in found]  # fmt: skip
        if views:
            await self.submit(set_am_states(views))
        return "trusted" if trusted else "untrusted"

    async def _silence_step(self, alert: StoredAlert) -> None:
        now = now_ns()
        state = alert.silence_state
        wanted = alert.acknowledged and alert.status == "firing"
        if state == "pending" and not wanted:
            await self.submit(set_silence(alert.id, None, now))
            return
        if state in ("expiring", "active") and not wanted:
            if alert.silence_id:
                await self.cluster.expire_silence(alert.silence_id)
            why = "alert resolved" if alert.status == "resolved" else "acknowledgement withdrawn"
            await self.submit(
                set_silence(alert.id, "expired", now, event=("expired", "alertbridge", why))
            )
            return
        if state == "active" and alert.silenced_until is not None:
            if alert.silenced_until - now > self.silence_seconds * NS // 2:
                return  # plenty of time left
            acked_at = alert.acked_at if alert.acked_at is not None else now
            if self.max_ack_seconds and now - acked_at > self.max_ack_seconds * NS:
                if alert.silenced_until <= now:
                    reason = "maximum acknowledgement duration reached"
                    event = ("expired", "alertbridge", reason)
                    await self.submit(set_silence(alert.id, "expired", now, event=event))
                return  # let the silence run out
        until = now + self.silence_seconds * NS
        silence_id = await self.cluster.create_silence(
            {**alert.labels},
            now,
            until,
            alert.acked_by or "alertbridge",
            f"{alert.ack_comment or 'acknowledged'} (alertbridge alert {alert.id})",
            silence_id=alert.silence_id if state == "active" else None,
        )
        created = None
        if state == "pending":
            created = ("silenced", alert.acked_by or "alertbridge", silence_id)
        await self.submit(set_silence(alert.id, "active", now, silence_id, until, event=created))

    async def run_forever(self, interval: float) -> None:
        """Rounds every `interval` seconds, or sooner when kicked."""
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("reconciliation round failed")
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), interval)


_INFERRED = (
    "Alertmanager no longer lists it, and it was muted (silenced or inhibited), so no"
    " resolved notification comes"
)


def _muted(alert: StoredAlert) -> bool:
    """Alertmanager sends no "resolved" for it: suppressed when last seen, or under our ack's
    silence."""
    return alert.am_state == "suppressed" or alert.silence_state == "active"


@dataclass(slots=True)
class _Seen:
    """An alert as the answering replicas list it, merged."""

    alert: ReceivedAlert
    state: str = "active"
    silenced_by: set[str] = field(default_factory=set)
    inhibited_by: set[str] = field(default_factory=set)

    def add(self, status: object) -> None:
        if not isinstance(status, dict):
            return
        state = status.get("state")
        if state == "active" or self.state == "active":
            self.state = "active"  # any replica that has it active wins
            self.silenced_by.clear()
            self.inhibited_by.clear()
            return
        self.state = state if isinstance(state, str) else "unprocessed"
        self.silenced_by |= {s for s in status.get("silencedBy") or () if isinstance(s, str)}
        self.inhibited_by |= {s for s in status.get("inhibitedBy") or () if isinstance(s, str)}

    def view(self, alert_id: int, ids: Mapping[str, int]) -> AmView:
        inhibitors = [(fp, ids.get(fp)) for fp in sorted(self.inhibited_by)]
        return (alert_id, self.state, sorted(self.silenced_by), inhibitors)


def _merge(answered: Sequence[ReplicaList], now: int) -> dict[tuple[str, int], _Seen]:
    """The alerts active now in any answering replica, by (fingerprint, startsAt)."""
    merged: dict[tuple[str, int], _Seen] = {}
    for replica in answered:
        for item in replica.alerts or ():
            try:
                starts = parse_time(item.get("startsAt"), "startsAt")
                ends = parse_time(item.get("endsAt", _ZERO_TIME), "endsAt")
            except InvalidInput:
                continue
            labels = item.get("labels")
            if starts is None or (ends is not None and ends <= now) or not isinstance(labels, dict):
                continue
            if "alertname" not in labels:
                continue
            fingerprint = str(item.get("fingerprint"))
            seen = merged.get((fingerprint, starts))
            if seen is None:
                alert = ReceivedAlert(
                    fingerprint=fingerprint, status="firing", starts_at=starts, ends_at=None,
                    labels=dict(sorted(labels.items())),
                    annotations=dict(sorted((item.get("annotations") or {}).items())),
                    generator_url=str(item.get("generatorURL", "")),
                )  # fmt: skip
                seen = merged[(fingerprint, starts)] = _Seen(alert, state="")
            seen.add(item.get("status"))
            if not seen.state:
                seen.state = "active"
    return merged
