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
  episode reopens it); so is one not muted that the replicas listed before (its "resolved"
  was lost), but never one they never listed (another cluster may notify this bridge).
  Only while the list can be trusted: a replica that restarted answers
  [] until Prometheus resends (every --rules.alert.resend-delay, 1 m by default), so
  resolution is inferred only when a replica up for longer than the resend window answered;
  an alert that any replica lists is not resolved;
- inserts alerts Alertmanager has firing that the store lacks (the bridge was down).
Failures are retried with exponential backoff per alert; nothing here blocks the webhook.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from bridge.alertmanager.client import AlertmanagerCluster, ReplicaList
from bridge.core.alerts import DEFAULT_LIMITS, AlertLimits, ReceivedAlert, parse_time
from bridge.core.errors import AlertmanagerError, InvalidInput
from bridge.core.logutil import log_failure
from bridge.core.policies import is_copy, is_internal
from bridge.core.times import NS, ZERO_TIME, now_ns
from bridge.host.aio import wait_event
from bridge.ingest.episodes import PROVISIONAL
from bridge.ingest.webhook import alert_from_api
from bridge.store import AmView, SilenceChange, StoredAlert
from bridge.store.interface import Intake

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class _Backoff:
    failures: int = 0
    next_try: float = 0.0


class Reconciler:
    """Keeps silences and alert states in step with Alertmanager."""

    def __init__(
        self,
        store: Intake,
        cluster: AlertmanagerCluster,
        *,
        silence_seconds: int = 3600,
        max_ack_seconds: int | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        on_round: Callable[[str], None] | None = None,
        limits: AlertLimits = DEFAULT_LIMITS,
        held: Callable[[Mapping[str, str], int], bool] = lambda labels, at: False,
    ) -> None:
        self.store = store
        #: Whether Alertmanager holds an alert's notifications at `at` (its rule's window is
        #: closed: active_time_intervals), which its API does not say (0.25 lists it active):
        #: such an alert is not taken from the list either, as the webhook would not bring it.
        self.held = held
        self.limits = limits  # the webhook's: an alert is read the same either way
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
        for alert in await self.store.silence_work():
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
        listed = _merge(answered, now, self.limits)
        trusted = any(r.trusted for r in answered)
        stored = await self.store.firing("alertmanager")
        # (an alert inhibited by an escalation copy is named by the copy's alert's number)
        ids = {**copies_of(answered), **{a.fingerprint: a.id for a in stored}}
        views: list[AmView] = []
        for alert in stored:
            seen = listed.get((alert.fingerprint, alert.starts_at))
            if seen is not None:
                views.append(seen.view(alert.id, ids))
            elif trusted and (_muted(alert) or alert.am_state is not None):
                # Muted, Alertmanager sends no "resolved"; not muted, the one it sent was
                # lost (the bridge was down past its retries, or refused it): either way it
                # is over, and nothing else would ever say so. One these replicas never
                # listed is left alone: another cluster may notify this bridge too.
                why = _INFERRED if _muted(alert) else _UNLISTED
                await self.store.resolve_inferred(alert.id, now, why)
        # Listed active but not stored firing: inserted when unknown (the bridge was down),
        # reopened when the bridge resolved it itself; left alone when Alertmanager did.
        firing_keys = {(a.fingerprint, a.starts_at) for a in stored}
        others = [seen.alert for key, seen in listed.items() if key not in firing_keys]
        known = await self.store.resolutions([(a.fingerprint, a.starts_at) for a in others])
        missing = [
            listed[key]
            for key in ((a.fingerprint, a.starts_at) for a in others)
            if (key not in known or known[key] in PROVISIONAL)
            and not self.held(listed[key].alert.labels, now)
        ]
        if missing:
            alerts = [m.alert for m in missing]
            await self.store.ingest(alerts, now, source="alertmanager", actor="reconciler")
            found = await self.store.ids_of([(a.fingerprint, a.starts_at) for a in alerts])
            ids |= {fp: i for (fp, _), i in found.items()}
            views += [m.view(found[key], ids) for m in missing
                      if (key := (m.alert.fingerprint, m.alert.starts_at)) in found]  # fmt: skip
        await self.store.set_am_states(views)
        return "trusted" if trusted else "untrusted"

    async def _silence_step(self, alert: StoredAlert) -> None:
        now = now_ns()
        state = alert.silence_state
        wanted = alert.acknowledged and alert.status == "firing"
        if state == "pending" and not wanted:
            await self.store.set_silence(alert.id, now, SilenceChange(None))
            return
        if state in ("expiring", "active") and not wanted:
            if alert.silence_id:
                await self.cluster.expire_silence(alert.silence_id)
            why = "alert resolved" if alert.status == "resolved" else "acknowledgement withdrawn"
            change = SilenceChange("expired", event=("expired", "alertbridge", why))
            await self.store.set_silence(alert.id, now, change)
            return
        if state == "active" and alert.silenced_until is not None:
            if alert.silenced_until - now > self.silence_seconds * NS // 2:
                return  # plenty of time left
            acked_at = alert.acked_at if alert.acked_at is not None else now
            if self.max_ack_seconds and now - acked_at > self.max_ack_seconds * NS:
                if alert.silenced_until <= now:
                    reason = "maximum acknowledgement duration reached"
                    change = SilenceChange("expired", event=("expired", "alertbridge", reason))
                    await self.store.set_silence(alert.id, now, change)
                return  # let the silence run out
        until = now + self.silence_seconds * NS
        silence_id = await self.cluster.create_silence(
            {**alert.labels},
            now,
            until,
            alert.acked_by or "alertbridge",
            f"{alert.ack_comment or 'acknowledged'} (alertbridge alert {alert.id})",
            silence_id=alert.silence_id if state == "active" else None,
            clipped=alert.clipped,
        )
        created = None
        if state == "pending":
            created = ("silenced", alert.acked_by or "alertbridge", silence_id)
        await self.store.set_silence(
            alert.id, now, SilenceChange("active", silence_id, until, event=created)
        )

    async def run_forever(self, interval: float) -> None:
        """Rounds every `interval` seconds, or sooner when kicked. A kick during a round
        (an ack while the round talks to Alertmanager) is kept for the next one, at once: it
        was cleared after the round, and the ack's silence then waited the whole interval."""
        while True:
            self.wake.clear()  # before the round: what kicks during it is not lost
            try:
                await self.run_once()
            except Exception as exc:
                log_failure(log, exc, "reconciliation round failed")
            await wait_event(self.wake, interval)


