"""A client of Alertmanager's API v2, and of a cluster of its replicas: reads ask every
replica, writes go to the first that answers (replicas gossip silences)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import orjson

from bridge.core.errors import AlertmanagerError
from bridge.core.times import NS, format_micros, parse_rfc3339

T = TypeVar("T")
#: What a regular expression of Go's RE2 treats as syntax (escaped with a backslash; RE2
#: refuses escapes of letters, digits and spaces, so nothing else is escaped).
_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$")


def re2_literal(text: str) -> str:
    """A regular expression (Go's RE2) matching exactly `text`.

    >>> print(re2_literal("a.b(c)"))
    a\\.b\\(c\\)
    """
    return "".join("\\" + c if c in _RE2_SPECIAL else c for c in text)


def silence_matchers(
    labels: Mapping[str, str], clipped: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Matchers of a silence on exactly this alert: equality on each label, or, for a value
    stored clipped (bridge.ingest.webhook.clip), a regular expression on its prefix (labels
    left out are not matched: a silence on a subset of the labels still matches the alert).

    >>> silence_matchers({"a": "x", "pod": "web-"}, ["labels.pod"])[1]
    {'name': 'pod', 'value': 'web-.*', 'isRegex': True, 'isEqual': True}
    """
    cut = {path.removeprefix("labels.") for path in clipped if path.startswith("labels.")}
    return [
        {"name": k, "value": re2_literal(v) + ".*", "isRegex": True, "isEqual": True}
        if k in cut
        else {"name": k, "value": v, "isRegex": False, "isEqual": True}
        for k, v in sorted(labels.items())
    ]


class AlertmanagerClient:
    """A small client of the v2 API on one aiohttp session."""

    def __init__(self, url: str, session: aiohttp.ClientSession, timeout: float = 5.0) -> None:
        self.base = url.rstrip("/")
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        # orjson: escalation posts hundreds of alerts a request (10x faster than json)
        data = None if body is None else orjson.dumps(body)
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with self.session.request(
                method, self.base + path, data=data, headers=headers, timeout=self.timeout
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
        clipped: Sequence[str] = (),
    ) -> str:
        """Create (or, with `silence_id`, update) a silence matching exactly these labels
        (`clipped`: those stored cut to the limits, matched by their prefix)."""
        body: dict[str, Any] = {
            "matchers": silence_matchers(labels, clipped),
            "startsAt": format_micros(starts_at),
            "endsAt": format_micros(ends_at),
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

    async def silences(self) -> list[dict[str, Any]]:
        """Every silence this replica holds (active, pending, expired)."""
        result = await self._request("GET", "/api/v2/silences")
        if not isinstance(result, list):
            raise AlertmanagerError("unexpected answer to GET /api/v2/silences")
        return result

    async def silence(self, silence_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", f"/api/v2/silence/{silence_id}")
        return result

    async def alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds (active, silenced, inhibited)."""
        result = await self._request("GET", "/api/v2/alerts")
        if not isinstance(result, list):
            raise AlertmanagerError("unexpected answer to GET /api/v2/alerts")
        return result

    async def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """Inject alerts (POST /api/v2/alerts), as Prometheus does."""
        await self._request("POST", "/api/v2/alerts", list(alerts))

    async def started_at(self) -> int:
        """When this replica started (GET /api/v2/status `uptime`, an RFC 3339 time), ns."""
        result = await self._request("GET", "/api/v2/status")
        uptime = result.get("uptime") if isinstance(result, dict) else None
        try:
            started = parse_rfc3339(uptime) if isinstance(uptime, str) else None
        except ValueError:
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
        clipped: Sequence[str] = (),
    ) -> str:
        """Create or update a silence on the first replica that answers."""
        return await self._first(
            "silence",
            lambda c: c.create_silence(labels, starts_at, ends_at, created_by, comment,
                                       silence_id, clipped),
        )  # fmt: skip

    async def silences(self) -> list[dict[str, Any]]:
        """The silences of the first replica that answers (replicas gossip them)."""
        return await self._first("silences", lambda c: c.silences())

    async def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> int:
        """Post alerts to every replica, as Prometheus does (replicas do not gossip alerts,
        only the notification log): how many took them; AlertmanagerError when none did."""

        async def one(client: AlertmanagerClient) -> str | None:
            try:
                await client.post_alerts(alerts)
            except AlertmanagerError as exc:
                return f"{client.base}: {exc}"
            return None

        errors = [e for e in await asyncio.gather(*(one(c) for c in self.clients)) if e]
        if len(errors) == len(self.clients):
            raise AlertmanagerError(f"post alerts: no Alertmanager took them ({'; '.join(errors)})")
        return len(self.clients) - len(errors)

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
