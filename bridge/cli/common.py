"""The command group, shared options and helpers of the `alertbridge` CLI."""

from __future__ import annotations

import functools
import getpass
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import click

from bridge import __version__
from bridge.config import Settings, load_settings
from bridge.core.errors import BridgeError, InvalidInput
from bridge.core.logutil import RepeatFilter
from bridge.store.query import MAX_ID, parse_int

F = TypeVar("F", bound=Callable[..., Any])


def fail_cleanly(func: F) -> F:
    """Turn domain errors into one line on stderr and exit status 1; never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BridgeError as exc:
            click.echo(f"alertbridge: error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table, as amtool prints."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def settings_of(ctx: click.Context) -> Settings:
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings(obj.get("config"))
    settings: Settings = obj["settings"]
    return settings


class Whole(click.ParamType[int]):
    """A whole number in ASCII digits within low..high (click's int takes any Unicode digit:
    `ack \u0661` would acknowledge alert 1)."""

    name = "integer"

    def __init__(self, low: int = 0, high: int = MAX_ID) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        try:
            return parse_int(str(value), param.name if param and param.name else "value",
                             self.low, self.high)  # fmt: skip
        except InvalidInput as exc:
            self.fail(exc.message.partition(": ")[2], param, ctx)


ALERT_ID = Whole(1, MAX_ID)


def _quiet_stdout() -> None:
    """Point standard output at /dev/null, so that what is left in its buffer cannot fail a
    second time when the interpreter exits (a traceback after our one line)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no standard output to speak of
        pass


def error(message: str, code: int) -> NoReturn:
    """The one error form of the CLI: `alertbridge: error: ...` on stderr, then exit."""
    click.echo(f"alertbridge: error: {message}", err=True)
    sys.exit(code)


class BridgeGroup(click.Group):
    """The command group, printing every error in one form with documented exit codes:
    1 for runtime errors, 2 for usage errors (click's own included), 130 on Ctrl-C."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        kwargs["prog_name"] = "alertbridge"  # also as python -m bridge, in help and errors
        try:
            code = super().main(*args, **kwargs)
        except click.UsageError as exc:
            path = exc.ctx.command_path if exc.ctx is not None else "alertbridge"
            error(f"{exc.format_message()} (see '{path} --help')", 2)
        except click.ClickException as exc:
            error(exc.format_message(), exc.exit_code)
        except BridgeError as exc:
            error(str(exc), 1)
        except click.Abort:
            click.echo("alertbridge: interrupted", err=True)
            sys.exit(130)
        except OSError as exc:  # the output's disk full, an I/O error (click itself ends a
            # broken pipe: exit 1, nothing said, as a reader that closed early expects)
            _quiet_stdout()
            reason = (exc.strerror or str(exc)).lower()
            where = f" ({exc.filename})" if exc.filename else ""
            error(f"cannot go on: {reason}{where}", 1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=BridgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="alertbridge")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="ALERTBRIDGE_CONFIG",
    help="YAML configuration file (env ALERTBRIDGE_CONFIG).",
)
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """alertbridge: telemetry to Prometheus + Alertmanager, alerts back to durable storage."""
    ctx.ensure_object(dict)["config"] = config


def configure_logging(level: str) -> None:
    """Log to stderr at `level`; a message repeated in a flood shows once per 10 s, counted."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RepeatFilter())


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no USER/LOGNAME in a container
        return "cli"


def short_time(text: str | None) -> str:
    return "-" if text is None else text[:19].replace("T", " ")


def filter_params(status: str | None, severity: Sequence[str], rule: str | None,
                  filters: Sequence[str], acknowledged: bool | None,
                  **more: str | None) -> dict[str, list[str]]:  # fmt: skip
    """The alert list's filters as query parameters (GET /api/v1/alerts, the event stream)."""
    params = {k: [v] for k, v in {"status": status, "rule": rule, **more}.items() if v}
    if severity:
        params["severity"] = list(severity)
    if filters:
        params["filter"] = list(filters)
    if acknowledged is not None:
        params["acknowledged"] = [str(acknowledged).lower()]
    return params
