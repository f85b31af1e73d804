"""Logging of background failures: an outage of storage is one line, a bug a traceback."""

from __future__ import annotations

import logging

import pytest

from bridge.core.errors import StoreError
from bridge.core.logutil import log_failure


def test_a_storage_outage_is_one_line_and_a_bug_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """log_failure: StoreError (the database down) is a warning without traceback; anything
    else an error with it."""
    log = logging.getLogger("test.failure")
    with caplog.at_level(logging.WARNING, "test.failure"):
        log_failure(log, StoreError("connection refused"), "job %s failed", "x")
        try:
            raise KeyError("bug")
        except KeyError as exc:
            log_failure(log, exc, "job %s failed", "y")
    outage, bug = caplog.records
    assert (outage.levelname, outage.getMessage(), outage.exc_info) == (
        "WARNING", "job x failed: storage unavailable: connection refused", None)  # fmt: skip
    assert bug.levelname == "ERROR"
    assert bug.exc_info is not None
