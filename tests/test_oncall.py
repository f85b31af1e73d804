"""On-call schedules against answers computed by hand: a weekly rotation, a business-hours
layer above it, an override, across the spring daylight-saving change in Europe/Paris
(2027-03-28, 02:00 CET -> 03:00 CEST) and the autumn one (2026-10-25, 03:00 -> 02:00); and
the configuration's errors, each naming its setting."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import icalendar
import pytest
import yaml
from click.testing import CliRunner

from bridge.cli import main
from bridge.config import Secret, load_settings
from bridge.core.errors import ConfigError, InvalidInput
from bridge.core.ical import CalendarLayer
from bridge.core.oncall import Layer, OnCall, Shift, load_oncall
from bridge.core.times import NS, now_ns
from bridge.escalation import transitions
from bridge.escalation.engine import copy_labels
from bridge.http.app import create_app
from bridge.store.records import Copy
from tests.stores import stored

API = {"Authorization": "Bearer api-secret"}
PEOPLE = {name: {"timezone": "Europe/Paris",
                 "contacts": [{"type": "email", "config": {"to": f"{name}@example.org"}}]}
          for name in ("alice", "bob", "carol", "dave", "erin")}  # fmt: skip
PRIMARY = {
    "timezone": "Europe/Paris",
    "layers": [
        {"name": "weekly", "rotation": {"participants": ["alice", "bob", "carol"],
                                        "shift": "1w", "start": "2027-03-22T09:00"}},
        {"name": "business hours", "rotation": {"participants": ["dave"], "shift": "1w",
                                                "start": "2027-03-22T09:00"},
         "restrict": [{"days": ["mon", "tue", "wed", "thu", "fri"], "hours": "09:00-18:00"}]},
    ],
    "overrides": [{"person": "erin", "instead": "bob", "start": "2027-03-30T20:00",
                   "end": "2027-03-31T08:00"}],
}  # fmt: skip


def at(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()) * NS


def oncall(**schedules: Any) -> OnCall:
    return load_oncall(PEOPLE, schedules or {"primary": PRIMARY}, "test.yml")


@pytest.mark.parametrize(
    ("instant", "person", "source"),
    [
        ("2027-03-26T07:30:00Z", "alice", "weekly"),  # Fri 08:30 CET
        ("2027-03-26T08:30:00Z", "dave", "business hours"),  # Fri 09:30 CET
        ("2027-03-28T01:30:00Z", "alice", "weekly"),  # Sun 03:30 CEST, just after the change
        ("2027-03-29T06:59:00Z", "alice", "weekly"),  # Mon 08:59 CEST: handoff at 09:00 local
        ("2027-03-29T07:00:00Z", "dave", "business hours"),  # Mon 09:00 CEST
        ("2027-03-29T16:00:00Z", "bob", "weekly"),  # Mon 18:00 CEST: dave's window closed
        ("2027-03-30T19:00:00Z", "erin", "override"),  # Tue 21:00 CEST: in bob's place
        ("2027-03-31T06:00:00Z", "bob", "weekly"),  # Wed 08:00 CEST: the override is over
        ("2027-04-05T06:59:00Z", "bob", "weekly"),
        ("2027-04-05T07:00:00Z", "dave", "business hours"),
        ("2027-04-05T16:00:00Z", "carol", "weekly"),
        ("2027-03-22T07:59:00Z", None, None),  # before the rotations start
    ],
)
def test_who_is_on_call(instant: str, person: str | None, source: str | None) -> None:
    assert oncall().schedules["primary"].on_call(at(instant)) == (person, source)


def test_the_shifts_across_the_spring_change() -> None:
    """alice's week is 167 hours (the night the clocks go forward is an hour short); the
    handoff stays at 09:00 wall-clock time."""
    primary = oncall().schedules["primary"]
    shifts = primary.shifts(at("2027-03-28T00:00:00Z"), at("2027-03-30T00:00:00Z"))
    assert shifts == [
        Shift(at("2027-03-28T00:00:00Z"), at("2027-03-29T07:00:00Z"), "alice", "weekly"),
        Shift(at("2027-03-29T07:00:00Z"), at("2027-03-29T16:00:00Z"), "dave", "business hours"),
        Shift(at("2027-03-29T16:00:00Z"), at("2027-03-30T00:00:00Z"), "bob", "weekly"),
    ]
    layer = primary.layers[0]
    assert isinstance(layer, Layer)
    weekly = layer.rotation
    length = weekly.boundary(1, "Europe/Paris") - weekly.boundary(0, "Europe/Paris")
    assert length == 167 * 3600 * NS


def test_an_override_only_in_place_of_its_person() -> None:
    primary = oncall().schedules["primary"]
    shifts = primary.shifts(at("2027-03-30T16:00:00Z"), at("2027-03-31T08:00:00Z"))
    assert [(s.person, s.source) for s in shifts] == [
        ("bob", "weekly"),
        ("erin", "override"),
        ("bob", "weekly"),
        ("dave", "business hours"),
    ]
    assert [s.start for s in shifts[1:3]] == [
        at("2027-03-30T18:00:00Z"),
        at("2027-03-31T06:00:00Z"),
    ]
    # the same period in carol's week: the override is for bob only
    later = primary.on_call(at("2027-04-06T19:00:00Z"))
    assert later == ("carol", "weekly")


def test_hours_are_elapsed_days_are_wall_clock() -> None:
    """A 12-hour rotation handing over at 20:00 before the spring change hands over next at
    09:00 local (12 elapsed hours); a daily one at 09:00 across the autumn change runs 25 h."""
    both = oncall(
        halfday={"timezone": "Europe/Paris", "layers": [{"rotation": {
            "participants": ["alice", "bob"], "shift": "12h", "start": "2027-03-27T20:00"}}]},
        daily={"timezone": "Europe/Paris", "layers": [{"rotation": {
            "participants": ["carol", "dave"], "shift": "1d", "start": "2026-10-24T09:00"}}]},
    )  # fmt: skip
    halfday = both.schedules["halfday"]
    assert halfday.who(at("2027-03-28T06:59:00Z")) == "alice"  # 08:59 CEST
    assert halfday.who(at("2027-03-28T07:00:00Z")) == "bob"  # 09:00 CEST
    daily = both.schedules["daily"]
    first, second = daily.shifts(at("2026-10-24T07:00:00Z"), at("2026-10-26T08:00:00Z"))
    assert (first.person, first.start, first.end) == (
        "carol", at("2026-10-24T07:00:00Z"), at("2026-10-25T08:00:00Z"))  # fmt: skip
    assert first.end - first.start == 25 * 3600 * NS
    assert (second.person, second.start) == ("dave", at("2026-10-25T08:00:00Z"))


def test_a_handoff_the_spring_change_skips_happens_an_hour_later() -> None:
    """02:30 does not exist on 2027-03-28 in Paris: the handoff is at 03:30 CEST (01:30Z)."""
    rotation = {"participants": ["alice", "bob"], "shift": "1d", "start": "2027-03-27T02:30"}
    night = oncall(night={"timezone": "Europe/Paris", "layers": [{"rotation": rotation}]})
    schedule = night.schedules["night"]
    assert schedule.who(at("2027-03-28T01:29:00Z")) == "alice"
    assert schedule.who(at("2027-03-28T01:30:00Z")) == "bob"
    assert schedule.who(at("2027-03-29T00:30:00Z")) == "alice"  # 02:30 CEST the next day


def test_gaps_in_coverage() -> None:
    days = oncall(
        days={
            "layers": [
                {
                    "rotation": {
                        "participants": ["alice"],
                        "shift": "1w",
                        "start": "2027-01-04T00:00",
                    },
                    "restrict": [{"days": ["mon"], "hours": "09:00-17:00"}],
                }
            ]
        }
    )
    gaps = days.schedules["days"].gaps(at("2027-01-04T00:00:00Z"), at("2027-01-05T00:00:00Z"))
    assert [(g.start, g.end) for g in gaps] == [
        (at("2027-01-04T00:00:00Z"), at("2027-01-04T09:00:00Z")),
        (at("2027-01-04T17:00:00Z"), at("2027-01-05T00:00:00Z")),
    ]


def test_people_and_their_methods() -> None:
    people = load_oncall({"alice": {"contacts": [{"type": "email", "config": {"to": "a@x.org"}},
                                                 {"type": "slack", "config": {"channel": "@a"}}]},
                          "bob": None}, None, "test.yml").people  # fmt: skip
    assert people["alice"].methods == ["email", "slack"]
    assert people["bob"].to_json() == {"name": "bob", "timezone": "UTC", "methods": []}


@pytest.mark.parametrize(
    ("people", "schedules", "key", "reason"),
    [
        ({"al ice": {}}, {}, "people.al ice", "a person's name"),
        ({"alice": {"timezone": "Mars/Olympus"}}, {}, "people.alice.timezone", "unknown IANA"),
        ({"alice": {"contacts": [{"to": "x"}]}}, {}, "people.alice.contacts[0].to", "unknown"),
        ({"alice": {"contacts": [{"config": {}}]}}, {}, "people.alice.contacts[0].type",
         "required"),
        ({"alice": {"phone": 1}}, {}, "people.alice.phone", "unknown setting"),
        (PEOPLE, {"p": {"layers": []}}, "schedules.p.layers", "non-empty"),
        (PEOPLE, {"p": {"layers": [{"rotation": {"participants": ["zed"], "shift": "1w",
                                                 "start": "2027-01-04T09:00"}}]}},
         "schedules.p.layers[0].rotation.participants", "no person 'zed'"),
        (PEOPLE, {"p": {"layers": [{"rotation": {"participants": ["alice"], "shift": "1m",
                                                 "start": "2027-01-04T09:00"}}]}},
         "schedules.p.layers[0].rotation.shift", "hours, days or weeks"),
        (PEOPLE, {"p": {"layers": [{"rotation": {"participants": ["alice"], "shift": "1w",
                                                 "start": "next monday"}}]}},
         "schedules.p.layers[0].rotation.start", "local date and time"),
        (PEOPLE, {"p": {"layers": [{"rotation": {"participants": ["alice"], "shift": "1w",
                                                 "start": "2027-01-04T09:00+01:00"}}]}},
         "schedules.p.layers[0].rotation.start", "without offset"),
        (PEOPLE, {"p": {**PRIMARY, "overrides": [{"person": "erin", "start": "2027-01-02T00:00",
                                                  "end": "2027-01-01T00:00"}]}},
         "schedules.p.overrides[0].end", "after start"),
        (PEOPLE, {"p": {**PRIMARY, "overrides": [{"person": "erin"}]}},
         "schedules.p.overrides[0].start", "required"),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_setting(
    people: Any, schedules: Any, key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_oncall(people, schedules, "test.yml")
    assert error.value.key == key
    assert reason in error.value.reason


# --- the API and the CLI ------------------------------------------------------------------


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "oncall.yml"
    path.write_text(yaml.safe_dump({"people": PEOPLE, "schedules": {"primary": PRIMARY}}))
    return path


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> Any:
    base = load_settings(config_file(tmp_path), {}, db=str(tmp_path / "a.db"))
    server = dataclasses.replace(base.server, api_token=Secret("api-secret"))
    app = create_app(dataclasses.replace(base, server=server), background=False)
    return await aiohttp_client(app)


async def test_the_api_answers_who_is_on_call(client: Any) -> None:
    response = await client.get("/api/v1/oncall", params={"at": "2027-03-29T09:00:00+02:00"},
                                headers=API)  # fmt: skip
    assert response.status == 200
    assert await response.json() == [
        {"schedule": "primary", "person": "dave", "source": "business hours"}
    ]
    response = await client.get("/api/v1/oncall/primary", headers=API,
                                params={"at": "2027-03-28T00:00:00Z", "days": "2"})  # fmt: skip
    body = await response.json()
    assert body["now"] == {"person": "alice", "source": "weekly"}
    assert [(s["start"], s["person"]) for s in body["shifts"]] == [
        ("2027-03-28T00:00:00Z", "alice"), ("2027-03-29T07:00:00Z", "dave"),
        ("2027-03-29T16:00:00Z", "bob"),
    ]  # fmt: skip
    people = await (await client.get("/api/v1/people", headers=API)).json()
    assert people[0] == {"name": "alice", "timezone": "Europe/Paris", "methods": ["email"],
                         "schedules": ["primary"], "calendar": people[0]["calendar"]}  # fmt: skip
    assert "example.org" not in json.dumps(people)  # kinds of contact, not addresses


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/api/v1/oncall", {"at": "tomorrow"}, 400, "at"),
        ("/api/v1/oncall/primary", {"days": "0"}, 400, "days"),
        ("/api/v1/oncall/primary", {"days": "x"}, 400, "days"),
        ("/api/v1/oncall/nope", {}, 404, None),
    ],
)
async def test_the_api_names_what_is_wrong(
    client: Any, path: str, params: dict[str, str], status: int, field: str | None
) -> None:
    response = await client.get(path, params=params, headers=API)
    assert response.status == status
    body = await response.json()
    if field:
        assert body["field"] == field
    else:
        assert "schedules: primary" in body["message"]
    assert (await client.get(path, params=params)).status == 401


def test_the_cli(tmp_path: Path) -> None:
    config = str(config_file(tmp_path))
    result = CliRunner().invoke(main, ["--config", config, "oncall", "primary",
                                       "--at", "2027-03-28T00:00:00Z", "--days", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1:] == [
        "Sun 2027-03-28 01:00 CET   Mon 2027-03-29 09:00 CEST  alice    weekly",
        "Mon 2027-03-29 09:00 CEST  Mon 2027-03-29 18:00 CEST  dave     business hours",
        "Mon 2027-03-29 18:00 CEST  Tue 2027-03-30 02:00 CEST  bob      weekly",
    ]
    result = CliRunner().invoke(main, ["--config", config, "oncall", "-o", "json",
                                       "--at", "2027-03-30T21:00:00+02:00"])  # fmt: skip
    assert json.loads(result.output) == [
        {"schedule": "primary", "person": "erin", "source": "override"}
    ]
    result = CliRunner().invoke(main, ["--config", config, "people"])
    assert result.output.splitlines()[1].split() == ["alice", "Europe/Paris", "email", "primary"]
    for args, message in [
        (["oncall", "nope"], "no schedule 'nope' (schedules: primary)"),
        (["oncall", "--at", "tomorrow"], "--at: not an RFC 3339 timestamp"),
    ]:
        result = CliRunner().invoke(main, ["--config", config, *args])
        assert result.exit_code == 1
        assert message in result.output
    result = CliRunner().invoke(main, ["oncall"])  # no schedules configured: said so
    assert result.exit_code == 0
    assert "no schedules configured" in result.output


def test_too_many_shifts_are_refused_not_cut_short() -> None:
    """Three hourly layers over a year change hands 26,352 times: refused, naming `days`
    (a listing cut at its bound would give the last shift the rest of the period)."""
    layers = [
        {
            "rotation": {
                "participants": ["alice", "bob"],
                "shift": "1h",
                "start": f"2027-01-01T00:{minute:02d}",
            }
        }
        for minute in (0, 20, 40)
    ]
    busy = oncall(busy={"layers": layers}).schedules["busy"]
    start = at("2027-01-02T00:00:00Z")
    hundred = busy.shifts(start, start + 100 * 86400 * NS)  # 7,200 changes: listed
    assert {s.source for s in hundred} == {"layer 3"}  # (the top layer always has someone)
    assert len(hundred) == 24 * 100 + 1
    with pytest.raises(InvalidInput) as error:
        busy.shifts(start, start + 366 * 86400 * NS)
    assert error.value.field == "days"


# --- escalation to people ------------------------------------------------------------------

ESCALATING = """
alertmanager:
  receivers:
    - {name: lead, type: webhook, config: {url: "http://127.0.0.1:9/lead"}}
    - {name: ops, type: webhook, config: {url: "http://127.0.0.1:9/ops"}}
