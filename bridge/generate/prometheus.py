"""Render the rule set as Prometheus alerting rules, promtool unit tests and prometheus.yml."""

from __future__ import annotations

from typing import Any

import yaml

from bridge.core.catalog import spec_for
from bridge.core.expressions import Annotations, alert_expr, alert_labels
from bridge.core.model import AlertRule, Condition, comma_list
from bridge.core.policies import HEARTBEAT_ALERT, HEARTBEAT_LABELS
from bridge.core.promql import stddev_score
from bridge.core.times import format_duration
from bridge.generate.dump import dump_yaml
from bridge.generate.fixtures import TEST_LABELS, Fixture, Timing, fixture_for

RULES_FILE = "telemetry.rules.yml"
TESTS_FILE = "telemetry.rules.test.yml"
GROUP = "alertbridge-telemetry"


HEARTBEAT_GROUP = "alertbridge-heartbeat"


def heartbeat_rule() -> dict[str, Any]:
    """The dead man's switch: always firing; Alertmanager sends it to the bridge every
    heartbeat interval, so its absence means Prometheus, Alertmanager or the path between
    them and the bridge stopped working."""
    labels = {k: v for k, v in HEARTBEAT_LABELS.items() if k != "alertname"}
    return {
        "alert": HEARTBEAT_ALERT,
        "expr": "vector(1)",
        "labels": labels,
        "annotations": {"summary": "The alerting pipeline works (the bridge's dead man's switch)"},
    }


def render_rules(rules: list[AlertRule], namespace: str, heartbeat: bool = False) -> str:
    """`telemetry.rules.yml` for the enabled rules (and the heartbeat rule)."""
    out = []
    for rule in rules:
        if not rule.enabled:
            continue
        entry: dict[str, Any] = {"alert": rule.name, "expr": alert_expr(rule, namespace)}
        if rule.for_seconds:
            entry["for"] = format_duration(rule.for_seconds)
        entry["labels"] = alert_labels(rule)
        entry["annotations"] = Annotations(rule).templates()
        out.append(entry)
    groups = [{"name": GROUP, "rules": out}]
    if heartbeat:
        groups.append({"name": HEARTBEAT_GROUP, "rules": [heartbeat_rule()]})
    return dump_yaml({"groups": groups})


# --- promtool unit tests -------------------------------------------------------------------

_LADDER = (0.001, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


def _pick(rule: AlertRule, fixture: Fixture, fire: bool) -> Any | None:
    """A level just on the wanted side of the threshold, the nearest the kind can express."""
    return _level(rule.threshold_base, rule.condition, fixture, fire)


def _level(t: float, cond: Condition, fixture: Fixture, fire: bool) -> Any | None:
    """A level on the wanted side of `t` under `cond`, the nearest the fixture expresses."""
    at = fixture.level(t)
    if cond.holds(fixture.measured(at), t) == fire:
        return at  # the threshold itself is the nearest point on the wanted side
    # Try moving away from the threshold in the direction that gives the wanted verdict.
    for delta in _LADDER:
        step = max(abs(t), 1.0) * delta
        for candidate in (t + step, t - step):
            level = fixture.level(candidate)
            if cond.holds(fixture.measured(level), t) == fire:
                return level
    return None


def _several_test(rule: AlertRule, namespace: str) -> dict[str, Any] | None:
    """The test of a rule of several conditions, each on its own catalogue metric: with
    `all`, quiet while the first holds and the others do not, firing once all hold (the
    first's value shown); with `any`, quiet while none holds, firing on a second condition
    alone (its value shown). None when two conditions read one metric, or one is custom."""
    conditions = [(rule.spec, rule.threshold_base, rule.condition),
                  *((c.spec, c.threshold_base, c.condition) for c in rule.also)]  # fmt: skip
    if len(set(rule.metrics)) != len(conditions) or any(s is None for s, _, _ in conditions):
        return None
    timing = Timing.for_rule(rule.window_seconds, rule.for_seconds)
    fixtures = [fixture_for(spec, namespace, timing) for spec, _, _ in conditions if spec]
    levels = []
    for (_, t, cond), fixture in zip(conditions, fixtures, strict=True):
        safe, past = _level(t, cond, fixture, False), _level(t, cond, fixture, True)
        if safe is None or past is None:
            return None
        levels.append((safe, past))
    n, f, step = timing.window_steps, timing.for_steps, timing.step
    quiet_end = n + f + 2
    fire_at = quiet_end + n + f + 1
    if rule.match == "all":
        quiet = [past if i == 0 else safe for i, (safe, past) in enumerate(levels)]
        fire = [past for _, past in levels]
        shown = 0
    else:
        quiet = [safe for safe, _ in levels]
        fire = [past if i == 1 else safe for i, (safe, past) in enumerate(levels)]
        shown = 1
    series: list[dict[str, Any]] = []
    for i, fixture in enumerate(fixtures):
        series += fixture.input_series([(quiet[i], quiet_end + 1), (fire[i], fire_at - quiet_end)])
    labels = {**TEST_LABELS, **alert_labels(rule)}
    value = fixtures[shown].measured(fire[shown])
    when = "all hold" if rule.match == "all" else "one holds"
    return {
        "name": f"{rule.name}: quiet until {when}, then fires after for",
        "interval": format_duration(step),
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": format_duration(quiet_end * step), "alertname": rule.name,
             "exp_alerts": []},
            {"eval_time": format_duration(fire_at * step), "alertname": rule.name,
             "exp_alerts": [{"exp_labels": labels,
                             "exp_annotations": Annotations(rule).render(labels, value)}]},
        ],
    }  # fmt: skip


