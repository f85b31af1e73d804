"""Python twins of Prometheus's template humanizers, so generated tests can predict annotations.

Each mirrors the Go function of the same name in prometheus/template/template.go (2.42); the
promtool unit tests generated with them are what proves they agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def _g4(value: float) -> str:
    """Go's %.4g."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.4g}"


def humanize(value: float) -> str:
    """SI prefixes: 1234 -> '1.234k', 0.005 -> '5m'."""
    if value == 0 or math.isnan(value) or math.isinf(value):
        return _g4(value)
    prefix = ""
    if abs(value) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(value) < 1000:
                break
            prefix = p
            value /= 1000
        return f"{_g4(value)}{prefix}"
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(value) >= 1:
            break
        prefix = p
        value *= 1000
    return f"{_g4(value)}{prefix}"


def humanize1024(value: float) -> str:
    """Binary prefixes: 2147483648 -> '2Gi'."""
    if abs(value) <= 1 or math.isnan(value) or math.isinf(value):
        return _g4(value)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(value) < 1024:
            break
        prefix = p
        value /= 1024
    return f"{_g4(value)}{prefix}"


def humanize_percentage(value: float) -> str:
    """0.8 -> '80%'."""
    return f"{_g4(value * 100)}%"


def humanize_duration(value: float) -> str:
    """Seconds as a duration: 1.5 -> '1.5s', 90 -> '1m 30s', 0.25 -> '250ms'."""
    if math.isnan(value) or math.isinf(value):
        return _g4(value)
    if value == 0:
        return f"{_g4(value)}s"
    if abs(value) >= 1:
        sign = "-" if value < 0 else ""
        value = abs(value)
        whole = int(value)
        seconds, minutes = whole % 60, (whole // 60) % 60
        hours, days = (whole // 3600) % 24, whole // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_g4(value)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(value) >= 1:
            break
        prefix = p
        value *= 1000
    return f"{_g4(value)}{prefix}s"


HUMANIZERS: dict[str, Callable[[float], str]] = {
    "humanize": humanize,
    "humanize1024": humanize1024,
    "humanizePercentage": humanize_percentage,
    "humanizeDuration": humanize_duration,
}