escalation:
  policies:
    - name: oncall
      fallback: [lead]
      steps:
        - notify: [{schedule: primary}]
        - wait: 5m
        - notify: [ops, {person: carol}]
"""


def escalating(tmp_path: Path, text: str = ESCALATING) -> Any:
    path = tmp_path / "escalating.yml"
    doc = {**yaml.safe_load(text), "people": {**PEOPLE, "carol": {}},
           "schedules": {"primary": PRIMARY}}  # fmt: skip
    path.write_text(yaml.safe_dump(doc))
    return load_settings(path, {})


def test_a_step_pages_whoever_is_on_call_when_it_is_taken(tmp_path: Path) -> None:
    settings = escalating(tmp_path)
    policy = settings.escalation.policy("oncall")
    now = at("2027-03-29T20:00:00Z")  # Monday 22:00 CEST: bob's week, after hours
    esc = transitions.start(1, policy, "high", now, 0)
    moved = transitions.advance(esc, now, settings.escalation.oncall)
    (copy,) = moved.new_copies
    assert (copy.receivers, copy.people, copy.fallback) == ((), ("bob",), False)
    assert moved.events == [("escalated", "level 0: schedule primary -> bob (email)")]
    later = transitions.advance(moved.escalation, now + 300 * NS, settings.escalation.oncall)
    (copy,) = later.new_copies
    assert (copy.receivers, copy.people) == (("ops",), ("carol",))
    assert later.events[0] == ("escalated", "level 1: ops, person carol (no contact method)")


def test_nobody_on_call_the_fallback_and_an_event_say_so(tmp_path: Path) -> None:
    settings = escalating(tmp_path)
    policy = settings.escalation.policy("oncall")
    before = at("2027-03-01T00:00:00Z")  # before the rotations start: nobody
    moved = transitions.advance(transitions.start(1, policy, "high", before, 0), before,
                                settings.escalation.oncall)  # fmt: skip
    (copy,) = moved.new_copies
    assert (copy.people, copy.fallback) == ((), True)
    assert moved.events == [
        ("escalated", "level 0: schedule primary -> nobody on call"),
        ("escalation_nobody_on_call", "level 0: schedule primary has nobody on call: lead"),
    ]


def test_a_copys_labels_name_its_people(tmp_path: Path) -> None:
    """What the generated routes read: escalation_people (and escalation_fallback), kept
    with the escalation (a copy posted again is the same alert)."""
    alert = dataclasses.replace(stored(), labels={"alertname": "high_cpu"})
    settings = escalating(tmp_path)
    policy = settings.escalation.policy("oncall")
    esc = transitions.start(1, policy, "high", 0, 0)
    paged = Copy(0, 1, 0, (), people=("alice", "bob"))
    assert copy_labels(alert, esc, paged)["escalation_people"] == "alice,bob"
    alone = Copy(0, 1, 0, (), fallback=True)
    labels = copy_labels(alert, esc, alone)
    assert labels["escalation_fallback"] == "true"
    assert "escalation_people" not in labels
    assert Copy.from_json(paged.to_json()) == paged  # kept with the escalation
    assert Copy.from_json({"level": 0, "round": 1, "starts_at": 0, "receivers": ["a"]}).people == ()


@pytest.mark.parametrize(
    ("edit", "key", "reason"),
    [
        (("{schedule: primary}", "{schedule: secondary}"), "steps[0].notify",
         "unknown schedule 'secondary' (schedules: primary)"),
        (("{person: carol}", "{person: zed}"), "steps[2].notify", "unknown person 'zed'"),
        (("{person: carol}", "{team: carol}"), "steps[2].notify", "{schedule: NAME}"),
        (("fallback: [lead]", "fallback: [nobody]"), "fallback", "unknown receiver 'nobody'"),
    ],
)  # fmt: skip
def test_steps_naming_what_does_not_exist(
    tmp_path: Path, edit: tuple[str, str], key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as error:
        escalating(tmp_path, ESCALATING.replace(*edit))
    assert error.value.key == f"escalation.policies.oncall.{key}"
    assert reason in error.value.reason


# --- iCalendar out and in --------------------------------------------------------------------

#: A schedule as PagerDuty and Opsgenie export one: recurring shifts in a zone, an exception,
#: and a shift naming its person by an attendee's address rather than its summary.
EXPORTED = """\
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Example on-call tool//EN
BEGIN:VTIMEZONE
TZID:Europe/Paris
BEGIN:STANDARD
DTSTART:19701025T030000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:19700329T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
END:DAYLIGHT
END:VTIMEZONE
BEGIN:VEVENT
UID:shift-alice@example
DTSTAMP:20270101T000000Z
SUMMARY:On call: alice
DTSTART;TZID=Europe/Paris:20270315T090000
DTEND;TZID=Europe/Paris:20270322T090000
RRULE:FREQ=WEEKLY;INTERVAL=2
EXDATE;TZID=Europe/Paris:20270412T090000
END:VEVENT
BEGIN:VEVENT
UID:shift-bob@example
DTSTAMP:20270101T000000Z
SUMMARY:Primary on-call
ATTENDEE;CN=Bob:mailto:Bob@Example.org
DTSTART;TZID=Europe/Paris:20270322T090000
DTEND;TZID=Europe/Paris:20270329T090000
RRULE:FREQ=WEEKLY;INTERVAL=2
END:VEVENT
BEGIN:VEVENT
UID:someone-else@example
DTSTAMP:20270101T000000Z
SUMMARY:On call: zed
DTSTART:20270413T000000Z
DTEND:20270414T000000Z
END:VEVENT
END:VCALENDAR
"""


def imported(tmp_path: Path) -> OnCall:
    (tmp_path / "exported.ics").write_text(EXPORTED)
    people = {**PEOPLE, "bob": {"contacts": [{"type": "email",
                                              "config": {"to": "bob@example.org"}}]}}  # fmt: skip
    path = tmp_path / "imported.yml"
    layer = {"name": "from pagerduty", "calendar": {"file": "exported.ics"}}
    schedule = {"timezone": "Europe/Paris", "layers": [layer]}
    path.write_text(yaml.safe_dump({"people": people, "schedules": {"pd": schedule}}))
    return load_settings(path, {}).oncall


@pytest.mark.parametrize(
    ("instant", "person"),
    [
        ("2027-03-15T07:59:00Z", None),  # Mon 08:59 CET: before the first shift
        ("2027-03-15T08:00:00Z", "alice"),  # 09:00 CET
        ("2027-03-22T07:59:00Z", "alice"),
        ("2027-03-22T08:00:00Z", "bob"),  # bob by his attendee address (case aside)
        ("2027-03-29T06:59:00Z", "bob"),  # the clocks went forward: 09:00 CEST is 07:00Z
        ("2027-03-29T07:00:00Z", "alice"),
        ("2027-04-12T07:00:00Z", None),  # alice's shift of the 12th is an exception
        ("2027-04-13T12:00:00Z", None),  # zed is nobody here: not a shift
        ("2027-04-19T07:00:00Z", "bob"),
    ],
)
def test_a_layer_from_another_tools_calendar(tmp_path: Path, instant: str,
                                             person: str | None) -> None:  # fmt: skip
    assert imported(tmp_path).schedules["pd"].who(at(instant)) == person


def test_an_imported_calendar_lists_shifts_and_what_it_could_not_read(tmp_path: Path) -> None:
    pd = imported(tmp_path).schedules["pd"]
    shifts = pd.shifts(at("2027-03-20T00:00:00Z"), at("2027-04-01T00:00:00Z"))
    assert [(s.person, s.start) for s in shifts] == [
        ("alice", at("2027-03-20T00:00:00Z")), ("bob", at("2027-03-22T08:00:00Z")),
        ("alice", at("2027-03-29T07:00:00Z")),
    ]  # fmt: skip
    layer = pd.layers[0]
    assert isinstance(layer, CalendarLayer)
    assert layer.unmatched(at("2027-04-12T00:00:00Z"), at("2027-04-19T00:00:00Z")) == 1
    for text, reason in [("BEGIN:VCALENDAR\nnonsense", "not an iCalendar file"),
                         (None, "cannot read")]:  # fmt: skip
        if text is None:
            (tmp_path / "exported.ics").unlink()
        else:
            (tmp_path / "exported.ics").write_text(text)
        with pytest.raises(ConfigError) as error:
            load_settings(tmp_path / "imported.yml", {})
        assert error.value.key == "schedules.pd.layers[0].calendar.file"
        assert reason in error.value.reason


def test_the_feed_read_back_is_the_schedule(tmp_path: Path) -> None:
    """What `-o ics` writes, read by icalendar: one event per shift, at its times."""
    config = str(config_file(tmp_path))
    result = CliRunner().invoke(main, ["--config", config, "oncall", "primary", "-o", "ics",
                                       "--at", "2027-03-28T00:00:00Z", "--days", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    calendar = icalendar.Calendar.from_ical(result.output)
    events = [(str(e["summary"]), e.decoded("dtstart"), e.decoded("dtend"))
              for e in calendar.walk("VEVENT")]  # fmt: skip
    utc = dt.UTC
    assert events == [
        ("On call: alice (primary)", dt.datetime(2027, 3, 28, tzinfo=utc),
         dt.datetime(2027, 3, 29, 7, tzinfo=utc)),
        ("On call: dave (primary)", dt.datetime(2027, 3, 29, 7, tzinfo=utc),
         dt.datetime(2027, 3, 29, 16, tzinfo=utc)),
        ("On call: bob (primary)", dt.datetime(2027, 3, 29, 16, tzinfo=utc),
         dt.datetime(2027, 3, 30, tzinfo=utc)),
    ]  # fmt: skip


async def test_a_calendar_application_subscribes_by_a_signed_link(client: Any) -> None:
    body = await (await client.get("/api/v1/oncall/primary", headers=API)).json()
    link = body["calendar"]
    assert link.startswith("/calendar/schedules/primary.ics?sig=")
    feed = await client.get(link + "&days=366")  # no token: the signature is the credential
    assert feed.status == 200
    assert feed.headers["Content-Type"].startswith("text/calendar")
    calendar = icalendar.Calendar.from_ical(await feed.read())
    people = {str(e["summary"]) for e in calendar.walk("VEVENT")}
    assert {"On call: alice (primary)", "On call: dave (primary)"} <= people
    persons = await (await client.get("/api/v1/people", headers=API)).json()
    alice = next(p for p in persons if p["name"] == "alice")["calendar"]
    mine = icalendar.Calendar.from_ical(await (await client.get(alice + "&days=366")).read())
    assert {str(e["summary"]) for e in mine.walk("VEVENT")} == {"On call: alice (primary)"}
    signature = link.rpartition("=")[2]
    for path, status in [
        (f"/calendar/schedules/primary.ics?sig={'0' * 32}", 403),  # forged
        (f"/calendar/people/bob.ics?sig={signature}", 403),  # another feed's signature
        (f"/calendar/schedules/primary.ics?sig=\u00e9{signature[1:]}", 403),
        ("/calendar/schedules/primary.ics", 401),  # neither signature nor token
        ("/calendar/rules/primary.ics", 404),
    ]:
        response = await client.get(path)
        assert response.status == status, (path, await response.text())
        assert "message" in await response.json()
    assert (await client.get("/calendar/schedules/primary.ics", headers=API)).status == 200


async def test_the_page_shows_who_is_on_call_and_the_next_days(
    aiohttp_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signed in: each schedule with who is on call now, the shifts of the next 14 days in
    its zone (a gap says nobody), its feed's link; the people. Markup stays text."""
    begun = {"layers": [{"name": "<b>mornings</b>",
                         "rotation": {"participants": ["erin"], "shift": "1d",
                                      "start": "2026-01-01T00:00"},
                         "restrict": [{"days": ["mon"], "hours": "09:00-10:00"}]}]}  # fmt: skip
    path = tmp_path / "page.yml"
    schedules = {"primary": PRIMARY, "mondays": begun}
    path.write_text(yaml.safe_dump({"people": PEOPLE, "schedules": schedules}))
    base = load_settings(path, {}, db=str(tmp_path / "a.db"))
    server = dataclasses.replace(base.server, api_token=Secret("api-secret"))
    client = await aiohttp_client(create_app(dataclasses.replace(base, server=server),
                                             background=False))  # fmt: skip
    away = await client.get("/oncall", allow_redirects=False)
    assert away.status == 303
    signed = await client.post(
        "/signin",
        allow_redirects=False,
        data={"token": "api-secret", "name": "olga", "next": "/oncall"},
    )
    assert signed.status == 303
    page = await (await client.get("/oncall")).text()
    assert "<h2>mondays <small" in page
    assert "/calendar/schedules/mondays.ics?sig=" in page
    assert "<td>nobody</td>" in page  # erin is on call one hour a week: gaps
    assert "<td>erin</td>" in page
    assert "<th>alice</th><td>Europe/Paris</td><td>email</td><td>primary</td>" in page
    assert "<td>&lt;b&gt;mornings&lt;/b&gt;</td>" in page  # markup stays text
    assert "<b>mornings" not in page
    assert '<a href="/oncall">On call</a>' in page
    # every page's header names who is on call now, in each schedule (nobody: said so)
    now = load_settings(path, {}).oncall.now(now_ns())
    assert len(now) == 2
    listing = await (await client.get("/alerts")).text()
    header = listing[listing.index('<p class="oncall-now">'):listing.index("</p>", listing.index(
        '<p class="oncall-now">'))]  # fmt: skip
    for entry in now:
        assert f"{entry['schedule']} <strong>{entry['person'] or 'nobody'}</strong>" in header
    # the rows the live refresh fetches (once a second under load) work out nobody on call
    asked = []
    real = OnCall.now

    def counted(self: OnCall, at: int) -> Any:
        asked.append(at)
        return real(self, at)

    monkeypatch.setattr(OnCall, "now", counted)
    assert (await client.get("/alerts/rows")).status == 200
    assert asked == []
    await client.get("/alerts")
    assert len(asked) == 1