def _anomaly_test(rule: AlertRule, namespace: str) -> dict[str, Any] | None:
    """The test of an anomaly rule on a gauge: stddev: a series alternating about a level for
    the window (quiet), then a jump the rule must see (firing once held for `for`, with the
    score promtool computes: found by playing the evaluations here); week: a week at one
    level, then a level the threshold's ratio and a half away (firing after `for`)."""
    spec = rule.spec
    if spec is None or spec.kind != "gauge" or rule.threshold <= 1:
        return None
    series = spec.series_name(namespace) + "{" + ", ".join(
        f'{k}="{v}"' for k, v in TEST_LABELS.items()) + "}"  # fmt: skip
    labels = {**TEST_LABELS, **alert_labels(rule)}
    minute = 60
    if rule.anomaly == "stddev":
        n = rule.anomaly_window // minute
        quiet = [0.4 if i % 2 == 0 else 0.6 for i in range(n + 2)]
        jump = 0.6 + 0.2 * (rule.threshold + 1) * 2
        values = quiet + [jump] * (rule.for_seconds // minute + 4)
        held_since, fire_at, shown = None, None, 0.0
        for t in range(n + 2, len(values)):
            # (a subquery [W:1m] at t takes the minutes t - W .. t: both ends, n + 1 values)
            score = stddev_score(values[max(0, t - n) : t + 1])
            if score > rule.threshold:
                held_since = t if held_since is None else held_since
                if (t - held_since) * minute >= rule.for_seconds:
                    fire_at, shown = t, score
                    break
            else:
                held_since = None
        if fire_at is None:
            return None
        text = " ".join(f"{v:g}" for v in values)
        step, quiet_at = minute, n + 1
    else:
        week = 7 * 86400 // 300
        ratio = rule.threshold * 1.5
        after = rule.for_seconds // 300 + 3
        text = f"0.5x{week + 3} {0.5 * ratio:g}x{after}"
        step, quiet_at, shown = 300, week + 3, (0.5 * ratio) / 0.5
        fire_at = week + 4 + (rule.for_seconds + 299) // 300 + 1
    return {
        "name": f"{rule.name}: quiet while usual, fires on an anomaly",
        "interval": format_duration(step),
        "input_series": [{"series": series, "values": text}],
        "alert_rule_test": [
            {"eval_time": format_duration(quiet_at * step), "alertname": rule.name,
             "exp_alerts": []},
            {"eval_time": format_duration(fire_at * step), "alertname": rule.name,
             "exp_alerts": [{"exp_labels": labels,
                             "exp_annotations": Annotations(rule).render(labels, shown)}]},
        ],
    }  # fmt: skip


def _rule_test(rule: AlertRule, namespace: str) -> dict[str, Any] | None:
    if rule.anomaly is not None:
        return _anomaly_test(rule, namespace)
    if rule.also:
        return _several_test(rule, namespace)
    spec = rule.spec
    if spec is None:
        return None  # a custom `expr` rule: its input series are unknown
    timing = Timing.for_rule(rule.window_seconds, rule.for_seconds)
    fixture = fixture_for(spec, namespace, timing)
    safe, past = _pick(rule, fixture, fire=False), _pick(rule, fixture, fire=True)
    if safe is None or past is None:
        return None
    n, f, step = timing.window_steps, timing.for_steps, timing.step
    quiet_end = n + f + 2  # safe for longer than window + for: proves it stays quiet
    fire_at = quiet_end + n + f + 1
    phases = [(safe, quiet_end + 1), (past, fire_at - quiet_end)]
    labels = {**TEST_LABELS, **alert_labels(rule)}
    checks: list[dict[str, Any]] = [
        {"eval_time": format_duration(quiet_end * step), "alertname": rule.name, "exp_alerts": []}
    ]
    if spec.kind == "gauge" and f:
        checks.append(
            {
                "eval_time": format_duration((quiet_end + f) * step),
                "alertname": rule.name,
                "exp_alerts": [],
            }
        )
    checks.append(
        {
            "eval_time": format_duration(fire_at * step),
            "alertname": rule.name,
            "exp_alerts": [
                {
                    "exp_labels": labels,
                    "exp_annotations": Annotations(rule).render(labels, fixture.measured(past)),
                }
            ],
        }
    )
    return {
        "name": f"{rule.name}: quiet at the threshold's safe side, fires past it after for",
        "interval": format_duration(step),
        "input_series": fixture.input_series(phases),
        "alert_rule_test": checks,
    }


def render_rule_tests(
    rules: list[AlertRule], namespace: str, rules_file: str = RULES_FILE, heartbeat: bool = False
) -> tuple[str, list[str]]:
    """The promtool test file, and the names of enabled rules that got no test (and why)."""
    tests, untested = [], []
    for rule in rules:
        if not rule.enabled:
            continue
        test = _rule_test(rule, namespace)
        if test is None:
            why = (
                "custom expr"
                if spec_for(rule.metric_name) is None or rule.expr
                else "conditions on one metric, or a custom one"
                if rule.also
                else "unreachable"
            )
            untested.append(f"{rule.name} ({why})")
        else:
            tests.append(test)
    if heartbeat:
        beat = heartbeat_rule()
        tests.append({
            "name": "heartbeat: fires from the first evaluation, always",
            "interval": "1m",
            "input_series": [],
            "alert_rule_test": [
                {"eval_time": t, "alertname": HEARTBEAT_ALERT,
                 "exp_alerts": [{"exp_labels": beat["labels"],
                                 "exp_annotations": beat["annotations"]}]}
                for t in ("0m", "10m")
            ],
        })  # fmt: skip
    step = min((Timing.for_rule(r.window_seconds, 0).step for r in rules), default=60)
    doc = {
        "rule_files": [rules_file],
        "evaluation_interval": format_duration(step),
        "tests": tests,
    }
    return dump_yaml(doc), untested


def render_prometheus_config(
    scrape_interval: int,
    evaluation_interval: int,
    job: str,
    scrape_target: str,
    alertmanager_target: str,
    rules_path: str = f"rules/{RULES_FILE}",
) -> str:
    """`prometheus.yml`: scrape the bridge, load the generated rules, alert to Alertmanager
    (`alertmanager_target` may list a cluster's replicas, comma-separated: Prometheus sends
    every alert to each, as Alertmanager's HA wants; `scrape_target` the bridge's replicas,
    each scraped as its own instance)."""
    targets, scraped = comma_list(alertmanager_target), comma_list(scrape_target)
    doc = {
        "global": {
            "scrape_interval": format_duration(scrape_interval),
            "evaluation_interval": format_duration(evaluation_interval),
        },
        "rule_files": [rules_path],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": targets}]}]},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": scraped}]}],
    }
    return dump_yaml(doc)


# --- prometheus-operator -----------------------------------------------------------------

#: Where `rules generate --format prometheus-operator` writes the resource.
OPERATOR_FILE = "alertbridge.prometheusrule.yaml"


def render_prometheus_rule(
    rules: list[AlertRule], namespace: str, name: str = "alertbridge",
    k8s_namespace: str | None = None, labels: dict[str, str] | None = None,
    heartbeat: bool = False,
) -> str:  # fmt: skip
    """The rule set as a prometheus-operator `PrometheusRule` resource: its `spec.groups`
    are exactly the groups of `telemetry.rules.yml` (render_rules). `labels` are what the
    Prometheus resource's ruleSelector matches (often `release: <its Helm release>`)."""
    groups = yaml.safe_load(render_rules(rules, namespace, heartbeat))["groups"]
    metadata: dict[str, Any] = {"name": name}
    if k8s_namespace:
        metadata["namespace"] = k8s_namespace
    ours = {"app.kubernetes.io/name": "alertbridge", "app.kubernetes.io/managed-by": "alertbridge"}
    metadata["labels"] = {**ours, **(labels or {})}
    return dump_yaml({"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                      "metadata": metadata, "spec": {"groups": groups}})  # fmt: skip
