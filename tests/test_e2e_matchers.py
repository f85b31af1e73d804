"""Our matchers agree with Alertmanager's on the same patterns: the real binary is the judge.

Alerts whose label `v` takes each value of the table are posted to a real Alertmanager; for
every pattern, `GET /api/v2/alerts?filter=v=~"..."` says which values Alertmanager matches
(or answers 400 for a pattern Go rejects), and our Matcher must say the same.
"""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path

import pytest

from bridge.core.errors import InvalidInput
from bridge.core.matchers import Matcher
from tests.support import LOOPBACK, free_port, http_json, running, start_alertmanager, wait_for
from tests.test_matchers import ACCEPTED, REJECTED, VALUES

pytestmark = pytest.mark.e2e

AM_CONFIG = """
route: {receiver: none, group_wait: 1h}
receivers: [{name: none}]
"""


def quoted(pattern: str) -> str:
    """The pattern inside a matcher's double quotes (backslashes and quotes escaped)."""
    return pattern.replace("\\", "\\\\").replace('"', '\\"')


def test_matchers_agree_with_alertmanager(tmp_path: Path) -> None:
    """For each accepted pattern the same values match; each rejected pattern is refused by
    both (Alertmanager 400, ours InvalidInput)."""
    config = tmp_path / "am.yml"
    config.write_text(AM_CONFIG)
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    with running(start_alertmanager(tmp_path, config, port)):
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        alerts = [{"labels": {"alertname": "m", "i": str(i), "v": v}, "startsAt": now}
                  for i, v in enumerate(VALUES)]  # fmt: skip
        assert http_json(f"{base}/api/v2/alerts", alerts)[0] == 200
        wait_for("alerts listed", lambda: len(http_json(f"{base}/api/v2/alerts")[1]) == len(VALUES))
        disagreements = []
        for pattern in ACCEPTED + REJECTED:
            query = urllib.parse.urlencode({"filter": f'v=~"{quoted(pattern)}"'})
            status, body = http_json(f"{base}/api/v2/alerts?{query}")
            try:
                ours = Matcher.parse(f'v=~"{quoted(pattern)}"')
            except InvalidInput:
                ours = None
            if status == 400 or ours is None:
                if not (status == 400 and ours is None):
                    disagreements.append((pattern, f"Alertmanager {status}, ours {ours}"))
                continue
            theirs = {a["labels"].get("v", "") for a in body}  # an empty label is absent
            mine = {v for v in VALUES if ours.matches({"v": v})}
            if theirs != mine:
                disagreements.append(
                    (pattern, f"Alertmanager {sorted(theirs)}, ours {sorted(mine)}")
                )
        assert not disagreements