def test_icalendar_is_loaded_only_where_a_calendar_is_used() -> None:
    """icalendar and its dependencies are 140 modules and 9,000 objects every garbage
    collection of the server would walk: imported when a feed is asked for or a calendar
    layer configured, not with the server (a one-alert notification cost 4 us more with
    them loaded: bench.ingest, issue 32)."""
    code = ("import sys, bridge.http.app, bridge.cli, bridge.config;"
            " print(sorted(m for m in sys.modules if 'ical' in m))")  # fmt: skip
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)  # fmt: skip
    assert loaded.stdout.strip() == "[]"


# --- alertbridge calendar import -------------------------------------------------------------


class _Feed:
    """A loopback HTTP server answering each GET with (status, body) set by the test, and
    keeping the paths asked for."""

    def __init__(self) -> None:
        import http.server
        import threading

        feed = self
        self.answer: tuple[int, bytes] = (200, EXPORTED.encode())
        self.paths: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                feed.paths.append(self.path)
                status, body = feed.answer
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def feed() -> Any:
    served = _Feed()
    yield served
    served.close()


def _import_config(tmp_path: Path) -> str:
    people = {**PEOPLE, "bob": {"contacts": [{"type": "email",
                                              "config": {"to": "bob@example.org"}}]}}  # fmt: skip
    path = tmp_path / "people.yml"
    path.write_text(yaml.safe_dump({"people": people}))
    return str(path)


