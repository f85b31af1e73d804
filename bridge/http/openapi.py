"""The OpenAPI 3.1 document of the HTTP API, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from bridge import __version__
from bridge.channels import CHANNELS
from bridge.store.query import MAX_ID, MAX_LIMIT, MAX_SEARCH
from bridge.store.records import EVENT_KINDS, MAX_TEXT

_ERROR = {"$ref": "#/components/schemas/Error"}
#: The receiver types the bridge's adapter delivers (bridge.channels).
ADAPTERS = sorted(kind for kind, channel in CHANNELS.items() if channel.adapter)


def _responses(ok: str, *codes: int | str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """The responses of an operation: `ok`, the error codes given, 403 (every route is
    Host-checked), with "requestBody" among the codes those of reading a JSON body, and 429
    with 401 unless "webhook" is among them (wrong API tokens are rate limited)."""
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
               500: "The generated files could not be written (nothing changed)",
               502: "A reload of Prometheus or Alertmanager failed: the previous files are"
                    " back",
               426: "Not a WebSocket handshake",
               429: "Too many wrong tokens from this address (server.token_failures);"
                    " Retry-After says when to try again",
               503: "Storage unavailable, the query over its time budget, or (the"
                    " webhook) the bodies in flight over the server's budget; retry"}  # fmt: skip
    body_codes = (408, 413, 415) if "requestBody" in codes else ()
    if 401 in codes and "webhook" not in codes:  # wrong API tokens, past a rate: 429 (never
        codes = (*codes, 429)  # the webhook token's: a 4xx makes Alertmanager give up)
    for code in sorted({c for c in codes if isinstance(c, int)} | {403, *body_codes}):
        out[str(code)] = {
            "description": reasons[code],
            "content": {"application/json": {"schema": _ERROR}},
        }
    return out


_ALERT = {"$ref": "#/components/schemas/Alert"}

_ID = {"name": "id", "in": "path", "required": True,
       "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}  # fmt: skip
#: Who acts: optional with a key (the key's name; an admin key's `by` acts on behalf of
#: someone), required without one (no keys, or the shared token).
_BY = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT, "pattern": r"\S",
       "description": "who acts: with a key its name, and only an admin key may name someone"
                      " else (403); required with the shared token or on a bridge without"
                      " tokens (422 without it)"}  # fmt: skip
_TEXT = {"type": "string", "maxLength": MAX_TEXT}
_NOTE = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT, "pattern": r"\S"}
#: An instant the store holds (1970 to 2262), RFC 3339 with up to nanoseconds; the days a
#: month always has (the API takes every real date).
_RFC3339 = (
    r"^(19[7-9][0-9]|2[01][0-9][0-9]|22[0-5][0-9])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-2]):[0-5][0-9])$"
)
#: A Prometheus duration of at most about 15 years (units largest first, each once); the API
#: takes longer ones back to 1970.
_AGO = (
    r"^(?=.)([1-9]y)?([1-9][0-9]?w)?([1-9][0-9]{0,2}d)?([1-9][0-9]{0,3}h)?([1-9][0-9]{0,4}m)?"
    r"([1-9][0-9]{0,5}s)?([1-9][0-9]{0,8}ms)?$"
)
_WHEN = {"type": "string", "anyOf": [{"pattern": _RFC3339}, {"pattern": _AGO}]}
#: A label matcher (name = != =~ !~ value); names as Alertmanager 0.27 reads them. A regular
#: expression must also be RE2's (Go's) syntax: 400 naming it otherwise.
_MATCHER = r'^\s*("([^"\\]|\\.)+"|[^\s{}!=~,\\"\'`]+)\s*(=~|!~|!=|=)\s*("([^"\\]|\\.)*"|[^"]*)\s*$'


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


#: A pause's length: a subset of the durations it takes (any Prometheus duration of at most a
#: year), each form well inside the year.
#: A rule as a `rules:` entry of the configuration (bridge.core.rulebook); what GET answers
#: may come back (its derived fields are ignored).
_RULE = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
        "metric": {"type": "string", "minLength": 1},
        "condition": {"enum": [">", "<", ">=", "<=", "==", "!="]},
        "threshold": {"type": "number"},
        "severity": {"enum": ["info", "warning", "error", "critical"]},
        "for": {"type": ["string", "integer"]},
        "window": {"type": ["string", "integer"]},
        "cooldown_seconds": {"type": "number", "minimum": 0},
        "expr": {"type": ["string", "null"]},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "description": {"type": "string"},
        "enabled": {"type": "boolean"},
        "escalation": {"type": ["string", "null"]},
        "also": {
            "type": "array",
            "description": "more conditions: metric, condition, threshold (expr)",
            "items": {"type": "object"},
        },
        "match": {"enum": ["all", "any"]},
        "when": {
            "type": ["object", "null"],
            "description": "the window its alerts are notified in: timezone, days, hours",
        },
    },
}
_RULE_NAME = {"name": "name", "in": "path", "required": True,
              "schema": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}}  # fmt: skip
_IF_MATCH = {"name": "If-Match", "in": "header", "required": False,
             "description": "the version of the rule set the change was made on (409 if"
                            " another is in force)",
             "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"}}  # fmt: skip
_BY_QUERY = {
    "name": "by",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}
_WS_PARAMETERS: list[dict[str, Any]] = []  # (filled below, from the stream's)
_CHANGED = ("200", 400, 401, 404, 409, 500, 502)


def _rule_change(summary: str, body: bool = False, created: bool = False) -> dict[str, Any]:
    """A change of the rule set (admin keys): checked, written, reloaded, recorded."""
    op: dict[str, Any] = {
        "summary": summary + " (an admin key): checked by promtool and amtool, written,"
        " Prometheus and Alertmanager reloaded, recorded as a version",
        "security": [{"bearer": []}],
        "parameters": [_IF_MATCH, _BY_QUERY],
        "responses": _responses(
            "201" if created else "200", *(("requestBody",) if body else ()), *_CHANGED[1:]
        ),
    }
    if created:
        op["responses"]["200"] = {"description": "Unchanged (the rule set already is so)",
                                  "content": {"application/json": {"schema": {}}}}  # fmt: skip
    if body:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": _RULE}}}  # fmt: skip
    return op


_RULE_PATHS: dict[str, Any] = {
    "/api/v1/rules": {
        "get": {
            "summary": "The rule set in force: every rule, its state, the version",
            "security": [{"bearer": []}],
            "responses": _responses("200", 401),
        },
        "post": _rule_change("Add a rule", body=True, created=True),
    },
    "/api/v1/rules/history": {
        "get": {
            "summary": "The versions of the rule set, newest first",
            "security": [{"bearer": []}],
            "parameters": [
                _query(
                    "limit",
                    "how many (default 50)",
                    {"type": "integer", "minimum": 1, "maximum": 1000},
                )
            ],
            "responses": _responses("200", 400, 401),
        },
    },
    "/api/v1/rules/versions/{version}": {
        "get": {
            "summary": "One version of the rule set, its rules as `rules:` entries",
            "security": [{"bearer": []}],
            "parameters": [
                {
                    "name": "version",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0, "maximum": 999_999_999_999},
                }
            ],
            "responses": _responses("200", 400, 401, 404),
        },
    },
    "/api/v1/rules/rollback": {
        "post": {
            **_rule_change("Put an earlier version's rule set in force again"),
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["to"],
                            "properties": {
                                "to": {"type": "integer", "minimum": 1, "maximum": 999_999_999_999}
                            },
                        }
                    }
                },
            },
            "responses": _responses("200", "requestBody", *_CHANGED[1:]),
        },
    },
    "/api/v1/rules/{name}": {
        "get": {
            "summary": "A rule, its state and its recent episodes",
            "security": [{"bearer": []}],
            "parameters": [_RULE_NAME],
            "responses": _responses("200", 401, 404),
        },
        "put": {**_rule_change("Replace a rule", body=True)},
        "patch": {**_rule_change("Change fields of a rule", body=True)},
        "delete": {**_rule_change("Delete a rule (a default rule: disable it)")},
    },
    "/api/v1/rules/{name}/test": {
        "post": {
            "summary": "When the rule (or `rule`, unsaved) would go pending and fire on"
            " these series (promtool's notation), with which labels and annotations:"
            " promtool evaluates the generated rule",
            "security": [{"bearer": []}],
            "parameters": [],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["series"],
                            "additionalProperties": False,
                            "properties": {
                                "series": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": 100,
                                    "items": {
                                        "type": "string",
                                        "minLength": 1,
                                        "description": "metric{labels} values, as"
                                        " promtool: 0.5 0.9x10",
                                    },
                                },
                                "interval": {"type": "string", "pattern": "^[1-9][0-9]{0,3}[smh]$"},
                                "duration": {"type": "string", "pattern": "^[1-9][0-9]{0,3}[smh]$"},
                                "rule": _RULE,
                            },
                        }
                    }
                },
            },
            "responses": _responses("200", "requestBody", 400, 401, 404),
        },
    },
    "/api/v1/rules/{name}/enable": {"post": _rule_change("Enable a rule")},
    "/api/v1/rules/{name}/disable": {"post": _rule_change("Disable a rule")},
}
for _path, _ops in _RULE_PATHS.items():
    if "{name}" in _path:
        for _op in _ops.values():
            if _RULE_NAME not in _op["parameters"]:
                _op["parameters"] = [_RULE_NAME, *_op["parameters"]]


_PAUSE = r"^([1-9][0-9]?d|[1-9][0-9]{0,2}h|[1-9][0-9]{0,4}m|[1-9][0-9]{0,6}s)$"
#: An instant asked for (on-call): RFC 3339 or "now".
_AT = {"type": "string", "anyOf": [{"const": "now"}, {"pattern": _RFC3339}]}
#: The alert list's filters, shared by the event stream.
_ALERT_FILTERS = [
    _query("status", "firing or resolved", {"enum": ["firing", "resolved"]}),
    _query("severity", "repeatable, or comma-separated"),
    _query("rule", "alert name"),
    {
        **_query(
            "filter",
            'repeatable label matcher: team="x", a!="b", c=~"re",'
            ' "service.name"="checkout" (UTF-8 names as Alertmanager 0.27 reads them);'
            " a regular expression in RE2's (Go's) syntax",
            {"type": "string", "pattern": _MATCHER},
        ),
        "explode": True,
    },
    _query("acknowledged", "true or false", {"enum": ["true", "false"]}),
]


_FINGERPRINT = {"type": "string", "pattern": "^[0-9a-f]{16}$"}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_ZERO = "0001-01-01T00:00:00Z"
_RECEIVED = {
    "type": "object",
    "required": ["status", "labels", "startsAt", "fingerprint"],
    "properties": {
        "labels": {**_STRINGS, "minProperties": 1},
        "annotations": _STRINGS,
        "startsAt": {"type": "string", "pattern": _RFC3339},
        "generatorURL": {"type": "string"},
        "fingerprint": _FINGERPRINT,
    },
    "oneOf": [
        {"properties": {"status": {"const": "firing"},
                        "endsAt": {"anyOf": [{"const": _ZERO},
                                             {"type": "string", "pattern": _RFC3339}]}}},
        {"properties": {"status": {"const": "resolved"},
                        "endsAt": {"type": "string", "pattern": _RFC3339}},
         "required": ["endsAt"]},
    ],
}  # fmt: skip
#: A notification: what Alertmanager sends (version "4"), or Grafana (version "1", with more
#: fields: those it adds are kept, any other is ignored).
_NOTIFICATION = {
    "type": "object",
    "required": ["version", "status", "alerts"],
    "properties": {
        "version": {"enum": ["4", "1"]},
        "status": {"enum": ["firing", "resolved"]},
        "receiver": {"type": "string"},
        "groupKey": {"type": "string"},
        "truncatedAlerts": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
        "alerts": {"type": "array", "items": _RECEIVED},
    },
}
_WEBHOOK = {
    "security": [{"webhook": []}],
    "requestBody": {"required": True, "content": {"application/json": {"schema": _NOTIFICATION}}},
    "responses": _responses("200", 400, 401, 503, "requestBody", "webhook"),
}
_WEBHOOK_PUT = {"summary": "The same as POST (Grafana's contact point can be set to PUT)",
                **_WEBHOOK}  # fmt: skip
_COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_ID}
_TELEMETRY = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "description": "errors at most operations",
    "properties": {
        "search_latency_seconds": {"type": "array", "maxItems": 10_000,
                                   "items": {"type": "number", "minimum": 0, "maximum": 86400}},
        "documents": _COUNT,
        "operations": _COUNT,
        "errors": _COUNT,
        "cpu_usage_ratio": {"type": "number", "minimum": 0, "maximum": 1},
        "memory_used_bytes": {"type": "number", "minimum": 0, "maximum": 2**63},
        "metrics": {
            "type": "array", "maxItems": 10_000,
            "description": "samples of the metrics the configuration declares (`metrics:`):"
                           " a gauge's value, a counter's increment (>= 0), a histogram's"
                           " observations; the labels exactly the declared ones. An unknown"
                           " name, a wrong value or labels: 400 naming the field, and"
                           " nothing of the batch recorded",
            "items": {"type": "object", "required": ["name"], "additionalProperties": False,
                      "properties": {
                          "name": {"type": "string"},
                          "value": {"type": "number"},
                          "values": {"type": "array", "minItems": 1, "maxItems": 10_000,
                                     "items": {"type": "number"}},
                          "labels": {"type": "object",
                                     "additionalProperties": {"type": "string",
                                                              "maxLength": 1024}},
                      }},
        },
    },
}  # fmt: skip

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "alertbridge", "version": __version__},
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "an API key, or the shared API token",
            },
            "webhook": {
                "type": "http",
                "scheme": "bearer",
                "description": "the webhook token (basic auth with it as the password too)",
            },
        },
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
                    "source": {"type": "string"},
                    "generator_url": {"type": "string"},
                    "starts_at": {
                        "type": "string",
                        "format": "date-time",
                        "description": "as exactly as the sender gave it; the"
                        " episode is the fingerprint and this to the millisecond",
                    },
                    "clipped": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "what was cut to the limits (JSON paths)",
                    },
                    "extra": {
                        "type": "object",
                        "description": "a Grafana alert's links"
                        " (dashboardURL, panelURL, silenceURL, imageURL) and values",
                    },
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
            "put": _WEBHOOK_PUT,
            "post": {
                "summary": "Alertmanager's webhook (version 4) and Grafana's (version 1); 2xx"
                " once stored durably. An alert past a size limit is stored clipped and marked,"
                " never refused; 503 while the bodies in flight hold the server's budget (the"
                " sender retries). Authenticated by the webhook token, or by Grafana's HMAC"
                " signature when a secret is set",
                **_WEBHOOK,
            },
        },
        "/api/v1/telemetry": {
            "post": {
                "summary": "Record a telemetry batch (409: system metrics sent to a bridge that"
                " samples its own)",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _TELEMETRY}},
                },
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
                    *_ALERT_FILTERS,
                    _query(
                        "since", "RFC 3339, or a Prometheus duration ago (2h, 1h30m, 7d)", _WHEN
                    ),
                    _query("until", "RFC 3339, or a duration ago", _WHEN),
                    _query(
                        "am_state",
                        "active or suppressed: firing alerts Alertmanager"
                        " notifies about, or mutes (silenced or inhibited)",
                        {"enum": ["active", "suppressed"]},
                    ),
                    _query(
                        "q",
                        "text in the summary, the description or a note (any case)",
                        {"type": "string", "maxLength": MAX_SEARCH},
                    ),
                    _query(
                        "sort",
                        "newest (default: by id) or attention (firing, active and"
                        " unacknowledged first, by severity)",
                        {"enum": ["newest", "attention"]},
                    ),
                    _query(
                        "limit",
                        f"1..{MAX_LIMIT}, default 50",
                        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                    ),
                    _query(
                        "cursor",
                        "next_cursor of the previous page (in the same sort)",
                        {
                            "type": "string",
                            "pattern": r"^([1-9][0-9]{0,17}|a[0-3]\.[0-4]\.[1-9][0-9]{0,17})$",
                        },
                    ),
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
        "/api/v1/alerts/{id}/ack": _action("Acknowledge", {"by": _BY, "comment": _TEXT}, []),
        "/api/v1/alerts/{id}/unack": _action(
            "Withdraw an acknowledgement", {"by": _BY, "comment": _TEXT}, []
        ),
        "/api/v1/alerts/{id}/notes": _action(
            "Add a note", {"by": _BY, "text": _NOTE}, ["text"], ok="201"
        ),
        "/api/v1/alerts/{id}/assign": _action(
            "Assign (null or empty unassigns)",
            {"by": _BY, "assignee": {"type": ["string", "null"], "maxLength": MAX_TEXT}},
            [],
        ),
        "/api/v1/alerts/{id}/resolve": _action(
            "Resolve by hand (provisional for Alertmanager's alerts: a later firing delivery"
            " of the episode reopens it)",
            {"by": _BY, "comment": _TEXT},
            [],
        ),
        "/api/v1/report": {
            "get": {
                "summary": "Time to acknowledge and to resolve (median, p90) by rule, severity"
                " and assignee; episodes per rule per day; noisiest and flapping rules; never"
                " acknowledged; time at each escalation level",
                "security": [{"bearer": []}],
                "parameters": [
                    _query("since", "RFC 3339, or a duration ago (default 30d)", _WHEN),
                    _query(
                        "until", "RFC 3339, or a duration ago (default now); after since", _WHEN
                    ),
                    _query(
                        "flap",
                        "fired again within this of its end: a flap (default 10m)",
                        {"type": "string", "pattern": _AGO},
                    ),
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
                    _query(
                        "after",
                        "the event id to start after (default: from now)",
                        {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                    ),
                    _query(
                        "kind",
                        "event kinds, comma-separated",
                        {
                            "type": "string",
                            "pattern": f"^({'|'.join(sorted(EVENT_KINDS))})"
                            f"(,({'|'.join(sorted(EVENT_KINDS))}))*$",
                        },
                    ),
                    _query(
                        "alert_id",
                        "one alert's events",
                        {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                    ),
                    *_ALERT_FILTERS,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": r"^[0-9]{1,18}$"},
                    },
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
        **_RULE_PATHS,
        "/api/v1/events/ws": {
            "get": {
                "summary": "The feed of changes over a WebSocket: a text message"
                ' {"id": N, "event": {...}} per event, the event stream\'s filters,'
                " `after` to resume; served by the server on its share of streams",
                "security": [{"bearer": []}],
                "parameters": [
                    _query(
                        "after",
                        "resume after this event id",
                        {"type": "string", "pattern": r"^[0-9]{1,18}$"},
                    ),
                    *_ALERT_FILTERS,
                ],
                "responses": {
                    "101": {"description": "Switching protocols: the WebSocket"},
                    **{k: v for k, v in _responses("200", 400, 401, 426).items() if k != "200"},
                    "503": {
                        "description": "The server's share of streams is taken"
                        " (too_many_streams); retry later"
                    },
                },
            }
        },
        "/api/v1/people": {
            "get": {
                "summary": "The people of the configuration: time zone, kinds of contact"
                " method, the schedules they are in",
                "security": [{"bearer": []}],
                "responses": _responses("200", 401),
            }
        },
        "/api/v1/oncall": {
            "get": {
                "summary": "Who is on call in every schedule",
                "security": [{"bearer": []}],
                "parameters": [_query("at", "RFC 3339 (default now)", _AT)],
                "responses": _responses("200", 400, 401),
            }
        },
        "/api/v1/oncall/{schedule}": {
            "get": {
                "summary": "A schedule: its layers and overrides, who is on call, the shifts"
                " of the next days",
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "schedule",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    _query("at", "RFC 3339 (default now)", _AT),
                    _query(
                        "days",
                        "days of shifts from `at` (default 14)",
                        {"type": "integer", "minimum": 1, "maximum": 366},
                    ),
                ],
                "responses": _responses("200", 400, 401, 404),
            }
        },
        "/calendar/{kind}/{name}.ics": {
            "get": {
                "summary": "A schedule's shifts (kind schedules), or a person's across the"
                " schedules (kind people), as iCalendar: for a calendar application by the"
                " signed link /api/v1/oncall/{schedule} and /api/v1/people give, or with a"
                " bearer token",
                "security": [{"bearer": []}, {}],
                "parameters": [
                    {
                        "name": "kind",
                        "in": "path",
                        "required": True,
                        "schema": {"enum": ["schedules", "people"]},
                    },
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    _query("sig", "the link's signature (in place of a token)"),
                    _query(
                        "days",
                        "days of shifts ahead (default 60)",
                        {"type": "integer", "minimum": 1, "maximum": 366},
                    ),
                ],
                "responses": {
                    **_responses("200", 400, 401, 404),
                    "200": {"description": "OK", "content": {"text/calendar": {"schema": {}}}},
                },
            }
        },
        "/api/v1/slack/actions": {
            "post": {
                "summary": "A Slack app's button (ack:ID or resolve:ID), signed with the app's"
                " signing secret (X-Slack-Signature, X-Slack-Request-Timestamp); 404 when no"
                " Slack app is configured",
                "requestBody": {
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "properties": {"payload": {"type": "string"}},
                            }
                        }
                    }
                },
                "responses": _responses("200", 400, 401, 404, 413),
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
        "/api/v1/adapters/{type}/{receiver}": {
            "post": {
                "summary": "Alertmanager's webhook for a receiver of a type Alertmanager 0.25"
                " cannot deliver (msteams: Microsoft Teams, as a card), delivered by the"
                " bridge (502 when the far end fails: Alertmanager retries)",
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "type",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": ADAPTERS},
                    },
                    {
                        "name": "receiver",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "requestBody": {"required": True, "content": {"application/json": {}}},
                "responses": {
                    **_responses("200", 400, 401, 404, 503, "requestBody", "webhook"),
                    "502": {
                        "description": "The far end refused the message or could not be reached",
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
            " its window; the policy goes on from there (409 past the policy's levels)",
            {"by": _BY, "level": {"type": "integer", "minimum": 0, "maximum": MAX_ID}},
            [],
            schema=_ESCALATIONS,
        ),
        "/api/v1/alerts/{id}/escalation/pause": _action(
            "Pause escalation for a duration (`for`: a Prometheus duration longer than 0s and"
            " at most a year, e.g. 30m; default until resumed)",
            {"by": _BY, "for": {"type": "string", "pattern": _PAUSE}},
            [],
            schema=_ESCALATIONS,
        ),
        "/api/v1/alerts/{id}/escalation/resume": _action(
            "Resume a paused escalation: the step it held is taken at once",
            {"by": _BY},
            [],
            schema=_ESCALATIONS,
        ),
    },
}


#: The WebSocket takes the stream's parameters but Last-Event-ID (it has none).
_WS_PARAMETERS.extend(p for p in SPEC["paths"]["/api/v1/events/stream"]["get"]["parameters"]
                      if p["name"] != "Last-Event-ID")  # fmt: skip
