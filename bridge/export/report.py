"""Reports over the stored history (`alertbridge report`, GET /api/v1/report, the report page):
how fast alerts are acknowledged and resolved, which rules are noisy or flap, what nobody
acknowledged, how long escalations spend at each level.

Over the episodes that started in [since, until):
- time to acknowledge (the first acknowledgement's time - starts_at: one withdrawn and given
  again counts from the first) and time to resolve (ends_at -
  starts_at, resolved ones), median and p90, by rule, by severity and by assignee; p90 is the
  nearest rank (the smallest value with at least 90 % of them at or below it);
- episodes per rule per day (UTC), and the rules with the most episodes;
- flapping: an episode of the same alert (fingerprint) that fired again within `flap` seconds
  of the previous one's end, counted per rule;
- never acknowledged: episodes resolved, or still firing, never acknowledged, per rule;
- time at each escalation level: from an `escalated` event to the next one of the alert, or
  to its acknowledgement, its end, or `until`, whichever comes first.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

from bridge.core.errors import InvalidInput
from bridge.core.times import NS, format_duration, format_time, now_ns, parse_duration_ns
from bridge.store.interface import Exports
from bridge.store.query import parse_when

FLAP_SECONDS = 600
_LEVEL = re.compile(r"^level (\d+):")
ALERT_COLUMNS = ("id", "fingerprint", "status", "alertname", "severity", "starts_at", "ends_at",
                 "acked_at", "assignee")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Stat:
    """Durations (seconds): how many, median, p90 (nearest rank)."""

    count: int
    median: float
    p90: float

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        ordered = sorted(values)
        rank = max(1, math.ceil(0.9 * len(ordered)))
        return cls(len(ordered), statistics.median(ordered), ordered[rank - 1])

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "median_seconds": round(self.median, 3),
                "p90_seconds": round(self.p90, 3)}  # fmt: skip


@dataclass(slots=True)
class Report:
    since: int
    until: int
    flap_seconds: int
    episodes: int = 0
    tta: dict[str, dict[str, Stat]] = field(default_factory=dict)  # by -> key -> Stat
    ttr: dict[str, dict[str, Stat]] = field(default_factory=dict)
    per_day: dict[str, dict[str, int]] = field(default_factory=dict)  # rule -> day -> episodes
    noisiest: list[tuple[str, int]] = field(default_factory=list)
    flapping: list[tuple[str, int]] = field(default_factory=list)
    never_acked: list[tuple[str, int]] = field(default_factory=list)
    levels: dict[str, Stat] = field(default_factory=dict)  # "0", "1", ... -> time at level

    def to_json(self) -> dict[str, Any]:
        def stats(table: dict[str, dict[str, Stat]]) -> dict[str, Any]:
            return {by: {k: s.to_json() for k, s in rows.items()} for by, rows in table.items()}

        return {
            "since": format_time(self.since), "until": format_time(self.until),
            "flap_seconds": self.flap_seconds, "episodes": self.episodes,
            "time_to_acknowledge": stats(self.tta), "time_to_resolve": stats(self.ttr),
            "episodes_per_rule_per_day": self.per_day,
            "noisiest_rules": [{"rule": r, "episodes": n} for r, n in self.noisiest],
            "flapping_rules": [{"rule": r, "flaps": n} for r, n in self.flapping],
            "never_acknowledged": [{"rule": r, "episodes": n} for r, n in self.never_acked],
            "time_at_escalation_level": {lv: s.to_json() for lv, s in self.levels.items()},
        }  # fmt: skip


def _rows(batches: Iterable[pa.RecordBatch], names: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
    for batch in batches:
        columns = [batch.column(batch.schema.get_field_index(n)).to_pylist() for n in names]
        yield from zip(*columns, strict=True)


def _day(ns: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ns // NS))


def build(
    alerts: Iterable[pa.RecordBatch],
    events: Iterable[pa.RecordBatch],
    since: int,
    until: int,
    flap_seconds: int = FLAP_SECONDS,
    top: int = 10,
) -> Report:
    """The report of the alerts (RAW_ALERT_SCHEMA batches of the episodes that started in
    the window) and their events (RAW_EVENT_SCHEMA, from `since` on). Blocking."""
    report = Report(since, until, flap_seconds)
    tta: dict[str, defaultdict[str, list[float]]] = {b: defaultdict(list) for b in
                                                      ("rule", "severity", "assignee")}  # fmt: skip
    ttr: dict[str, defaultdict[str, list[float]]] = {b: defaultdict(list) for b in
                                                      ("rule", "severity", "assignee")}  # fmt: skip
    per_day: defaultdict[str, Counter[str]] = defaultdict(Counter)
    never: Counter[str] = Counter()
    by_fingerprint: defaultdict[str, list[tuple[int, int | None, str]]] = defaultdict(list)
    ends: dict[int, int] = {}  # alert id -> when its escalation stops counting
    first_ack: dict[int, int] = {}  # alert id -> its first acknowledgement
    steps: defaultdict[int, list[tuple[int, str]]] = defaultdict(list)
    for alert_id, at, kind, detail in _rows(events, ("alert_id", "at", "kind", "detail")):
        if kind == "acknowledged":
            first_ack[alert_id] = min(at, first_ack.get(alert_id, at))
        match = _LEVEL.match(detail or "") if kind == "escalated" else None
        if match:
            steps[alert_id].append((at, match[1]))
    for (alert_id, fingerprint, status, rule, severity, starts, ended, acked,
         assignee) in _rows(alerts, ALERT_COLUMNS):  # fmt: skip
        report.episodes += 1
        keys = {"rule": rule, "severity": severity, "assignee": assignee or "(nobody)"}
        per_day[rule][_day(starts)] += 1
        acked = first_ack.get(alert_id, acked)
        if acked is not None:
            for by, key in keys.items():
                tta[by][key].append((acked - starts) / NS)
        else:
            never[rule] += 1
        if status == "resolved" and ended is not None:
            for by, key in keys.items():
                ttr[by][key].append((ended - starts) / NS)
        by_fingerprint[fingerprint].append((starts, ended if status == "resolved" else None, rule))
        stops = [t for t in (acked, ended if status == "resolved" else None, until) if t]
        ends[alert_id] = min(stops)
    report.tta = {by: {k: Stat.of(v) for k, v in sorted(rows.items())} for by, rows in tta.items()}
    report.ttr = {by: {k: Stat.of(v) for k, v in sorted(rows.items())} for by, rows in ttr.items()}
    report.per_day = {rule: dict(sorted(days.items())) for rule, days in sorted(per_day.items())}
    totals = Counter({rule: sum(days.values()) for rule, days in per_day.items()})
    report.noisiest = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    flaps: Counter[str] = Counter()
    for episodes in by_fingerprint.values():
        episodes.sort()
        for (_, ended, rule), (next_start, _, _) in itertools.pairwise(episodes):
            if ended is not None and 0 <= next_start - ended <= flap_seconds * NS:
                flaps[rule] += 1
    report.flapping = sorted(flaps.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    report.never_acked = sorted(never.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    at_level: defaultdict[str, list[float]] = defaultdict(list)
    for alert_id, taken in steps.items():
        if alert_id not in ends:  # an episode that started before the window
            continue
        taken.sort()
        for (at, level), (next_at, _) in zip(taken, [*taken[1:], (ends[alert_id], "")],
                                             strict=True):  # fmt: skip
            if next_at >= at:
                at_level[level].append((min(next_at, ends[alert_id]) - at) / NS)
    report.levels = {
        lv: Stat.of(v) for lv, v in sorted(at_level.items(), key=lambda kv: int(kv[0]))
    }
    return report


def of_store(store: Exports, since: int, until: int, flap_seconds: int) -> Report:
    """The report of a store's episodes that started in [since, until). Blocking."""
    return build(store.alert_batches(since, until, 10_000),
                 store.event_batches(since, None, 10_000), since, until, flap_seconds)  # fmt: skip


def seconds_text(value: float) -> str:
    """A duration for people: 2m, 1h30m; under a second with its fraction."""
    return format_duration(max(0, round(value))) if value >= 1 else f"{value:.2f}s"


def window(since: str | None, until: str | None, flap: str | None) -> tuple[int, int, int]:
    """(since, until, flap seconds) from their texts (default the 30 days up to `until`, or
    up to now; 10m); InvalidInput names a bad one."""
    now = now_ns()
    end = parse_when(until, "until", now) if until else now
    start = parse_when(since, "since", now) if since else max(0, end - 30 * 86400 * NS)
    if end <= start:
        raise InvalidInput("until", "must be after since")
    try:
        flap_seconds = parse_duration_ns(flap or "10m") // NS
    except ValueError as exc:
        raise InvalidInput("flap", str(exc)) from None
    return start, end, flap_seconds
