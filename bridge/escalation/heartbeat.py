"""The dead man's switch on the whole pipeline. Prometheus fires AlertbridgeHeartbeat always;
the generated route sends it to the bridge alone every heartbeat interval; the webhook
records each arrival (AlertStore.record_heartbeat). The watchdog here checks the age of the
last one (a bridge that never had one: the time since it started, against twice the
timeout): past the timeout it raises a local critical alert, AlertingPipelineSilent, and
tells the `heartbeat.notify` receiver directly (a webhook, in Alertmanager's webhook format,
or Microsoft Teams), since Alertmanager may be what broke. When heartbeats come back, the
alert is resolved and the receiver told so.

>>> silent_alert(0, "firing").labels["alertname"]
'AlertingPipelineSilent'
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

import aiohttp

from bridge.channels import CHANNELS
from bridge.channels.delivery import DeliveryError, send
from bridge.config import Receiver, Settings
from bridge.core.alerts import Notification, ReceivedAlert
from bridge.core.policies import SILENT_ALERT
from bridge.core.times import NS, format_duration
from bridge.store import AlertQuery, StoredAlert
from bridge.store.interface import Intake

log = logging.getLogger(__name__)
FINGERPRINT = hashlib.sha256(b"alertbridge/" + SILENT_ALERT.encode()).hexdigest()[:16]
ZERO = "0001-01-01T00:00:00Z"


def silent_alert(starts_at: int, status: str, ends_at: int | None = None,
                 timeout: int = 300) -> ReceivedAlert:  # fmt: skip
    """The local alert raised when the heartbeat stops (the same episode when resolved)."""
    wait = format_duration(timeout)
    return ReceivedAlert(
        fingerprint=FINGERPRINT,
        status=status,
        starts_at=starts_at,
        ends_at=ends_at,
        labels={"alertname": SILENT_ALERT, "alertbridge": "heartbeat", "severity": "critical"},
        annotations={
            "summary": f"Alerting pipeline silent: no heartbeat for {wait}",
            "description": "Alertmanager has not delivered the AlertbridgeHeartbeat alert to"
            f" the bridge for {wait}: Prometheus, Alertmanager or the path between them and"
            " the bridge is down, and alerts may not be delivered.",
        },
        generator_url="",
    )


class Watchdog:
    """Checks the heartbeat's age (`check()`, called every few seconds by the server)."""

    def __init__(
        self,
        store: Intake,
        settings: Settings,
        session: aiohttp.ClientSession | None,
        *,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.store = store
        self.settings = settings
        self.session = session
        self.clock = clock
        self.started_at = clock()
        self.timeout = settings.heartbeat.timeout
        self.last: int | None = None
        self.state = "waiting"  # waiting (none yet, within the timeout) | ok | silent
        self.pending: ReceivedAlert | None = None  # to tell the direct receiver
        self.sent = 0
        self.failures = 0
        name = settings.heartbeat.notify
        self.receiver: Receiver | None = next(
            (r for r in settings.alertmanager.receivers if r.name == name), None
        )

    def age(self) -> float:
        """Seconds since the last heartbeat (NaN when none arrived yet)."""
        return float("nan") if self.last is None else (self.clock() - self.last) / NS

    async def _open(self) -> StoredAlert | None:
        found = await self.store.list_alerts(AlertQuery(status="firing", rule=SILENT_ALERT,
                                                        limit=1))  # fmt: skip
        return found[0] if found else None

    async def check(self) -> str:
        """Raise or resolve AlertingPipelineSilent as the heartbeat's age says, and tell the
        direct receiver (again at the next check when it failed). The state."""
        now = self.clock()
        self.last = await self.store.last_heartbeat()
        # Never a heartbeat here yet: twice the timeout from the start (Prometheus's first
        # evaluation, Alertmanager's discovery and its retries take their time at start-up).
        since, limit = self.last, self.timeout
        if since is None:
            since, limit = self.started_at, 2 * self.timeout
        silent = await self._open()
        if now - since > limit * NS:
            self.state = "silent"
            if silent is None:
                alert = silent_alert(now, "firing", timeout=self.timeout)
                await self.store.ingest([alert], now, source="local", actor="heartbeat")
                log.error("no heartbeat for %ss: AlertingPipelineSilent raised", self.timeout)
                self.pending = alert
        else:
            self.state = "ok" if self.last is not None else "waiting"
            if silent is not None and self.last is not None and self.last > silent.starts_at:
                alert = silent_alert(silent.starts_at, "resolved", now, self.timeout)
                await self.store.ingest([alert], now, source="local", actor="heartbeat")
                log.warning("heartbeat back: AlertingPipelineSilent resolved")
                self.pending = alert
        if self.pending is not None and await self._tell(self.pending):
            self.pending = None
        return self.state

    async def _tell(self, alert: ReceivedAlert) -> bool:
        """Deliver to the direct receiver (none configured: nothing to do); whether done."""
        receiver = self.receiver
        if receiver is None or self.session is None:
            return True
        notification = Notification(receiver.name, alert.status, "alertbridge/heartbeat", 0,
                                    (alert,))  # fmt: skip
        latest = await self.store.list_alerts(AlertQuery(rule=SILENT_ALERT, limit=1))
        ids = {FINGERPRINT: latest[0].id} if latest else {}
        try:
            await send(CHANNELS[receiver.type], receiver.config, self.session, notification, ids,
                       self.settings.server.public_url)  # fmt: skip
        except DeliveryError as exc:
            self.failures += 1
            log.error("dead man's switch: telling %s failed: %s; retrying", receiver.name, exc)
            return False
        self.sent += 1
        return True
