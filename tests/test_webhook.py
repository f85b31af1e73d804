"""Parsing Alertmanager's version 4 webhook payload (and Grafana's version 1)."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.alerts import AlertLimits, InvalidPayload, parse_time
from bridge.ingest.webhook import _alert, _alert_fast, alert_from_api, parse_notification
from tests.payloads import ZERO, am_alert, notification


def test_parses_firing_and_resolved() -> None:
    """Fields land in typed values; the zero endsAt of a firing alert is None."""
    payload = notification(
        am_alert(),
        am_alert("fedcba9876543210", "resolved", ends_at="2026-11-23T10:05:00.000000001Z"),
    )
    parsed = parse_notification(payload)
    assert parsed.receiver == "alertbridge"
    firing, resolved = parsed.alerts
    assert firing.ends_at is None
    assert firing.starts_at == 1_795_428_000_123_000_000
    assert firing.alertname == "high_cpu"
    assert firing.severity == "warning"
    assert resolved.ends_at == 1_795_428_300_000_000_001


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2026-11-23T10:00:00Z", 1_795_428_000_000_000_000),
        ("2026-11-23T10:00:00.5Z", 1_795_428_000_500_000_000),
        ("2026-11-23T10:00:00.123456789Z", 1_795_428_000_123_456_789),
        ("2026-11-23T11:00:00+01:00", 1_795_428_000_000_000_000),
        ("2026-11-23T09:30:00.25-00:30", 1_795_428_000_250_000_000),
        ("0001-01-01T00:00:00Z", None),
        ("1970-01-01T00:00:00Z", 0),
        ("2262-04-11T23:47:16.854775807Z", 2**63 - 1),
        ("2026-11-23T09:00:00-23:59", 1_795_428_000_000_000_000 + 82740 * 10**9),
    ],
)
def test_timestamps_with_ms_ns_and_offsets(text: str, ns: int | None) -> None:
    """Millisecond and nanosecond fractions and zone offsets are exact; zero time is None."""
    assert parse_time(text, "t") == ns


@pytest.mark.parametrize(
    "text", ["2026-11-23 10:00:00Z", "2026-02-30T10:00:00Z", "2026-11-23T25:00:00Z",
             "2026-11-23T10:00:00.1234567891Z", "yesterday", "2026-11-23T10:00:00",
             "2300-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1600-01-01T00:00:00Z",
             "0002-01-01T00:00:00Z", "1969-12-31T23:59:59.999999999Z",
             "2262-04-11T23:47:16.854775808Z", "2026-11-23T10:00:00+99:99",
             "2026-11-23T10:00:00+24:00", "2026-11-23T10:00:00-00:60",
             "\u0662\u0660\u0662\u0666-11-23T10:00:00Z", "2026-11-23T10:00:00.\u0665Z"],
)  # fmt: skip
def test_bad_timestamps(text: str) -> None:
    """Anything that is not a valid RFC 3339 instant the store can hold is rejected with the
    field named: outside 1970..2262 (int64 nanoseconds), offsets beyond +-23:59, non-ASCII
    digits."""
    with pytest.raises(InvalidPayload) as info:
        parse_time(text, "alerts[0].startsAt")
    assert info.value.field == "alerts[0].startsAt"


def _broken(path: list[Any], value: Any) -> dict[str, Any]:
    payload = notification(am_alert())
    target: Any = payload
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return payload


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["version"], "3", "version"),
        (["version"], KeyError, "version"),
        (["status"], "pending", "status"),
        (["alerts"], {}, "alerts"),
        (["truncatedAlerts"], -1, "truncatedAlerts"),
        (["alerts", 0], "x", "alerts[0]"),
        (["alerts", 0, "status"], "ok", "alerts[0].status"),
        (["alerts", 0, "fingerprint"], "XYZ", "alerts[0].fingerprint"),
        (["alerts", 0, "fingerprint"], KeyError, "alerts[0].fingerprint"),
        (["alerts", 0, "labels"], KeyError, "alerts[0].labels"),
        (["alerts", 0, "labels"], ["a"], "alerts[0].labels"),
        (["alerts", 0, "labels", "team"], 5, "alerts[0].labels.team"),
        (["alerts", 0, "annotations", "summary"], None, "alerts[0].annotations.summary"),
        (["alerts", 0, "startsAt"], KeyError, "alerts[0].startsAt"),
        (["alerts", 0, "startsAt"], "0001-01-01T00:00:00Z", "alerts[0].startsAt"),
        (["alerts", 0, "startsAt"], 1700000000, "alerts[0].startsAt"),
        (["alerts", 0, "endsAt"], "soon", "alerts[0].endsAt"),
        (["alerts", 0, "generatorURL"], 5, "alerts[0].generatorURL"),
    ],
)
def test_invalid_payloads_name_the_field(path: list[Any], value: Any, field: str) -> None:
    """Each malformed part raises InvalidPayload with its JSON path."""
    with pytest.raises(InvalidPayload) as info:
        parse_notification(_broken(path, value))
    assert info.value.field == field


def test_resolved_needs_an_end() -> None:
    """A resolved alert with the zero endsAt is invalid."""
    payload = notification(am_alert(status="resolved"))
    with pytest.raises(InvalidPayload, match=r"alerts\[0\].endsAt"):
        parse_notification(payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_raises_only_invalid_payload(value: Any) -> None:
    """Whatever JSON arrives, parsing either succeeds or raises InvalidPayload (never a crash)."""
    with contextlib.suppress(InvalidPayload):
        parse_notification(value)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "version",
                "status",
                "alerts",
                "labels",
                "startsAt",
                "endsAt",
                "fingerprint",
                "annotations",
                "truncatedAlerts",
            ]
        ),
        min_size=1,
        max_size=3,
    ),
    json_values,
)
def test_mutated_valid_payloads_raise_only_invalid_payload(keys: list[str], value: Any) -> None:
    """A valid payload with fields replaced by arbitrary JSON never crashes the parser."""
    payload = copy.deepcopy(notification(am_alert(), am_alert("fedcba9876543210")))
    for key in keys:
        alerts = payload["alerts"]
        if key in payload:
            payload[key] = copy.deepcopy(value)
        elif isinstance(alerts, list) and alerts and isinstance(alerts[0], dict):
            alerts[0][key] = copy.deepcopy(value)
    try:
        parsed = parse_notification(json.loads(json.dumps(payload)))
    except InvalidPayload:
        return
    assert all(len(a.fingerprint) == 16 for a in parsed.alerts)


alert_keys = st.sampled_from(
    ["status", "fingerprint", "labels", "annotations", "startsAt", "endsAt", "generatorURL"]
)
alert_values = json_values | st.sampled_from(
    [
        "firing",
        "resolved",
        "0123456789abcdef",
        "0123456789abcdef\n",
        ZERO,
        "2026-11-23T10:00:00Z",
        "2026-02-30T10:00:00Z",
        "2300-01-01T00:00:00Z",
        "1600-01-01T00:00:00Z",
        "2026-11-23T10:00:00+99:99",
        "x" * 40,
        {"alertname": "x", "a" * 40: "b"},
        {"alertname": "x", "y": "z" * 40},
        {f"l{i}": "v" for i in range(5)} | {"alertname": "x"},
        {"summary": "s" * 40},
        "",
        {},
        {"alertname": ""},
        {"alertname": "x", "v": 1},
        {"alertname": "x"},
    ]
)


#: Limits small enough that the values above cross each of them.
TIGHT = AlertLimits(max_labels=5, max_label_name=32, max_label_value=32, max_annotations=3,
                    max_annotation_value=32, max_generator_url=64, max_alert_size=200)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(
    st.lists(st.tuples(alert_keys, alert_values | st.just(KeyError)), max_size=3),
    st.sampled_from(["firing", "resolved"]),
    st.sampled_from([AlertLimits(), TIGHT]),
)
def test_fast_path_agrees_with_the_validating_parser(
    edits: list[tuple[str, Any]], status: str, limits: AlertLimits
) -> None:
    """_alert_fast accepts only what _alert accepts and returns the same alert; else None."""
    raw: dict[str, Any] = am_alert(status=status, ends_at="2026-11-23T10:05:00Z")
    for key, value in edits:
        if value is KeyError:
            raw.pop(key, None)
        else:
            raw[key] = copy.deepcopy(value)
    fast = _alert_fast(raw, limits)
    try:
        slow = _alert(raw, "alerts[0]", limits)
    except InvalidPayload:
        assert fast is None
        return
    assert fast is None or fast == slow


@pytest.mark.parametrize(
    ("edit", "clipped"),
    [
        ({"labels": {f"l{i}": "v" for i in range(5)}}, "labels"),
        ({"labels": {"a" * 33: "v"}}, "labels"),
        ({"labels": {"instance": "v" * 33}}, "labels.instance"),
        ({"annotations": {f"a{i}": "" for i in range(4)}}, "annotations"),
        ({"annotations": {"summary": "s" * 33}}, "annotations.summary"),
        ({"generatorURL": "u" * 65}, "generatorURL"),
        ({"annotations": {"a": "s" * 32, "b": "s" * 32, "c": "s" * 32}}, "annotations.a"),
    ],
)
def test_an_alert_past_a_limit_is_clipped_and_its_neighbour_kept(
    edit: dict[str, Any], clipped: str
) -> None:
    """Each limit clips the alert to it and names what it cut, never refuses the notification:
    the neighbour beside it is parsed as it is; the default limits take the alert whole."""
    raw = am_alert()
    labels = {"alertname": "x"} if "labels" in edit else {}
    raw.update({k: {**labels, **v} if isinstance(v, dict) and k == "labels" else v
                for k, v in edit.items()})  # fmt: skip
    neighbour = am_alert("fedcba9876543210")
    one, two = parse_notification(notification(raw, neighbour), TIGHT).alerts
    assert clipped in one.clipped
    assert len(one.labels) <= TIGHT.max_labels
    assert len(one.annotations) <= TIGHT.max_annotations
    assert all(len(v) <= TIGHT.max_label_value for v in one.labels.values())
    assert all(len(n) <= TIGHT.max_label_name for n in one.labels)
    assert len(one.generator_url) <= TIGHT.max_generator_url
    size = len(one.generator_url) + sum(len(n) + len(v) for n, v in one.labels.items())
    assert size + sum(len(n) + len(v) for n, v in one.annotations.items()) <= (TIGHT.max_alert_size)
    assert two.clipped == ()
    assert two == _alert(neighbour, "alerts[1]", TIGHT)
    assert one.fingerprint == raw["fingerprint"]  # still the same alert for Alertmanager
    whole = parse_notification(notification(raw)).alerts[0]  # the default limits take it
    assert whole.clipped == ()
    for name, value in one.labels.items():  # a clipped value is a prefix of the one sent
        assert any(n.startswith(name) and v.startswith(value) for n, v in whole.labels.items())


def test_an_alert_without_alertname_is_an_alert() -> None:
    """Alertmanager accepts alerts without alertname, so the bridge stores them too."""
    raw = am_alert()
    del raw["labels"]["alertname"]
    (alert,) = parse_notification(notification(raw)).alerts
    assert alert.alertname == ""
    assert alert == _alert(raw, "alerts[0]")


def test_a_start_is_split_at_the_millisecond() -> None:
    """startsAt to the nanosecond (Alertmanager set it) and the same to the millisecond (its
    API) give one episode key; the nanoseconds are kept beside it."""
    exact = am_alert(starts_at="2026-12-07T01:02:17.894696746Z")
    listed = {**am_alert(starts_at="2026-12-07T01:02:17.894Z"), "status": {"state": "active"}}
    (webhook,) = parse_notification(notification(exact)).alerts
    api = alert_from_api(listed)
    assert webhook.starts_at == api.starts_at == 1_796_605_337_894_000_000
    assert (webhook.starts_ns, api.starts_ns) == (696_746, 0)
    assert _alert(exact, "alerts[0]") == webhook


def test_limits_are_inclusive() -> None:
    """An alert exactly at every limit is accepted by both paths."""
    raw = am_alert()
    raw["labels"] = {"alertname": "x", "b" * 32: "v" * 32, "c": "w" * 32}
    raw["annotations"] = {"summary": "s" * 32}
    raw["generatorURL"] = "u" * 13
    assert _alert_fast(raw, TIGHT) is not None
    assert _alert(raw, "alerts[0]", TIGHT).labels == raw["labels"]


def test_a_firing_alerts_end_is_not_range_checked() -> None:
    """A firing alert's endsAt is unused: any syntactically valid instant is accepted."""
    raw = am_alert(ends_at="9999-12-31T23:59:59Z")
    assert parse_notification(notification(raw)).alerts[0].ends_at is None
    raw = am_alert(status="resolved", ends_at="9999-12-31T23:59:59Z")
    with pytest.raises(InvalidPayload, match="range"):
        parse_notification(notification(raw))