_INFERRED = (
    "Alertmanager no longer lists it, and it was muted (silenced or inhibited), so no"
    " resolved notification comes"
)
_UNLISTED = "Alertmanager no longer lists it, and no resolved notification of it was stored"


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


def copies_of(answered: Sequence[ReplicaList]) -> dict[str, int]:
    """The escalation copies the replicas list, by fingerprint: the number of the alert each
    copies (its `alertbridge_id` annotation), so that an alert a copy inhibits (a warning
    under its critical's copy) is said to be inhibited by that alert, not by a fingerprint
    nobody knows."""
    out: dict[str, int] = {}
    for replica in answered:
        for item in replica.alerts or ():
            if not isinstance(item, dict):
                continue
            labels, annotations = item.get("labels"), item.get("annotations")
            fingerprint = item.get("fingerprint")
            if not (isinstance(labels, dict) and isinstance(annotations, dict)
                    and isinstance(fingerprint, str) and is_copy(labels)):  # fmt: skip
                continue
            number = str(annotations.get("alertbridge_id", ""))
            if number.isascii() and number.isdigit():
                out[fingerprint] = int(number)
    return out


def _merge(
    answered: Sequence[ReplicaList], now: int, limits: AlertLimits = DEFAULT_LIMITS
) -> dict[tuple[str, int], _Seen]:
    """The alerts active now in any answering replica, by episode (fingerprint, startsAt to
    the millisecond), read by the webhook's rules (bridge.ingest.webhook.alert_from_api)."""
    merged: dict[tuple[str, int], _Seen] = {}
    for replica in answered:
        for item in replica.alerts or ():
            if not isinstance(item, dict):
                continue
            try:
                alert = alert_from_api(item, limits)
                ends = parse_time(item.get("endsAt", ZERO_TIME), "endsAt")
            except InvalidInput:
                continue
            if (ends is not None and ends <= now) or is_internal(alert.labels):
                continue  # escalation copies, the heartbeat, channel tests: not alerts
            key = (alert.fingerprint, alert.starts_at)
            seen = merged.get(key)
            if seen is None:
                seen = merged[key] = _Seen(alert, state="")
            seen.add(item.get("status"))
            if not seen.state:
                seen.state = "active"
    return merged
