"""Time windows: weekdays and hours of the day in an IANA time zone (escalation steps taken
only within one; on-call layers restricted to some)."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.core.errors import ConfigError
from bridge.core.times import NS

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_HOURS_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


@dataclass(frozen=True, slots=True)
class Window:
    """Weekdays and a time of day in a named IANA time zone. `end` <= `start` spans midnight
    (the weekday is the local day of the instant). Minutes since midnight.

    >>> w = Window("Europe/Paris", frozenset({0}), 9 * 60, 18 * 60)  # Mondays 09:00-18:00
    >>> at = lambda text: int(dt.datetime.fromisoformat(text).timestamp()) * NS
    >>> w.contains(at("2026-12-07T08:30:00Z")), w.contains(at("2026-12-07T07:59:00Z"))
    (True, False)
    """

    timezone: str
    days: frozenset[int]
    start: int
    end: int

    def contains(self, at: int) -> bool:
        local = dt.datetime.fromtimestamp(at / NS, zoneinfo.ZoneInfo(self.timezone))
        if local.weekday() not in self.days:
            return False
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def describe(self) -> str:
        days = ",".join(DAYS[d] for d in sorted(self.days))
        hours = (
            f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"
        )
        return f"{days} {hours} {self.timezone}"

    def entry(self) -> dict[str, Any]:
        """As a configuration writes it (parse_window reads it back)."""
        return {"timezone": self.timezone, "days": [DAYS[d] for d in sorted(self.days)],
                "hours": self.hours()}  # fmt: skip

    def hours(self) -> str:
        return (
            f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"
        )

    def to_json(self) -> dict[str, Any]:
        return {"timezone": self.timezone, "days": sorted(self.days), "start": self.start,
                "end": self.end}  # fmt: skip


def parse_window(raw: object, source: str, key: str) -> Window:
    if not isinstance(raw, Mapping):
        raise ConfigError(source, key, "must be a mapping of timezone, days, hours")
    unknown = set(raw) - {"timezone", "days", "hours"}
    if unknown:
        raise ConfigError(source, f"{key}.{sorted(unknown)[0]}", "unknown setting")
    tz = raw.get("timezone", "UTC")
    try:
        if not isinstance(tz, str):
            raise ValueError
        zoneinfo.ZoneInfo(tz)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise ConfigError(source, f"{key}.timezone", f"unknown IANA time zone {tz!r}") from None
    days_raw = raw.get("days", list(DAYS))
    if not isinstance(days_raw, list) or not days_raw:
        raise ConfigError(source, f"{key}.days", "must be a non-empty list like [mon, tue]")
    days = set()
    for day in days_raw:
        name = str(day).lower()
        name = name[:3] if name in _FULL_DAYS else name
        if name not in DAYS:
            raise ConfigError(source, f"{key}.days", f"unknown weekday {day!r} (mon .. sun)")
        days.add(DAYS.index(name))
    hours = raw.get("hours", "00:00-24:00")
    match = _HOURS_RE.match(str(hours))
    if not match:
        raise ConfigError(source, f"{key}.hours", f"must be HH:MM-HH:MM, got {hours!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if end > 24 * 60 or start == end:
        raise ConfigError(source, f"{key}.hours", f"an empty or impossible window {hours!r}")
    return Window(tz, frozenset(days), start, end)
