"""Alertmanager API v2: silences for acknowledgements, and reconciliation of the store with it.

Acknowledging an alert only records intent (`silence_state`: pending, expiring); the
reconciler, woken at once by `kick()` and otherwise every interval, does the talking:
- creates a silence with exact-equality matchers on the alert's full label set, and extends
  it before it ends while the alert still fires (up to an optional maximum ack duration);
- expires it on unacknowledgement or resolution;
- learns resolutions Alertmanager cannot send (a silenced alert sends no "resolved"): a stored
  firing alert that GET /api/v2/alerts no longer lists, or lists with a past endsAt, is over;
- inserts alerts Alertmanager has firing that the store lacks (the bridge was down).
Failures are retried with exponential backoff per alert; nothing here blocks the webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from bridge.actions import resolve_learnt, set_silence
from bridge.episodes import ingest
from bridge.errors import AlertmanagerError, InvalidInput
from bridge.store import NS, Job, Store, StoredAlert, firing_from_alertmanager, now_ns, silence_work
from bridge.webhook import ReceivedAlert, parse_time

log = logging.getLogger(__name__)
T = TypeVar("T")


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

    async def expire_silence(self, silence_id: str) -> None:
        """Expire a silence; one that is unknown or already expired counts as done."""
        try:
            await self._request("DELETE", f"/api/v2/silence/{silence_id}")
        except AlertmanagerError as exc:
            # 0.25 answers 500 "silence not found" (404 from 0.26) and refuses expired ones.
            if "not found" in str(exc) or "already expired" in str(exc):
                return
            raise

    async def silence(self, silence_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", f"/api/v2/silence/{silence_id}")
        return result

    async def alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds (active, silenced, inhibited)."""
        result = await self._request("GET", "/api/v2/alerts")
        if not isinstance(result, list):
            raise AlertmanagerError("unexpected answer to GET /api/v2/alerts")
        return result


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
        client: AlertmanagerClient,
        *,
        silence_seconds: int = 3600,
        max_ack_seconds: int | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.submit = submit
        self.client = client
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
            await self._sync_alerts()
        except AlertmanagerError as exc:
            self.failures += 1
            log.warning("reconciliation skipped: %s", exc)
        for alert in await self._read(silence_work):
            if self._due(alert.id):
                try:
                    await self._silence_step(alert)
                    self._backoff.pop(alert.id, None)
                except AlertmanagerError as exc:
                    self._failed(alert.id, exc)

    async def _sync_alerts(self) -> None:
        listed = await self.client.alerts()
        now = now_ns()
        active: dict[tuple[str, int], dict[str, Any]] = {}
        for item in listed:
            try:
                starts = parse_time(item.get("startsAt"), "startsAt")
                ends = parse_time(item.get("endsAt", "0001-01-01T00:00:00Z"), "endsAt")
            except InvalidInput:
                continue
            if starts is not None and (ends is None or ends > now):
                active[(str(item.get("fingerprint")), starts)] = item
        stored = await self._read(firing_from_alertmanager)
        stored_keys = {(a.fingerprint, a.starts_at) for a in stored}
        for alert in stored:
            if (alert.fingerprint, alert.starts_at) not in active:
                await self.submit(
                    resolve_learnt(alert.id, now, "Alertmanager no longer lists it as active")
                )
        missing = [
            ReceivedAlert(
                fingerprint=fingerprint,
                status="firing",
                starts_at=starts,
                ends_at=None,
                labels=dict(sorted(item.get("labels", {}).items())),
                annotations=dict(sorted(item.get("annotations", {}).items())),
                generator_url=str(item.get("generatorURL", "")),
            )
            for (fingerprint, starts), item in active.items()
            if (fingerprint, starts) not in stored_keys and "alertname" in item.get("labels", {})
        ]
        if missing:
            await self.submit(ingest(missing, now, source="alertmanager", actor="reconciler"))

    async def _silence_step(self, alert: StoredAlert) -> None:
        now = now_ns()
        state = alert.silence_state
        wanted = alert.acknowledged and alert.status == "firing"
        if state == "pending" and not wanted:
            await self.submit(set_silence(alert.id, None, now))
            return
        if state in ("expiring", "active") and not wanted:
            if alert.silence_id:
                await self.client.expire_silence(alert.silence_id)
            why = "alert resolved" if alert.status == "resolved" else "acknowledgement withdrawn"
            await self.submit(
                set_silence(alert.id, "expired", now, event=("expired", "alertbridge", why))
            )
            return
        if state == "active" and alert.silenced_until is not None:
            if alert.silenced_until - now > self.silence_seconds * NS // 2:
                return  # plenty of time left
            assert alert.acked_at is not None
            if self.max_ack_seconds and now - alert.acked_at > self.max_ack_seconds * NS:
                if alert.silenced_until <= now:
                    reason = "maximum acknowledgement duration reached"
                    event = ("expired", "alertbridge", reason)
                    await self.submit(set_silence(alert.id, "expired", now, event=event))
                return  # let the silence run out
        until = now + self.silence_seconds * NS
        silence_id = await self.client.create_silence(
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