def test_calendar_import_from_a_file_names_whom_its_shifts_page(tmp_path: Path) -> None:
    config = _import_config(tmp_path)
    (tmp_path / "exported.ics").write_text(EXPORTED)
    out = tmp_path / "layer" / "primary.ics"
    result = CliRunner().invoke(main, ["--config", config, "calendar", "import",
                                       str(tmp_path / "exported.ics"), "--out", str(out),
                                       "--at", "2027-04-05T00:00:00Z", "--days", "14"])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # 3 events; over Apr 5-19: alice's of Mar 29 (until Apr 5 09:00), not hers of the 12th
    # (an exception); bob's of Apr 5 (his next starts Apr 19 09:00 CEST, after); zed's
    # names nobody configured
    assert lines[:3] == ["3 event(s); over the next 14 days:", "  alice: 1 shift(s)",
                         "  bob: 1 shift(s)"]  # fmt: skip
    assert "  1 event(s) name nobody configured: not shifts" in lines
    assert out.read_text() == EXPORTED
    assert "calendar: {file: primary.ics}" in result.output
    # the file written is what a layer reads
    (tmp_path / "schedules.yml").write_text(yaml.safe_dump({
        "people": yaml.safe_load(Path(config).read_text())["people"],
        "schedules": {"pd": {"timezone": "Europe/Paris",
                             "layers": [{"name": "imported",
                                         "calendar": {"file": "layer/primary.ics"}}]}},
    }))  # fmt: skip
    oncall = load_settings(tmp_path / "schedules.yml", {}).oncall
    assert oncall.schedules["pd"].who(at("2027-03-22T08:00:00Z")) == "bob"


