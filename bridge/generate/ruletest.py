"""`alertbridge rules test NAME` and `POST /api/v1/rules/{name}/test`: when would a rule go
pending and fire on given series, with which labels and annotations, as Prometheus itself
decides it: promtool evaluates the rule as generated, on the series in promtool's notation.

promtool has no way to print what a rule does; it prints what a test got when it fails. So
each step of the timeline is a test that expects nothing: `ALERTS{alertname=...}` (the
pending and firing alerts, with their labels) and an alert-rule test (the firing alerts with
their annotations rendered). The "failures" are the answer; promtool's other errors (a
series it cannot read) are the caller's mistake, said with promtool's words.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bridge.core.errors import InvalidInput
from bridge.core.model import AlertRule
from bridge.core.times import format_duration, parse_duration
from bridge.generate.prometheus import render_rules
from bridge.host.tools import run_tool

#: Steps of a timeline, at most (each is two tests for promtool).
MAX_STEPS = 720
MAX_SERIES = 100

_TIME = re.compile(r"^\s*(?:expr: .*|alertname: [^,]*), time: ([0-9a-z]+),\s*$")
_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Episode:
    """One label set's course over the timeline (seconds from the start; None: never)."""

    labels: dict[str, str]
    pending_at: int | None = None
    firing_at: int | None = None
    resolved_at: int | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        def at(seconds: int | None) -> str | None:
            return None if seconds is None else format_duration(seconds)

        return {"labels": self.labels, "pending_at": at(self.pending_at),
                "firing_at": at(self.firing_at), "resolved_at": at(self.resolved_at),
                "annotations": self.annotations}  # fmt: skip


def _labels(text: str) -> dict[str, str]:
    return {k: bytes(v, "utf-8").decode("unicode_escape") for k, v in _PAIR.findall(text)}


def _input(series: object) -> list[dict[str, str]]:
    """promtool's input_series from `series`: ["name{labels} values", ...] or objects
    {series, values}."""
    if not isinstance(series, list) or not 1 <= len(series) <= MAX_SERIES:
        raise InvalidInput("series", f"must be a list of 1 to {MAX_SERIES} series")
    out = []
    for index, item in enumerate(series):
        where = f"series[{index}]"
        if isinstance(item, str):
            name, sep, values = item.strip().rpartition("}")
            if not sep:
                name, _, values = item.strip().partition(" ")
                name, sep = name, ""
            item = {"series": (name + sep).strip(), "values": values.strip()}
        if (not isinstance(item, Mapping) or set(item) != {"series", "values"}
                or not all(isinstance(v, str) and v.strip() for v in item.values())):  # fmt: skip
            raise InvalidInput(where, 'must be "metric{labels} values" or {series, values}'
                               " (promtool's notation: 0.5+0.1x10)")  # fmt: skip
        out.append({"series": str(item["series"]), "values": str(item["values"])})
    return out


