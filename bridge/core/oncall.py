"""People and on-call schedules: who is on call in a schedule at an instant, and the shifts
over a period. Pure (no I/O, no clock): times are nanoseconds since the epoch, zones IANA.

A schedule has layers, lowest first; each layer is a rotation (participants in order, each
for a shift of N hours, days or weeks, the first handing over at `start`), optionally
restricted to windows (weekdays and hours, in the schedule's zone). At an instant the
highest layer that has someone decides; an override (a person for a period, for anyone or
only in place of one person) comes before every layer.

Daylight saving, as a zone's users expect (and as PagerDuty and GoAlert do it): shifts of
days and weeks hand over at the same wall-clock time (09:00 stays 09:00, so the shift across
the change is an hour shorter or longer); shifts of hours are elapsed hours. A handoff at a
wall-clock time the change skips (02:30 on the spring day in Europe/Paris) happens at the
time it maps to by the offset before the change (03:30).

>>> at = lambda text: int(dt.datetime.fromisoformat(text).timestamp()) * NS
>>> week = Rotation(("alice", "bob"), 1, "w", dt.datetime(2026, 12, 7, 9, 0))
>>> s = Schedule("primary", "Europe/Paris", (Layer("weekly", week),))
>>> s.who(at("2026-12-07T08:00:00Z")), s.who(at("2026-12-14T08:00:00Z"))
('alice', 'bob')
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.core.errors import ConfigError, InvalidInput, NotFound
from bridge.core.times import NS, parse_rfc3339
from bridge.core.windows import Window, parse_window

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
#: Shift lengths: hours, days, weeks ("12h", "1d", "1w").
_SHIFT_RE = re.compile(r"^([1-9][0-9]{0,3})([hdw])$")
_UNIT_DAYS = {"d": 1, "w": 7}
#: The most changes of who is on call a listing walks (a 1-hour rotation with a daily window
#: over a year is about 9,500): bounds every loop; more is refused.
MAX_SEGMENTS = 20_000


def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


@functools.lru_cache(maxsize=65536)
def _to_ns(local: dt.datetime, zone: str) -> int:
    """A wall-clock time in `zone` as nanoseconds (fold 0: the first of an ambiguous hour,
    the offset before the change for a skipped one). Cached: a rotation's start and its
    handoffs are asked for again at every step that pages its schedule (a quarter of the
    escalation worker's time with 1,000 schedules paged, bench.escalation --schedules)."""
    return int(local.replace(tzinfo=_zone(zone)).timestamp()) * NS


def _local(at: int, zone: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(at // NS, _zone(zone)).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class Contact:
    """A way to reach a person: an Alertmanager receiver of one type (email, slack,
    pagerduty, webhook, msteams through the bridge's adapter, ...) and its configuration,
    written as in `alertmanager.receivers` (secrets by file)."""

    type: str
    config: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Person:
    """Someone who can be paged: a time zone (for what they read) and contact methods
    (what `rules generate` writes as the person's receiver, person-NAME)."""

    name: str
    timezone: str = "UTC"
    contacts: tuple[Contact, ...] = ()

    @property
    def methods(self) -> list[str]:
        """The kinds of contact ("email", "slack", ...), in order."""
        return [c.type for c in self.contacts]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "timezone": self.timezone, "methods": self.methods}


@dataclass(frozen=True, slots=True)
class Rotation:
    """Participants in turn, each for `count` `unit`s ("h", "d", "w"); the first from
    `start` (wall-clock time in the schedule's zone). Nobody before `start`."""

    participants: tuple[str, ...]
    count: int
    unit: str
    start: dt.datetime

    def describe(self) -> str:
        return f"{', '.join(self.participants)} every {self.count}{self.unit}"

    def turn(self, at: int, zone: str) -> tuple[int, int] | None:
        """(index of the shift, its start in ns) at `at`; None before the rotation starts."""
        begin = _to_ns(self.start, zone)
        if at < begin:
            return None
        if self.unit == "h":
            length = self.count * 3600 * NS
            index = (at - begin) // length
            return index, begin + index * length
        local = _local(at, zone)
        days = (local.date() - self.start.date()).days
        if local.time() < self.start.time():
            days -= 1
        index = days // (self.count * _UNIT_DAYS[self.unit])
        if self.boundary(index, zone) > at:  # a handoff the change skips happens later
            index -= 1
        return index, self.boundary(index, zone)

    def boundary(self, index: int, zone: str) -> int:
        """When shift `index` begins."""
        if self.unit == "h":
            return _to_ns(self.start, zone) + index * self.count * 3600 * NS
        days = index * self.count * _UNIT_DAYS[self.unit]
        return _to_ns(self.start + dt.timedelta(days=days), zone)

    def who(self, at: int, zone: str) -> str | None:
        turn = self.turn(at, zone)
        return None if turn is None else self.participants[turn[0] % len(self.participants)]


@dataclass(frozen=True, slots=True)
class Layer:
    """A rotation, optionally restricted to windows."""

    name: str
    rotation: Rotation
    #: Only within these windows (any of them); empty: always.
    restrict: tuple[Window, ...] = ()

    def who(self, at: int, zone: str) -> str | None:
        if self.restrict and not any(w.contains(at) for w in self.restrict):
            return None
        return self.rotation.who(at, zone)

    def participants(self) -> set[str]:
        return set(self.rotation.participants)

    def describe(self) -> str:
        only = " or ".join(w.describe() for w in self.restrict)
        return self.rotation.describe() + (f" (only {only})" if only else "")

    def changes(self, start: int, end: int, zone: str) -> Iterable[int]:
        """The instants in (start, end) at which who this layer has may change."""
        rotation = self.rotation
        turn = rotation.turn(start, zone)
        index = 0 if turn is None else turn[0] + 1
        for _ in range(MAX_SEGMENTS + 1):  # bounded: ends at `end`, or too many
            at = rotation.boundary(index, zone)
            if at >= end:
                break
            if at > start:
                yield at
            index += 1
        for window in self.restrict:
            yield from _window_edges(window, start, end)


class LayerKind(Protocol):
    """What a schedule asks of a layer: a rotation (Layer) or another tool's calendar
    (bridge.core.ical.CalendarLayer)."""

    @property
    def name(self) -> str: ...

    def who(self, at: int, zone: str) -> str | None: ...

    def participants(self) -> set[str]: ...

    def describe(self) -> str: ...

    def changes(self, start: int, end: int, zone: str) -> Iterable[int]: ...


@dataclass(frozen=True, slots=True)
class Override:
    """`person` is on call from `start` to `end` (ns), in place of whoever is (`instead`
    None) or only while `instead` would be."""

    person: str
    start: int
    end: int
    instead: str | None = None


@dataclass(frozen=True, slots=True)
class Shift:
    """Who is on call from `start` to `end` (ns; None: nobody), and why: the layer's name,
    or "override"."""

    start: int
    end: int
    person: str | None
    source: str | None

    def to_json(self) -> dict[str, Any]:
        return {"start": _iso(self.start), "end": _iso(self.end), "person": self.person,
                "source": self.source}  # fmt: skip


def local_time(at: int, zone: str) -> str:
    """An instant as people of `zone` read it: "Mon 2027-03-29 09:00 CEST"."""
    return dt.datetime.fromtimestamp(at // NS, _zone(zone)).strftime("%a %Y-%m-%d %H:%M %Z")


def _iso(at: int) -> str:
    return dt.datetime.fromtimestamp(at // NS, dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    timezone: str
    #: Lowest first: a higher layer decides where it has someone.
    layers: tuple[LayerKind, ...]
    overrides: tuple[Override, ...] = ()

    def people(self) -> set[str]:
        named = {p for layer in self.layers for p in layer.participants()}
        return named | {o.person for o in self.overrides}

    def on_call(self, at: int) -> tuple[str | None, str | None]:
        """(who is on call at `at`, from what: a layer's name or "override"); (None, None)
        when nobody is."""
        below, source = None, None
        for layer in reversed(self.layers):
            below = layer.who(at, self.timezone)
            if below is not None:
                source = layer.name
                break
        for override in self.overrides:
            if override.start <= at < override.end and override.instead in (None, below):
                return override.person, "override"
        return below, source

    def who(self, at: int) -> str | None:
        return self.on_call(at)[0]

    def _changes(self, start: int, end: int) -> list[int]:
        """Every instant in [start, end) at which who is on call may change."""
        points = {start}
        for layer in self.layers:
            points.update(itertools.islice(layer.changes(start, end, self.timezone),
                                           MAX_SEGMENTS + 1))  # fmt: skip
        for override in self.overrides:
            points.update(t for t in (override.start, override.end) if start < t < end)
        if len(points) > MAX_SEGMENTS:
            raise InvalidInput("days", f"more than {MAX_SEGMENTS:,} shifts in the period:"
                               " ask for fewer days")  # fmt: skip
        return sorted(points)

    def shifts(self, start: int, end: int) -> list[Shift]:
        """Who is on call from `start` to `end`, as consecutive shifts (nobody included)."""
        out: list[Shift] = []
        points = self._changes(start, end)
        for begin, until in zip(points, [*points[1:], end], strict=True):
            person, source = self.on_call(begin)
            if out and out[-1].person == person and out[-1].source == source:
                out[-1] = Shift(out[-1].start, until, person, source)
            else:
                out.append(Shift(begin, until, person, source))
        return out

    def gaps(self, start: int, end: int) -> list[Shift]:
        """The periods in [start, end) when nobody is on call."""
        return [s for s in self.shifts(start, end) if s.person is None]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "timezone": self.timezone,
            "layers": [
                {"name": layer.name, "description": layer.describe()} for layer in self.layers
            ],
            "overrides": [
                {
                    "person": o.person,
                    "start": _iso(o.start),
                    "end": _iso(o.end),
                    "instead": o.instead,
                }
                for o in self.overrides
            ],
        }


def _window_edges(window: Window, start: int, end: int) -> Iterable[int]:
    """The instants in (start, end) at which `window` opens or closes."""
    first = _local(start, window.timezone).date() - dt.timedelta(days=1)
    last = _local(end, window.timezone).date() + dt.timedelta(days=1)
    for n in range(min((last - first).days + 1, MAX_SEGMENTS)):  # bounded by the period
        day = dt.datetime.combine(first + dt.timedelta(days=n), dt.time())
        for minute in (window.start, window.end):
            at = _to_ns(day + dt.timedelta(minutes=minute), window.timezone)
            if start < at < end:
                yield at


# --- configuration -----------------------------------------------------------------------


def _name(raw: object, source: str, key: str, what: str) -> str:
    if not isinstance(raw, str) or not NAME_RE.match(raw):
        raise ConfigError(source, key, f"{what} must be letters, digits, _ . @ - (got {raw!r})")
    return raw


def _timezone(raw: object, source: str, key: str) -> str:
    try:
        if not isinstance(raw, str):
            raise ValueError
        zoneinfo.ZoneInfo(raw)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise ConfigError(source, key, f"unknown IANA time zone {raw!r}") from None
    return raw


def _mapping(raw: object, source: str, key: str, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(source, key, "must be a mapping")
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(source, f"{key}.{sorted(unknown)[0]}", "unknown setting")
    return raw


def _local_time(raw: object, source: str, key: str) -> dt.datetime:
    """A wall-clock date and time ("2026-12-07T09:00" or a YAML timestamp without zone)."""
    if isinstance(raw, dt.datetime) and raw.tzinfo is None:
        return raw
    try:
        if not isinstance(raw, str):
            raise ValueError
        parsed = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(source, key, f"must be a local date and time like 2026-12-07T09:00,"
                          f" got {raw!r}") from None  # fmt: skip
    if parsed.tzinfo is not None:
        raise ConfigError(source, key, "a wall-clock time, without offset: the zone is the"
                          " schedule's")  # fmt: skip
    return parsed


def _instant(raw: object, zone: str, source: str, key: str) -> int:
    """An instant: with an offset, as given; without, a wall-clock time in `zone`."""
    if isinstance(raw, dt.datetime) and raw.tzinfo is not None:
        return int(raw.timestamp()) * NS
    if isinstance(raw, str):
        try:
            parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return int(parsed.timestamp()) * NS
    return _to_ns(_local_time(raw, source, key), zone)


def parse_person(name: str, raw: object, source: str) -> Person:
    key = f"people.{name}"
    _name(name, source, key, "a person's name")
    body = _mapping(raw or {}, source, key, {"timezone", "contacts"})
    zone = _timezone(body.get("timezone", "UTC"), source, f"{key}.timezone")
    contacts_raw = body.get("contacts", [])
    if not isinstance(contacts_raw, list):
        raise ConfigError(source, f"{key}.contacts", "must be a list of {type, config}")
    contacts = []
    for n, contact in enumerate(contacts_raw):
        where = f"{key}.contacts[{n}]"
        item = _mapping(contact, source, where, {"type", "config"})
        kind = item.get("type")
        if not isinstance(kind, str) or not kind:
            raise ConfigError(source, f"{where}.type", "a receiver type is required (email,"
                              " slack, pagerduty, webhook, msteams, ...)")  # fmt: skip
        config = item.get("config") or {}
        if not isinstance(config, Mapping):
            raise ConfigError(source, f"{where}.config", "must be a mapping")
        contacts.append(Contact(kind, dict(config)))
    return Person(name, zone, tuple(contacts))


def parse_rotation(raw: object, source: str, key: str, people: set[str]) -> Rotation:
    body = _mapping(raw, source, key, {"participants", "shift", "start"})
    participants = body.get("participants")
    if not isinstance(participants, list) or not participants:
        raise ConfigError(source, f"{key}.participants", "must be a non-empty list of people")
    for who in participants:
        if who not in people:
            raise ConfigError(source, f"{key}.participants", f"no person {who!r} in people")
    match = _SHIFT_RE.match(str(body.get("shift", "")))
    if not match:
        raise ConfigError(source, f"{key}.shift", "must be hours, days or weeks such as 12h,"
                          f" 1d, 1w (got {body.get('shift')!r})")  # fmt: skip
    if "start" not in body:
        raise ConfigError(source, f"{key}.start", "the first handoff is required")
    start = _local_time(body["start"], source, f"{key}.start")
    return Rotation(tuple(participants), int(match[1]), match[2], start)


#: Makes a layer of another tool's calendar: (its name, its `calendar:` setting, the
#: setting's key) -> the layer; ConfigError naming the key. The configuration gives one (it
#: reads the file: bridge.config); without, a calendar layer is refused.
CalendarFactory = Callable[[str, object, str], LayerKind]


def parse_schedule(name: str, raw: object, source: str, people: set[str],
                   calendar: CalendarFactory | None = None) -> Schedule:  # fmt: skip
    key = f"schedules.{name}"
    _name(name, source, key, "a schedule's name")
    body = _mapping(raw, source, key, {"timezone", "layers", "overrides"})
    zone = _timezone(body.get("timezone", "UTC"), source, f"{key}.timezone")
    layers_raw = body.get("layers")
    if not isinstance(layers_raw, list) or not layers_raw:
        raise ConfigError(source, f"{key}.layers", "must be a non-empty list (lowest first)")
    layers: list[LayerKind] = []
    for n, entry in enumerate(layers_raw):
        where = f"{key}.layers[{n}]"
        layer = _mapping(entry, source, where, {"name", "rotation", "restrict", "calendar"})
        label = str(layer.get("name", f"layer {n + 1}"))
        if "calendar" in layer:
            if "rotation" in layer or "restrict" in layer:
                raise ConfigError(source, f"{where}.calendar", "a layer is a rotation or a"
                                  " calendar, not both")  # fmt: skip
            if calendar is None:
                raise ConfigError(source, f"{where}.calendar", "calendars are read by the"
                                  " configuration's loader")  # fmt: skip
            layers.append(calendar(label, layer["calendar"], f"{where}.calendar"))
            continue
        restrict_raw = layer.get("restrict", [])
        if not isinstance(restrict_raw, list):
            raise ConfigError(source, f"{where}.restrict", "must be a list of windows")
        restrict = tuple(
            parse_window(
                {"timezone": zone, **w} if isinstance(w, Mapping) else w,
                source,
                f"{where}.restrict[{i}]",
            )
            for i, w in enumerate(restrict_raw)
        )
        rotation = parse_rotation(layer.get("rotation"), source, f"{where}.rotation", people)
        layers.append(Layer(label, rotation, restrict))
    overrides_raw = body.get("overrides", [])
    if not isinstance(overrides_raw, list):
        raise ConfigError(source, f"{key}.overrides", "must be a list")
    overrides = []
    for n, entry in enumerate(overrides_raw):
        where = f"{key}.overrides[{n}]"
        o = _mapping(entry, source, where, {"person", "start", "end", "instead"})
        for field in ("person", "start", "end"):
            if field not in o:
                raise ConfigError(source, f"{where}.{field}", "is required")
        for field in ("person", "instead"):
            if o.get(field) is not None and o[field] not in people:
                raise ConfigError(source, f"{where}.{field}", f"no person {o[field]!r} in people")
        start = _instant(o["start"], zone, source, f"{where}.start")
        end = _instant(o["end"], zone, source, f"{where}.end")
        if end <= start:
            raise ConfigError(source, f"{where}.end", "must be after start")
        overrides.append(Override(o["person"], start, end, o.get("instead")))
    return Schedule(name, zone, tuple(layers), tuple(overrides))


#: Days of shifts listed by default (the page's "next 14 days"), and at most.
DAYS = 14
MAX_DAYS = 366


def parse_at(text: str | None, now: int, field: str = "at") -> int:
    """An instant asked for: RFC 3339, or `now` (also when not given). InvalidInput naming
    `field` otherwise."""
    if text is None or text == "now":
        return now
    try:
        at = parse_rfc3339(text)
    except ValueError as exc:
        raise InvalidInput(field, f"{exc} (for example 2027-03-29T09:00:00+02:00)") from None
    if at is None:
        raise InvalidInput(field, f"not a time: {text!r}")
    return at


def parse_days(text: str | None, field: str = "days") -> int:
    if text is None:
        return DAYS
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_DAYS:
        raise InvalidInput(field, f"must be a whole number of days from 1 to {MAX_DAYS}")
    return int(text)


@dataclass(frozen=True, slots=True)
class OnCall:
    """The directory of people and the schedules."""

    people: Mapping[str, Person]
    schedules: Mapping[str, Schedule]

    def schedule(self, name: str) -> Schedule:
        """The schedule of that name; NotFound naming those there are."""
        schedule = self.schedules.get(name)
        if schedule is None:
            known = ", ".join(sorted(self.schedules)) or "none configured"
            raise NotFound(f"no schedule {name!r} (schedules: {known})")
        return schedule

    def listing(self, name: str, at: int, days: int) -> dict[str, Any]:
        """A schedule's JSON: who is on call at `at`, and the shifts over `days` from it."""
        schedule = self.schedule(name)
        person, source = schedule.on_call(at)
        shifts = schedule.shifts(at, at + days * 86400 * NS)
        return {**schedule.to_json(), "at": _iso(at), "now": {"person": person, "source": source},
                "shifts": [s.to_json() for s in shifts]}  # fmt: skip

    def directory(self) -> list[dict[str, Any]]:
        """The people, by name: time zone, contact methods, the schedules they are in."""
        member = {n: s.people() for n, s in self.schedules.items()}
        return [
            {
                **p.to_json(),
                "schedules": sorted(n for n, names in member.items() if p.name in names),
            }
            for p in sorted(self.people.values(), key=lambda p: p.name)
        ]

    def now(self, at: int, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Who is on call at `at` in each schedule (or those named)."""
        out = []
        for name in names if names is not None else sorted(self.schedules):
            person, source = self.schedules[name].on_call(at)
            out.append({"schedule": name, "person": person, "source": source})
        return out


def load_oncall(people_raw: object, schedules_raw: object, source: str,
                calendar: Callable[[Mapping[str, Person]], CalendarFactory] | None = None,
                ) -> OnCall:  # fmt: skip
    """The `people:` and `schedules:` sections; errors name the file and the setting.
    `calendar`, given the people, makes the calendar layers' factory."""
    if people_raw is None:
        people_raw = {}
    if not isinstance(people_raw, Mapping):
        raise ConfigError(source, "people", "must be a mapping of name to person")
    people = {str(n): parse_person(str(n), p, source) for n, p in people_raw.items()}
    if schedules_raw is None:
        schedules_raw = {}
    if not isinstance(schedules_raw, Mapping):
        raise ConfigError(source, "schedules", "must be a mapping of name to schedule")
    factory = calendar(people) if calendar is not None else None
    schedules = {str(n): parse_schedule(str(n), s, source, set(people), factory)
                 for n, s in schedules_raw.items()}  # fmt: skip
    return OnCall(people, schedules)
