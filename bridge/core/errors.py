"""Domain errors: one root, a few documented subclasses carrying the fields a caller needs."""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every error alertbridge raises on purpose."""


class RuleError(BridgeError):
    """A rule is invalid. `rule` names it, `field` names the offending field.

    >>> str(RuleError("high_cpu", "threshold", "must be finite"))
    'rule high_cpu: threshold: must be finite'
    """

    def __init__(self, rule: str, field: str, reason: str, source: str | None = None) -> None:
        self.rule = rule
        self.field = field
        self.reason = reason
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}rule {rule}: {field}: {reason}")


class ConfigError(BridgeError):
    """The configuration is invalid. `source` is the file (or env var), `key` the setting."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        super().__init__(f"{source}: {key}: {reason}")


class ToolError(BridgeError):
    """An external tool (promtool, amtool) is missing or reported a failure."""

    def __init__(self, tool: str, reason: str) -> None:
        self.tool = tool
        self.reason = reason
        super().__init__(f"{tool}: {reason}")


class ApiError(BridgeError):
    """An error a client caused or must know about; the app turns it into JSON with `status`.

    >>> ApiError(404, "not_found", "no alert 7").status
    404
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        super().__init__(message)


class InvalidInput(ApiError):
    """The request body or a parameter is invalid and will never become valid (HTTP 400)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(400, "invalid_input", f"{field}: {reason}", field)


class NotFound(ApiError):
    """No such object (HTTP 404)."""

    def __init__(self, message: str) -> None:
        super().__init__(404, "not_found", message)


class Conflict(ApiError):
    """The object's state forbids the change (HTTP 409)."""

    def __init__(self, message: str) -> None:
        super().__init__(409, "conflict", message)


class Unprocessable(ApiError):
    """Well-formed JSON whose values are unacceptable (HTTP 422)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(422, "unprocessable", f"{field}: {reason}", field)


class StoreError(BridgeError):
    """Storage failed (disk, lock, corruption): the caller should retry later (HTTP 503)."""


class QueryTimeout(BridgeError):
    """A read ran longer than its budget and was aborted; narrower filters may succeed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"the query ran longer than {seconds:g}s and was stopped; narrow it")


class AlertmanagerError(BridgeError):
    """Alertmanager's API could not be reached or refused a request."""
