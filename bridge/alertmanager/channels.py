"""Channels as Alertmanager delivers them: delivery statistics read from its own metrics, and
a test notification to one receiver, judged by those metrics.

Alertmanager 0.25 counts notifications by integration (slack, pagerduty, webhook, ...), not
by receiver (0.27's `--enable-feature=receiver-name-in-metrics` adds a `receiver` label,
used when present): a test is judged on its receiver's integration, so another delivery
through the same integration at the same moment counts too. The test alert goes to exactly
that receiver by a generated route on the `alertbridge_test` label.

>>> stats = parse_metrics('alertmanager_notifications_total{integration="slack"} 3\\n')
>>> stats["slack"].notifications, stats["slack"].failed
(3.0, 0.0)
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bridge.channels import CHANNELS
from bridge.core.errors import AlertmanagerError
from bridge.core.policies import TEST_LABEL
from bridge.core.times import NS, format_micros

TEST_ALERT = "AlertbridgeChannelTest"
#: The Alertmanager integration that delivers each receiver type (msteams: the bridge's
#: adapter, reached by a webhook on 0.25).
INTEGRATION_OF = {kind: "webhook" for kind, channel in CHANNELS.items() if channel.adapter}


@dataclass(frozen=True, slots=True)
class IntegrationStats:
    integration: str
    receiver: str | None
    notifications: float = 0.0  # notifications begun (counted before the outcome)
    failed: float = 0.0  # notifications that failed for good (retries exhausted)
    requests: float = 0.0  # delivery attempts
    requests_failed: float = 0.0  # attempts that failed (each retry counts)
    latency_sum: float = 0.0
    latency_count: float = 0.0
    buckets: tuple[tuple[float, float], ...] = field(default=())  # (le, cumulative count)

    def to_json(self) -> dict[str, Any]:
        ok = self.requests - self.requests_failed
        return {
            "integration": self.integration,
            "receiver": self.receiver,
            "notifications": int(self.notifications),
            "failed": int(self.failed),
            "attempts": int(self.requests),
            "attempts_failed": int(self.requests_failed),
            "success_ratio": round(ok / self.requests, 4) if self.requests else None,
            "latency_mean_seconds": round(self.latency_sum / self.latency_count, 4)
            if self.latency_count
            else None,
            "latency_p99_seconds": _quantile(self.buckets, 0.99),
        }


def _quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the bucket holding quantile q (None: no observations)."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    for le, count in buckets:
        if count >= rank:
            return le
    return None  # pragma: no cover - the +Inf bucket holds every observation


#: Alertmanager's notification series -> IntegrationStats fields.
_FIELDS = {
    "alertmanager_notifications_total": "notifications",
    "alertmanager_notifications_failed_total": "failed",
    "alertmanager_notification_requests_total": "requests",
    "alertmanager_notification_requests_failed_total": "requests_failed",
    "alertmanager_notification_latency_seconds_sum": "latency_sum",
    "alertmanager_notification_latency_seconds_count": "latency_count",
}


def parse_metrics(text: str) -> dict[str, IntegrationStats]:
    """Alertmanager's notification metrics by integration (and receiver when labelled)."""
    values: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            integration = sample.labels.get("integration")
            if integration is None:
                continue
            key = integration + ("/" + sample.labels["receiver"] if "receiver" in sample.labels
                                 else "")  # fmt: skip
            entry = values.setdefault(key, {"integration": integration,
                                            "receiver": sample.labels.get("receiver"),
                                            "buckets": {}})  # fmt: skip
            if sample.name == "alertmanager_notification_latency_seconds_bucket":
                le = float(sample.labels["le"])
                entry["buckets"][le] = entry["buckets"].get(le, 0.0) + sample.value
            elif sample.name in _FIELDS:  # summed over other labels (reason)
                field_name = _FIELDS[sample.name]
                entry[field_name] = entry.get(field_name, 0.0) + sample.value
    out = {}
    for key, entry in values.items():
        buckets = tuple(sorted(entry.pop("buckets").items()))
        out[key] = IntegrationStats(buckets=buckets, **entry)
    return out


