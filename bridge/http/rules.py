"""The rule set over HTTP (bridge.generate.managed): read it, change it one rule at a time,
see its versions and go back to one.

Reads need a read key; changes an admin key (a rule set is the whole monitoring's
configuration, not an operator's action on an alert). A change answers 200 (201 for a new
rule) once it is checked, written, reloaded and recorded; 400 naming the field or the check
that refused it; 409 when another change came first (`version` in the body or `If-Match`
names the version the caller saw) or rules are read-only here; 502 when a reload failed (the
previous files are back)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from bridge.core.custom import with_expr
from bridge.core.errors import InvalidInput, NotFound, RuleError
from bridge.core.model import json_integer
from bridge.core.rulebook import create, delete, rule_from, rule_record, set_enabled, update
from bridge.core.rules import RuleSet
from bridge.core.times import now_ns
from bridge.generate.managed import ChecksFailed, ReloadFailed, RuleManager, WriteFailed
from bridge.generate.ruletest import timeline_of
from bridge.http.auth import authorize
from bridge.http.errors import HttpError
from bridge.http.keys import LEADER, METRICS, SETTINGS, STORE
from bridge.http.util import json_response, read_json
from bridge.store import StoredAlert
from bridge.store.interface import Reads
from bridge.store.query import parse_alert_query

routes = web.RouteTableDef()
MANAGER = web.AppKey("rule_manager", RuleManager)
#: Recent episodes shown with one rule.
RECENT = 10


async def manager_ctx(app: web.Application) -> AsyncIterator[None]:
    """The rule manager beside the store: the latest version in force before anything
    evaluates, then the versions other replicas record followed."""
    from bridge.host.aio import stop_task

    leader = app.get(LEADER)
    holder = leader.holder if leader is not None else "alertbridge"
    manager = app[MANAGER] = RuleManager(app[SETTINGS], app[STORE], holder)
    metrics = app[METRICS]
    metrics.rules_version.set_function(lambda: manager.version)
    metrics.rules_reloads.set_function(lambda: manager.reloads)
    metrics.rules_resolved_after_change.set_function(lambda: manager.resolved_after_change)
    await manager.start()
    task = asyncio.create_task(manager.follow(), name="alertbridge-rules")
    yield
    await stop_task(task)
    for follow_up in list(manager.follow_ups):
        await stop_task(follow_up)


def rules_in_force(app: web.Application) -> RuleSet:
    """The rule set in force (the configuration's until the manager runs)."""
    manager = app.get(MANAGER)
    return manager.rules if manager is not None else app[SETTINGS].rules


def _manager(request: web.Request) -> RuleManager:
    manager = request.app.get(MANAGER)
    if manager is None:
        raise HttpError(503, "starting", "the rule set is not loaded yet; retry")
    return manager


#: Alerts read, newest first, to find each rule's recent episodes in one listing.
RECENT_SCAN = 1000  # (the most a listing gives)


async def firing_counts(store: Reads, rule: str | None = None) -> dict[str, int]:
    """Firing alerts by rule (of the first 1,000 firing: a listing, not a count)."""
    params: dict[str, list[str]] = {"status": ["firing"], "limit": ["1000"]}
    if rule is not None:
        params["rule"] = [rule]
    counts: dict[str, int] = {}
    for alert in await store.list_alerts(parse_alert_query(params, now_ns())):
        counts[alert.alertname] = counts.get(alert.alertname, 0) + 1
    return counts


async def recent_episodes(store: Reads, per_rule: int) -> dict[str, list[StoredAlert]]:
    """Each rule's latest episodes among the newest RECENT_SCAN alerts: one listing for the
    whole rule set (a listing per rule made the Rules page 1,000 reads for 1,000 rules)."""
    params = {"limit": [str(RECENT_SCAN)]}
    out: dict[str, list[StoredAlert]] = {}
    for alert in await store.list_alerts(parse_alert_query(params, now_ns())):
        kept = out.setdefault(alert.alertname, [])
        if len(kept) < per_rule:
            kept.append(alert)
    return out


async def _firing(request: web.Request, rule: str | None = None) -> dict[str, int]:
    return await firing_counts(request.app[STORE], rule)


def _shown(rule: Any, firing: Mapping[str, int]) -> dict[str, Any]:
    count = firing.get(rule.name, 0)
    state = "disabled" if not rule.enabled else ("firing" if count else "inactive")
    return {**rule_record(rule), "state": state, "firing": count}


def _answer(manager: RuleManager) -> dict[str, Any]:
    return {"version": manager.version, "mode": manager.settings.managed_rules.mode}


@routes.get("/api/v1/rules")
async def list_rules(request: web.Request) -> web.Response:
    """Every rule, its state (inactive, firing, disabled), the version in force."""
    authorize(request, "read")
    manager = _manager(request)
    firing = await _firing(request)
    return json_response({**_answer(manager),
                          "rules": [_shown(r, firing) for r in manager.rules]})  # fmt: skip


@routes.get("/api/v1/rules/history")
async def history(request: web.Request) -> web.Response:
    """The versions, newest first (`limit`, default 50)."""
    authorize(request, "read")
    raw = request.query.get("limit", "50")
    limit = json_integer(int(raw)) if raw.isdigit() else None
    if limit is None or not 1 <= limit <= 1000:
        raise InvalidInput("limit", f"must be 1..1000, got {raw!r:.20}")
    versions = await request.app[STORE].rule_history(limit)
    return json_response({**_answer(_manager(request)),
                          "versions": [v.record() for v in versions]})  # fmt: skip


@routes.get("/api/v1/rules/versions/{version}")
async def one_version(request: web.Request) -> web.Response:
    """One version, with its whole rule set (`entries`, as in a configuration file)."""
    authorize(request, "read")
    number = _version_of(request.match_info["version"], "version")
    found = await request.app[STORE].rule_version(number)
    if found is None:
        raise NotFound(f"no rule set version {number}")
    return json_response(found.record(entries=True))


@routes.get("/api/v1/rules/{name}")
async def one_rule(request: web.Request) -> web.Response:
    """One rule, its state and its recent episodes."""
    authorize(request, "read")
    manager = _manager(request)
    name = request.match_info["name"]
    rule = manager.rules.get(name)
    if rule is None:
        raise NotFound(f"no rule named {name!r}")
    params = {"rule": [name], "limit": [str(RECENT)]}
    recent = await request.app[STORE].list_alerts(parse_alert_query(params, now_ns()))
    firing = await _firing(request, name)
    episodes = [{"id": a.id, "status": a.status, "starts_at": a.starts_at,
                 "ends_at": a.ends_at, "labels": dict(a.labels)} for a in recent]  # fmt: skip
    return json_response({**_answer(manager), "rule": _shown(rule, firing),
                          "episodes": episodes})  # fmt: skip


def _version_of(raw: object, field: str) -> int:
    number = json_integer(int(raw)) if isinstance(raw, str) and raw.isdigit() else json_integer(raw)
    if number is None or number < 0:
        raise InvalidInput(field, f"must be a version number, got {raw!r:.40}")
    return number


def _base(request: web.Request, body: Mapping[str, Any] | None) -> int | None:
    """The version the caller saw: If-Match, or `version` in the body."""
    match = request.headers.get("If-Match")
    if match is not None:
        return _version_of(match.strip().strip('"'), "If-Match")
    if body is not None and "version" in body:
        return _version_of(body["version"], "version")
    return None


async def _body(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")
    return body


async def _apply(request: web.Request, action: str, rule: str, change: Any,
                 base: int | None, status: int = 200) -> web.Response:  # fmt: skip
    principal = authorize(request, "admin")
    manager = _manager(request)
    by = principal.actor(request.query.get("by"))
    actor = by if isinstance(by, str) and by.strip() else "api"
    try:
        applied = await manager.change(actor[:200], action, rule, change, base)
    except RuleError as exc:
        raise HttpError(400, "invalid_rule", str(exc), exc.field) from None
    except ChecksFailed as exc:
        checks = [{"name": r.name, "output": r.output} for r in exc.failed]
        return json_response({"error": "checks_failed", "message": str(exc),
                              "checks": checks}, status=400)  # fmt: skip
    except ReloadFailed as exc:
        raise HttpError(502, "reload_failed", str(exc)) from None
    except WriteFailed as exc:
        raise HttpError(500, "write_failed", str(exc)) from None
    shown = manager.rules.get(rule) if rule else None
    body = {**_answer(manager), **applied.record(), "changed": applied.version is not None}
    if shown is not None:
        body["rule"] = rule_record(shown)
    return json_response(body, status=status if applied.version is not None else 200)


def _entry(request: web.Request, body: Mapping[str, Any]) -> dict[str, Any]:
    """The rule of a body (itself, or its `rule`), with the PromQL of a rule on a declared
    metric written (bridge.core.custom)."""
    rule = body.get("rule", body)
    if not isinstance(rule, dict):
        raise InvalidInput("rule", "must be a JSON object of the rule's fields")
    entry = {k: v for k, v in rule.items() if k != "version" or rule is not body}
    settings = request.app[SETTINGS]
    return with_expr(entry, settings.metrics, settings.namespace)


@routes.post("/api/v1/rules")
async def add_rule(request: web.Request) -> web.Response:
    """A new rule (its fields as a `rules:` entry of the configuration file)."""
    body = await _body(request)
    entry = _entry(request, body)
    name = entry.get("name")
    return await _apply(request, "created", name if isinstance(name, str) else "",
                        lambda rules: create(rules, entry), _base(request, body), 201)  # fmt: skip


@routes.put("/api/v1/rules/{name}")
async def replace_rule(request: web.Request) -> web.Response:
    """Rule `name` replaced by the body (fields left out: their defaults)."""
    name = request.match_info["name"]
    body = await _body(request)
    entry = _entry(request, body)
    return await _apply(request, "updated", name, lambda rules: update(rules, name, entry),
                        _base(request, body))  # fmt: skip


@routes.patch("/api/v1/rules/{name}")
async def patch_rule(request: web.Request) -> web.Response:
    """The fields of the body changed on rule `name`, the others kept."""
    name = request.match_info["name"]
    body = await _body(request)
    entry = _entry(request, body)
    return await _apply(request, "updated", name,
                        lambda rules: update(rules, name, entry, merge=True),
                        _base(request, body))  # fmt: skip


@routes.delete("/api/v1/rules/{name}")
async def delete_rule(request: web.Request) -> web.Response:
    """Rule `name` deleted (a default rule cannot be: disable it)."""
    name = request.match_info["name"]
    return await _apply(request, "deleted", name, lambda rules: delete(rules, name),
                        _base(request, None))  # fmt: skip


@routes.post("/api/v1/rules/{name}/enable")
async def enable_rule(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return await _apply(request, "enabled", name, lambda rules: set_enabled(rules, name, True),
                        _base(request, None))  # fmt: skip


@routes.post("/api/v1/rules/{name}/disable")
async def disable_rule(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return await _apply(request, "disabled", name,
                        lambda rules: set_enabled(rules, name, False),
                        _base(request, None))  # fmt: skip


@routes.post("/api/v1/rules/rollback")
async def rollback(request: web.Request) -> web.Response:
    """The rule set of an earlier version in force again, as a new version."""
    body = await _body(request)
    if "to" not in body:
        raise InvalidInput("to", "the version to go back to is required")
    number = _version_of(body["to"], "to")
    found = await request.app[STORE].rule_version(number)
    if found is None:
        raise NotFound(f"no rule set version {number}")
    target = found.rules()
    return await _apply(request, f"rolled back to version {number}", "", lambda rules: target,
                        _base(request, body))  # fmt: skip


@routes.post("/api/v1/rules/{name}/test")
async def try_rule(request: web.Request) -> web.Response:
    """When rule `name` (or the `rule` given in the body, not yet saved) would go pending and
    fire on the series given (promtool's notation), with which labels and annotations, as
    promtool evaluates the generated rule."""
    authorize(request, "read")
    manager = _manager(request)
    name = request.match_info["name"]
    body = await _body(request)
    if "rule" in body:
        try:
            rule = rule_from(name, _entry(request, body))
        except RuleError as exc:
            raise HttpError(400, "invalid_rule", str(exc), exc.field) from None
    else:
        found = manager.rules.get(name)
        if found is None:
            raise NotFound(f"no rule named {name!r}")
        rule = found
    unknown = sorted(set(body) - {"rule", "series", "interval", "duration"})
    if unknown:
        raise InvalidInput(unknown[0], "unknown field (allowed: series, interval, duration, rule)")
    answer = await asyncio.to_thread(timeline_of, rule, request.app[SETTINGS].namespace,
                                     body.get("series"), body.get("interval", "1m"),
                                     body.get("duration"))  # fmt: skip
    return json_response(answer)
