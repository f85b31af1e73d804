"""The Python twins of Prometheus's humanizers (cases from prometheus/template/template_test.go)."""

from __future__ import annotations

import math

import pytest

from bridge.core.humanize import humanize, humanize1024, humanize_duration, humanize_percentage


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (1.0, "1"),
        (1234567.0, "1.235M"),
        (0.012345, "12.35m"),
        (-1500.0, "-1.5k"),
        (5.0, "5"),
        (4.95, "4.95"),
        (math.inf, "+Inf"),
        (math.nan, "NaN"),
    ],
)
def test_humanize(value: float, text: str) -> None:
    """SI prefixes with four significant digits."""
    assert humanize(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (1.0, "1"),
        (1048576.0, "1Mi"),
        (2147483648.0, "2Gi"),
        (2168958484.48, "2.02Gi"),
        (1023.0, "1023"),
        (1024.0, "1ki"),
    ],
)
def test_humanize1024(value: float, text: str) -> None:
    """Binary prefixes."""
    assert humanize1024(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0s"),
        (1.0, "1s"),
        (1.01, "1.01s"),
        (60.0, "1m 0s"),
        (3600.0, "1h 0m 0s"),
        (86400.0, "1d 0h 0m 0s"),
        (0.25, "250ms"),
        (0.000123, "123us"),
        (-90.0, "-1m 30s"),
    ],
)
def test_humanize_duration(value: float, text: str) -> None:
    """Durations: d h m s for a minute and more, 4 digits with a sub-second prefix below."""
    assert humanize_duration(value) == text


@pytest.mark.parametrize(("value", "text"), [(0.8, "80%"), (0.0505, "5.05%"), (1.0, "100%")])
def test_humanize_percentage(value: float, text: str) -> None:
    """Ratios as percent."""
    assert humanize_percentage(value) == text
