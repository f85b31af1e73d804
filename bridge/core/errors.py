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


class RequestError(BridgeError):
    """What a caller asked for cannot be done as asked; `code` names why for programs,
    `field` the offending input if one. The HTTP layer gives each subclass its status.

    >>> NotFound("no alert 7").code
    'not_found'
    """

    code = "invalid"

    def __init__(self, message: str, field: str | None = None, code: str | None = None) -> None:
        self.message = message
        self.field = field
        if code is not None:
            self.code = code
        super().__init__(message)


class InvalidInput(RequestError):
    """A parameter or body is malformed and will never become valid as it is."""

    code = "invalid_input"

    def __init__(self, field: str, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{field}: {reason}", field)


class TooLarge(InvalidInput):
    """An input exceeds a size limit."""

    code = "too_large"


class NotFound(RequestError):
    """No such object."""

    code = "not_found"


class Conflict(RequestError):
    """The object's state (or the bridge's configuration) forbids the change."""

    code = "conflict"


class Unprocessable(RequestError):
    """Well-formed input whose values are unacceptable."""

    code = "unprocessable"

    def __init__(self, field: str, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{field}: {reason}", field)


class StoreError(BridgeError):
    """Storage failed (disk, lock, corruption): the caller should retry later."""


class QueryTimeout(BridgeError):
    """A read ran longer than its budget and was aborted; narrower filters may succeed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"the query ran longer than {seconds:g}s and was stopped; narrow it")


class AlertmanagerError(BridgeError):
    """Alertmanager's API could not be reached or refused a request."""