async def fetch_stats(
    session: aiohttp.ClientSession, url: str, timeout: float = 5.0
) -> dict[str, IntegrationStats]:
    """One replica's notification metrics; AlertmanagerError when it does not answer."""
    try:
        async with session.get(
            url.rstrip("/") + "/metrics", timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            if response.status != 200:
                raise AlertmanagerError(f"GET {url}/metrics: HTTP {response.status}")
            return parse_metrics(await response.text())
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise AlertmanagerError(f"GET {url}/metrics: {exc.__class__.__name__}: {exc}") from None


async def cluster_stats(
    session: aiohttp.ClientSession, urls: Sequence[str]
) -> dict[str, dict[str, IntegrationStats] | str]:
    """Every replica's metrics by URL (an error text for one that did not answer)."""

    async def one(url: str) -> dict[str, IntegrationStats] | str:
        try:
            return await fetch_stats(session, url)
        except AlertmanagerError as exc:
            return str(exc)

    results = await asyncio.gather(*(one(u) for u in urls))
    return dict(zip(urls, results, strict=True))


def totals(
    stats: dict[str, IntegrationStats], integration: str, receiver: str
) -> tuple[float, float]:
    """(attempts, failed attempts) of the receiver's series if labelled, else of the
    integration's."""
    labelled = stats.get(f"{integration}/{receiver}")
    if labelled is not None:
        return labelled.requests, labelled.requests_failed
    plain = [s for s in stats.values() if s.integration == integration and s.receiver is None]
    return sum(s.requests for s in plain), sum(s.requests_failed for s in plain)


def probe_alert(
    receiver: str, severity: str, starts_at: int, ends_at: int, run: str
) -> dict[str, Any]:
    """A test alert; `run` makes each test's alert (and Alertmanager group) new."""
    return {
        "labels": {
            "alertname": TEST_ALERT,
            TEST_LABEL: receiver,
            "severity": severity,
            "alertbridge_test_run": run,
        },
        "annotations": {
            "summary": f"Test notification from alertbridge to receiver {receiver}",
            "description": "Sent by `alertbridge channels test`; no action needed.",
        },
        "startsAt": format_micros(starts_at),
        "endsAt": format_micros(ends_at),
    }


@dataclass(frozen=True, slots=True)
class ProbeResult:
    delivered: bool
    detail: str
    seconds: float


async def probe_receiver(
    session: aiohttp.ClientSession,
    urls: Sequence[str],
    receiver: str,
    integration: str,
    severity: str,
    timeout: float = 30.0,
) -> ProbeResult:
    """Post a test alert routed to `receiver` to every replica, then watch the replicas'
    counters of its integration (bounded by `timeout`) until a delivery succeeds or fails;
    the test alert is ended either way."""
    (result,) = (await probe_integrations(session, urls, receiver, [integration], severity,
                                          timeout)).values()  # fmt: skip
    return result


async def probe_integrations(
    session: aiohttp.ClientSession,
    urls: Sequence[str],
    receiver: str,
    integrations: Sequence[str],
    severity: str,
    timeout: float = 30.0,
) -> dict[str, ProbeResult]:
    """One test alert routed to `receiver`, posted to every replica; then, per integration
    of the receiver (a person's receiver has one per contact method), whether a delivery
    succeeded or failed, watching the replicas' counters (bounded by `timeout`). One
    notification each: not one test per method, which would send every method each."""
    from bridge.alertmanager.client import AlertmanagerCluster

    cluster = AlertmanagerCluster.of(urls, session)
    before = await cluster_stats(session, urls)
    reachable = [u for u, s in before.items() if not isinstance(s, str)]
    if not reachable:
        errors = "; ".join(str(s) for s in before.values())
        return {i: ProbeResult(False, f"no Alertmanager answered: {errors}", 0.0)
                for i in integrations}  # fmt: skip
    start = time.monotonic()
    now = time.time_ns()
    run = secrets.token_hex(6)
    await cluster.post_alerts([probe_alert(receiver, severity, now, now + 300 * NS, run)])
    base = {(u, i): totals(s, i, receiver) for u, s in before.items() if not isinstance(s, str)
            for i in integrations}  # fmt: skip
    found: dict[str, ProbeResult] = {}
    try:
        for _ in range(int(timeout / 0.2) + 1):
            current = {url: await fetch_stats(session, url) for url in reachable}
            elapsed = time.monotonic() - start
            for integration in (i for i in integrations if i not in found):
                sent = failed = 0.0
                for url in reachable:
                    total, fails = totals(current[url], integration, receiver)
                    sent += total - base[url, integration][0]
                    failed += fails - base[url, integration][1]
                if sent - failed >= 1:
                    found[integration] = ProbeResult(
                        True, f"delivered by Alertmanager's {integration} integration in"
                        f" {elapsed:.1f}s", elapsed)  # fmt: skip
                elif failed >= 1:
                    found[integration] = ProbeResult(
                        False, f"Alertmanager's {integration} integration failed to deliver"
                        f" ({int(failed)} failed attempt(s): see"
                        " alertmanager_notification_requests_failed_total and its log)",
                        elapsed)  # fmt: skip
            if len(found) == len(integrations) or elapsed > timeout:
                break
            await asyncio.sleep(0.2)  # polling another process's counters: nothing to await
        late = time.monotonic() - start
        for integration in integrations:
            found.setdefault(integration, ProbeResult(
                False, f"no delivery attempt within {timeout:g}s (is the receiver in the"
                " generated alertmanager.yml Alertmanager runs?)", late))  # fmt: skip
        return {i: found[i] for i in integrations}
    finally:
        ended = time.time_ns()
        with contextlib.suppress(AlertmanagerError):  # else it ends by itself at its endsAt
            await cluster.post_alerts([probe_alert(receiver, severity, now, ended, run)])
