"""The `alertbridge` command line: the group in `common`, one module per command group."""

from bridge.cli import (
    alerts,
    channels,
    export,
    keys,
    migrate,
    oncall,
    policies,
    report,
    rules,
    serving,
    watch,
)
from bridge.cli.common import main, table
from bridge.cli.serving import is_loopback

__all__ = [
    "alerts",
    "channels",
    "export",
    "is_loopback",
    "keys",
    "main",
    "migrate",
    "oncall",
    "policies",
    "report",
    "rules",
    "serving",
    "table",
    "watch",
]
