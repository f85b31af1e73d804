"""The OpenAPI 3.1 document of the HTTP API, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from bridge import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}


def _responses(ok: str, *codes: int | str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """The responses of an operation: `ok`, the error codes given, 403 (every route is
    Host-checked), and with "requestBody" among the codes those of reading a JSON body."""
    out: dict[str, Any] = {
        ok: {"description": "OK", "content": {"application/json": {"schema": schema or {}}}}
    }
    reasons = {400: "Invalid input", 401: "Missing or wrong token",
               403: "Host name not allowed, a cross-origin request, or the key's role does"
                    " not allow it (or a non-admin key's `by` names someone else)",
               404: "Not found",
               408: "The body did not arrive in time", 409: "Conflict with the alert's state",
               413: "Body or alert too large", 415: "Content-Type is not application/json",
               422: "Unacceptable values",
               503: "Storage unavailable, or the query over its time budget; retry"}  # fmt: skip
    body_codes = (408, 413, 415) if "requestBody" in codes else ()
    for code in sorted({c for c in codes if isinstance(c, int)} | {403, *body_codes}):
        out[str(code)] = {
            "description": reasons[code],
            "content": {"application/json": {"schema": _ERROR}},
        }
    return out


_ALERT = {"$ref": "#/components/schemas/Alert"}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}


_ESCALATIONS = {"type": "object", "properties": {"escalations": {"type": "array"}}}


def _action(
    summary: str,
    fields: dict[str, Any],
    required: list[str],
    ok: str = "200",
    schema: dict[str, Any] | None = None,
) -> Any:
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}],
            "parameters": [_ID],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"type": "object", "properties": fields, "required": required}
                    }
                },
            },
            "responses": _responses(
                ok, 400, 401, 404, 409, 422, 503, "requestBody", schema=schema or _ALERT
            ),
        }
    }


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description,
            "schema": schema or {"type": "string"}}  # fmt: skip


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "alertbridge", "version": __version__},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {
                    "error": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string"},
                },
            },
            "Alert": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "fingerprint": {"type": "string"},
                    "status": {"enum": ["firing", "resolved"]},
                    "state": {"enum": ["firing", "acknowledged", "resolved"]},
                    "alertname": {"type": "string"},
                    "severity": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                    "starts_at": {"type": "string", "format": "date-time"},
                    "ends_at": {"type": ["string", "null"], "format": "date-time"},
                    "receive_count": {"type": "integer"},
                    "acknowledged": {"type": "boolean"},
                    "acked_by": {"type": ["string", "null"]},
                    "assignee": {"type": ["string", "null"]},
                    "silence_id": {"type": ["string", "null"]},
                    "silence_state": {
                        "enum": [None, "pending", "active", "expiring", "expired", "none"]
                    },
                    "resolution": {
                        "enum": [None, "alertmanager", "local", "inferred", "manual", "restart"]
                    },
                    "am_state": {"enum": [None, "active", "suppressed", "unprocessed"]},
                    "am_silenced_by": {"type": "array", "items": {"type": "string"}},
                    "am_inhibited_by": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "fingerprint": {"type": "string"},
                                "alert_id": {"type": ["integer", "null"]},
                            },
                        },
                    },
                },
            },
        },
    },
    "paths": {
        "/metrics": {
            "get": {
                "summary": "Prometheus exposition",
                "responses": {"200": {"description": "text/plain or application/openmetrics-text"}},
            }
        },
        "/-/healthy": {"get": {"summary": "Liveness", "responses": {"200": {"description": "OK"}}}},
        "/-/ready": {
            "get": {
                "summary": "Readiness: storage open, its writer running, writes working",
                "responses": {"200": {"description": "OK"}, "503": {"description": "Not ready"}},
            }
        },
        "/api/v1/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": {"description": "OK"}}}
        },
        "/api/v1/alertmanager": {
            "post": {
                "summary": "Alertmanager webhook (version 4); 2xx once stored durably",
                "security": [{"bearer": []}],
                "responses": _responses("200", 400, 401, 503, "requestBody"),
            }
        },
        "/api/v1/telemetry": {
            "post": {
                "summary": "Record a telemetry batch",
                "security": [{"bearer": []}],
                "responses": _responses("200", 400, 401, 409, "requestBody"),
            }
        },
        "/api/v1/status": {
            "get": {
                "summary": "Snapshot against each rule, alert counts",
                "security": [{"bearer": []}],
                "responses": _responses("200", 401),
            }
        },
        "/api/v1/alerts": {
            "get": {
                "summary": "List alerts, newest first",
                "security": [{"bearer": []}],
                "parameters": [
                    _query("status", "firing or resolved"),
                    _query("severity", "repeatable, or comma-separated"),
                    _query("rule", "alert name"),
                    _query("filter", 'repeatable label matcher: team="x", a!="b", c=~"re"'),
                    _query("since", "RFC 3339, or a Prometheus duration ago (2h, 1h30m, 7d)"),
                    _query("until", "RFC 3339, or a duration ago"),
                    _query("acknowledged", "true or false"),
                    _query(
                        "am_state",
                        "active or suppressed: firing alerts Alertmanager"
                        " notifies about, or mutes (silenced or inhibited)",
                    ),
                    _query("q", "text in the summary, the description or a note (any case)"),
                    _query(
                        "sort",
                        "newest (default: by id) or attention (firing, active and"
                        " unacknowledged first, by severity)",
                    ),
                    _query("limit", "1..1000, default 50", {"type": "integer"}),
                    _query("cursor", "next_cursor of the previous page"),
                ],
                "responses": _responses("200", 400, 401, 503),
            }
        },
        "/api/v1/alerts/{id}": {
            "get": {
                "summary": "One alert with its events",
                "security": [{"bearer": []}],
                "parameters": [_ID],
                "responses": _responses("200", 400, 401, 404, 503, schema=_ALERT),
            }
        },
        "/api/v1/alerts/{id}/ack": _action(
            "Acknowledge", {"by": {"type": "string"}, "comment": {"type": "string"}}, []
        ),
        "/api/v1/alerts/{id}/unack": _action(
            "Withdraw an acknowledgement",
            {"by": {"type": "string"}, "comment": {"type": "string"}},
            [],
        ),
        "/api/v1/alerts/{id}/notes": _action(
            "Add a note",
            {"by": {"type": "string"}, "text": {"type": "string"}},
            ["text"],
            ok="201",
        ),
        "/api/v1/alerts/{id}/assign": _action(
            "Assign (null or empty unassigns)",
            {"by": {"type": "string"}, "assignee": {"type": ["string", "null"]}},
            [],
        ),
        "/api/v1/alerts/{id}/resolve": _action(
            "Resolve by hand (provisional for Alertmanager's alerts: a later firing delivery"
            " of the episode reopens it)",
            {"by": {"type": "string"}, "comment": {"type": "string"}},
            [],
        ),
        "/api/v1/report": {
            "get": {
                "summary": "Time to acknowledge and to resolve (median, p90) by rule, severity"
                " and assignee; episodes per rule per day; noisiest and flapping rules; never"
                " acknowledged; time at each escalation level",
                "security": [{"bearer": []}],
                "parameters": [
                    _query("since", "RFC 3339, or a duration ago (default 30d)"),
                    _query("until", "RFC 3339, or a duration ago (default now)"),
                    _query("flap", "fired again within this of its end: a flap (default 10m)"),
                ],
                "responses": _responses("200", 400, 401, 503),
            }
        },
        "/api/v1/events/stream": {
            "get": {
                "summary": "The feed of changes as Server-Sent Events: each event with its"
                " alert's summary, `id` the event id; resumes after Last-Event-ID (or `after`);"
                " filters as the alert list (status, severity, rule, filter, acknowledged) plus"
                " `kind` and `alert_id`; gzip when accepted; a comment every 15 s of quiet",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                    for n in (
                        "after",
                        "kind",
                        "alert_id",
                        "status",
                        "severity",
                        "rule",
                        "filter",
                        "acknowledged",
                    )
                ]
                + [
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {"description": "The stream", "content": {"text/event-stream": {}}},
                    **{k: v for k, v in _responses("200", 400, 401).items() if k != "200"},
                    "503": {
                        "description": "server.max_connections streams open already"
                        " (too_many_streams); retry later"
                    },
                },
            }
        },
        "/api/v1/channels": {
            "get": {
                "summary": "Delivery statistics: Alertmanager's notifications by integration"
                " (success ratio, latency), escalation steps by policy and level, Teams adapter",
                "security": [{"bearer": []}],
                "responses": _responses("200", 401),
            }
        },
        "/api/v1/adapters/msteams/{receiver}": {
            "post": {
                "summary": "Alertmanager's webhook for a Microsoft Teams receiver: delivered to"
                " Teams as a card (502 when Teams fails: Alertmanager retries)",
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "receiver",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {"required": True, "content": {"application/json": {}}},
                "responses": {
                    **_responses("200", 400, 401, 404, 503, "requestBody"),
                    "502": {
                        "description": "Teams refused the card or could not be reached",
                        "content": {"application/json": {"schema": _ERROR}},
                    },
                },
            }
        },
        "/api/v1/alerts/{id}/escalation": {
            "get": {
                "summary": "The alert's escalations: policy, state, level, next step, copies",
                "security": [{"bearer": []}],
                "parameters": [_ID],
                "responses": _responses("200", 400, 401, 404, 503, schema=_ESCALATIONS),
            }
        },
        "/api/v1/alerts/{id}/escalate": _action(
            "Escalate now: level `level` (default the next one) is notified at once, whatever"
            " its window; the policy goes on from there",
            {"by": {"type": "string"}, "level": {"type": "integer", "minimum": 0}},
            [],
            schema=_ESCALATIONS,
        ),
        "/api/v1/alerts/{id}/escalation/pause": _action(
            "Pause escalation for a duration (`for`, e.g. 30m; default until resumed)",
            {"by": {"type": "string"}, "for": {"type": "string"}},
            [],
            schema=_ESCALATIONS,
        ),
        "/api/v1/alerts/{id}/escalation/resume": _action(
            "Resume a paused escalation: the step it held is taken at once",
            {"by": {"type": "string"}},
            [],
            schema=_ESCALATIONS,
        ),
    },
}