@pytest.mark.parametrize(
    "raw",
    [am_alert(), am_alert(status="resolved", ends_at="2026-11-23T10:05:00Z"),
     {k: v for k, v in am_alert().items() if k not in ("annotations", "endsAt", "generatorURL")}],
)  # fmt: skip
def test_fast_path_takes_the_common_case(raw: dict[str, Any]) -> None:
    """Valid alerts, with optional fields or without, go through the fast path (the agreement
    test above passes whatever it declines)."""
    fast = _alert_fast(raw)
    assert fast is not None
    assert fast == _alert(raw, "alerts[0]")


def test_fingerprint_must_be_exactly_16_hex_digits() -> None:
    """A trailing newline is not part of a fingerprint (re.match with $ would accept it)."""
    with pytest.raises(InvalidPayload, match="fingerprint"):
        parse_notification(notification(am_alert("0123456789abcdef\n")))
    assert _alert_fast(am_alert("0123456789abcdef\n")) is None


def test_a_body_shorter_than_every_limit_skips_the_size_checks_safely() -> None:
    """body_size below every size limit: the same alerts, without measuring each string (no
    string of such a body can be longer than the body)."""
    payload = notification(am_alert(), am_alert("fedcba9876543210"))
    size = len(json.dumps(payload))
    assert size < TIGHT.smallest_size * 100
    limits = AlertLimits(max_label_name=size + 1, max_label_value=size + 1,
                         max_annotation_value=size + 1, max_generator_url=size + 1,
                         max_alert_size=size + 1)  # fmt: skip
    assert parse_notification(payload, limits, size) == parse_notification(payload, limits)
    payload["alerts"][1]["annotations"]["description"] = "d" * 40  # over TIGHT's 32
    # measured when the body is long enough to hide one
    parsed = parse_notification(payload, TIGHT, len(json.dumps(payload)))
    assert parsed.alerts[1].clipped == ("annotations.description",)
