"""The `alertbridge` command line: the group in `common`, one module per command group."""

from bridge.cli import alerts, export, policies, rules, serving
from bridge.cli.common import main, table
from bridge.cli.serving import is_loopback

__all__ = ["alerts", "export", "is_loopback", "main", "policies", "rules", "serving", "table"]