def test_calendar_import_follows_a_feed_whose_url_is_kept_off_the_command_line(
    tmp_path: Path, feed: _Feed
) -> None:
    config = _import_config(tmp_path)
    secret = "/private/s3cr3t-token/calendar.ics"
    (tmp_path / "url").write_text(feed.base + secret + "\n")
    out = tmp_path / "primary.ics"
    args = ["--config", config, "calendar", "import", "--url-file", str(tmp_path / "url"),
            "--out", str(out), "--at", "2027-03-15T00:00:00Z"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert feed.paths == [secret]
    assert "  alice: 1 shift(s)" in result.output
    assert out.read_text() == EXPORTED
    # the URL from standard input, as calendar applications are given it (webcal: HTTPS)
    result = CliRunner().invoke(main, [*args[:4], "--url-file", "-", *args[6:]],
                                input=feed.base + secret)  # fmt: skip
    assert result.exit_code == 0, result.output
    # what goes wrong is said in one line naming the host, never the secret path
    before = out.read_text()
    for answer, message in [
        ((404, b"gone"), "the feed at 127.0.0.1 answered HTTP 404"),
        ((200, b"<html>sign in</html>"), "the feed: not an iCalendar file"),
        ((200, b"X" * (10 * 2**20 + 1)), "the feed at 127.0.0.1 is larger than 10 MiB"),
    ]:
        feed.answer = answer
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert message in result.output
        assert "s3cr3t" not in result.output
        assert out.read_text() == before  # nothing half-written
    feed.close()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "cannot fetch the feed at 127.0.0.1: ClientConnectorError" in result.output


@pytest.mark.parametrize(
    ("args", "url", "message"),
    [
        ([], None, "give a SOURCE file or --url-file"),
        (["x.ics", "--url-file", "url"], "http://127.0.0.1/", "give a SOURCE file or"),
        (["--url-file", "url"], "ftp://127.0.0.1/a.ics", "must hold one http(s) or webcal URL"),
        (["--url-file", "url"], "http://a b", "must hold one http(s) or webcal URL"),
        (["--url-file", "missing"], None, "cannot read missing"),
        (["missing.ics"], None, "cannot read missing.ics"),
        (["webcal://127.0.0.1/s3cr3t.ics"], None, "a feed's URL goes in a file"),
    ],
)
def test_calendar_import_names_what_is_wrong(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             args: list[str], url: str | None,
                                             message: str) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    if url is not None:
        (tmp_path / "url").write_text(url)
    result = CliRunner().invoke(main, ["--config", _import_config(tmp_path), "calendar",
                                       "import", *args])  # fmt: skip
    assert result.exit_code in (1, 2), result.output
    assert message in result.output


def test_policies_check_warns_of_calendar_events_naming_nobody(tmp_path: Path) -> None:
    from bridge.cli.policies import oncall_warnings

    imported(tmp_path)
    settings = load_settings(tmp_path / "imported.yml", {})
    warnings = oncall_warnings(settings, at("2027-04-10T00:00:00Z"), days=7)
    assert ("schedule pd: 1 event(s) of layer from pagerduty's calendar in the next 7 days"
            " name nobody configured") in warnings  # fmt: skip
    assert not [w for w in oncall_warnings(settings, at("2027-03-15T09:00:00Z"), days=7)
                if "name nobody" in w]  # fmt: skip