def timeline_of(rule: AlertRule, namespace: str, series: object, interval: object = "1m",
              duration: object = None) -> dict[str, Any]:  # fmt: skip
    """The rule's timeline on `series` (see the module's docstring): every `interval` from 0
    to `duration` (default: as long as the longest series)."""
    inputs = _input(series)
    try:
        step = parse_duration(interval)
    except ValueError as exc:
        raise InvalidInput("interval", str(exc)) from None
    if step <= 0:
        raise InvalidInput("interval", "must be longer than 0s")
    if duration is None:
        longest = max(_count(s["values"]) for s in inputs)
        end = step * max(1, longest - 1)
    else:
        try:
            end = parse_duration(duration)
        except ValueError as exc:
            raise InvalidInput("duration", str(exc)) from None
    if end // step + 1 > MAX_STEPS:
        raise InvalidInput("duration", f"at most {MAX_STEPS} steps of the interval")
    times = [format_duration(t) for t in range(0, end + 1, step)]
    alerts = f'ALERTS{{alertname="{rule.name}"}}'
    test = {
        "interval": format_duration(step),
        "input_series": inputs,
        "promql_expr_test": [{"expr": alerts, "eval_time": t, "exp_samples": []} for t in times],
        "alert_rule_test": [{"eval_time": t, "alertname": rule.name, "exp_alerts": []}
                            for t in times],
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="alertbridge-ruletest-") as tmp:
        root = Path(tmp)
        (root / "rule.yml").write_text(render_rules([rule.replace(enabled=True)], namespace))
        (root / "test.yml").write_text(yaml.safe_dump(
            {"rule_files": ["rule.yml"], "evaluation_interval": format_duration(step),
             "tests": [test]}, sort_keys=False))  # fmt: skip
        run = run_tool("promtool", "test", "rules", str(root / "test.yml"), timeout=120)
    if run.ok:
        return _answer(rule, {}, times)
    if "FAILED:" not in run.output or "got" not in run.output:
        lines = [ln.strip() for ln in run.output.splitlines() if ln.strip()]
        raise InvalidInput("series", f"promtool: {' '.join(lines[-2:])[:300]}")
    return _answer(rule, _steps(run.output), times)


def _count(values: str) -> int:
    """How many samples promtool's notation gives (a expanded: a+bxN is N+1)."""
    total = 0
    for part in values.split():
        if "x" in part:
            try:
                total += int(part.rsplit("x", 1)[1]) + 1
            except ValueError:
                total += 1
        else:
            total += 1
    return total


def _steps(output: str) -> dict[int, dict[str, Any]]:
    """At each time promtool printed: the ALERTS samples (state, labels) and the firing
    alerts' annotations, by label set."""
    steps: dict[int, dict[str, Any]] = {}
    at = 0
    labels: dict[str, str] | None = None
    for line in output.splitlines():
        found = _TIME.match(line)
        if found:
            at = parse_duration(found.group(1))
            steps.setdefault(at, {"states": {}, "annotations": {}})
            continue
        text = line.strip()
        if '__name__="ALERTS"' in text:
            pairs = _labels(text[text.index("{") : text.rindex("}") + 1])
            state = pairs.pop("alertstate", "")
            pairs.pop("__name__", None)
            steps.setdefault(at, {"states": {}, "annotations": {}})["states"][
                tuple(sorted(pairs.items()))] = state  # fmt: skip
        elif text.startswith("Labels:{"):
            labels = _labels(text[len("Labels:") :])
        elif text.startswith("Annotations:{") and labels is not None:
            key = tuple(sorted(labels.items()))
            steps.setdefault(at, {"states": {}, "annotations": {}})["annotations"][key] = (
                _labels(text[len("Annotations:"):]))  # fmt: skip
            labels = None
    return steps


def _answer(rule: AlertRule, steps: Mapping[int, Mapping[str, Any]],
            times: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    episodes: dict[tuple[tuple[str, str], ...], Episode] = {}
    timeline = []
    for text in times:
        at = parse_duration(text)
        step = steps.get(at, {"states": {}, "annotations": {}})
        states = step["states"]
        for key, state in states.items():
            episode = episodes.setdefault(key, Episode(dict(key)))
            if episode.pending_at is None:
                episode.pending_at = at
            if state == "firing" and episode.firing_at is None:
                episode.firing_at = at
                episode.annotations = dict(step["annotations"].get(key, {}))
        for key, episode in episodes.items():
            if key not in states and episode.pending_at is not None and episode.resolved_at is None:
                episode.resolved_at = at
        timeline.append({"at": text, "alerts": [{"state": s, "labels": dict(k)}
                                                for k, s in sorted(states.items())]})  # fmt: skip
    return {
        "rule": rule.name,
        "for": format_duration(rule.for_seconds),
        "episodes": [e.record() for e in episodes.values()],
        "timeline": timeline,
    }
