"""`alertbridge watch`: on a local database, and against a live bridge that is restarted under
it (the watcher connects again with Last-Event-ID and prints exactly what it missed)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.cli.watch import line_of, sse_messages
from bridge.store.sqlite.store import SqliteStore
from tests.payloads import am_alert, notification
from tests.stores import T0, Sync, received
from tests.support import LOOPBACK, bridge_env, free_port, http_json, running, start_bridge


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner(env=env).invoke(main, list(args))


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "alerts.db"
    store = Sync(SqliteStore(path))
    store.ingest([received(fingerprint="1" * 16), received(fingerprint="2" * 16,
                  alertname="critical_cpu", severity="critical")], T0)  # fmt: skip
    store.acknowledge(2, "alice", "mine", T0 + 1)
    store.close()
    return str(path)


def test_local_history_filtered_in_order(db: str) -> None:
    out = cli("watch", "--db", db, "--after", "0", "--count", "3", "-o", "json")
    assert out.exit_code == 0, out.output
    events = [json.loads(line) for line in out.output.splitlines()]
    assert [(e["alert_id"], e["kind"]) for e in events] == [
        (1, "fired"), (2, "fired"), (2, "acknowledged")]  # fmt: skip
    critical = cli("watch", "--db", db, "--after", "0", "--count", "2", "--severity", "critical")
    lines = critical.output.splitlines()
    assert len(lines) == 2
    assert "critical_cpu/critical" in lines[0]
    assert "fired" in lines[0]
    assert "acknowledged" in lines[1]
    assert "alice" in lines[1]
    assert "mine" in lines[1]
    acks = cli("watch", "--db", db, "--after", "0", "--count", "1", "--kind", "acknowledged")
    assert "#2" in acks.output


def test_mistakes(db: str, tmp_path: Path) -> None:
    missing = cli("watch", "--db", str(tmp_path / "nope.db"))
    assert missing.exit_code == 1
    assert "no alert database" in missing.output
    bad = cli("watch", "--db", db, "--filter", 'team=~"("')
    assert bad.exit_code == 1
    assert "bad regular expression" in bad.output
    assert cli("watch", "--db", db, "--after", "-3").exit_code == 2
    for target in (["--db", db], ["--url", "http://127.0.0.1:9"]):  # no server there
        kind = cli("watch", *target, "--kind", "fired,bogus")
        assert kind.exit_code == 1, kind.output
        assert "unknown event kind 'bogus'" in kind.output
    url = cli("watch", "--url", "ftp://x")
    assert url.exit_code == 1
    assert "--url must be http://" in url.output


def test_sse_parsing_and_lines() -> None:
    stream = [b"retry: 2000\n", b"\n", b": keepalive\n", b"\n", b"id: 7\n",
              b'data: {"id": 7}\n', b"\n", b"id:8\n", b'data:{"id": 8}\n', b"\n"]  # fmt: skip
    assert list(sse_messages(iter(stream))) == [(7, {"id": 7}), (8, {"id": 8})]
    line = line_of({"at": "2026-12-01T10:00:00Z", "alert_id": 3, "kind": "note", "actor": "al",
                    "detail": "two\nlines", "alert": None})  # fmt: skip
    assert (
        line == "2026-12-01 10:00:00  #3      (pruned)                     note             al"
        "             two lines"
    )


class Lines:
    """A child's standard output a line at a time, each wait bounded (a reader thread: a
    select on the pipe misses lines already in the file object's buffer)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.lines: queue.Queue[str] = queue.Queue()
        stream = proc.stdout

        def pump() -> None:
            for line in stream:
                self.lines.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def next(self, timeout: float = 20.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no line from watch in time") from None


@pytest.mark.e2e
def test_a_watcher_survives_a_restart_of_the_bridge_and_misses_nothing(tmp_path: Path) -> None:
    port = free_port()
    env = bridge_env(ALERTBRIDGE_API_TOKEN="api", ALERTBRIDGE_WEBHOOK_TOKEN="hook")
    base = f"http://{LOOPBACK}:{port}"
    watcher: subprocess.Popen[str] | None = None
    errors = tmp_path / "watch.err"
    errors_out = errors.open("w")
    try:
        with running(start_bridge(tmp_path, port, env)):
            status, _ = http_json(f"{base}/api/v1/alertmanager", notification(am_alert()), "hook")
            assert status == 200
            watcher = subprocess.Popen(
                [sys.executable, "-m", "bridge", "watch", "--url", base, "--after", "0",
                 "--count", "5", "-o", "json"],
                stdout=subprocess.PIPE, stderr=errors_out, text=True,
                env=bridge_env(ALERTBRIDGE_API_TOKEN="api"),
            )  # fmt: skip
            lines = Lines(watcher)
            first = json.loads(lines.next())
            assert (first["alert_id"], first["kind"]) == (1, "fired")
            assert http_json(f"{base}/api/v1/alerts/1/ack", {"by": "alice"}, "api")[0] == 200
            second = json.loads(lines.next())
            assert second["kind"] == "acknowledged"
        # the bridge is down: two notes straight into its database
        for text in ("while down 1", "while down 2"):
            noted = cli("note", "1", text, "--by", "bob", "--db", str(tmp_path / "bridge.db"))
            assert noted.exit_code == 0, noted.output
        with running(start_bridge(tmp_path, port, env)):
            after = [json.loads(lines.next()) for _ in range(2)]
            assert [e["detail"] for e in after] == ["while down 1", "while down 2"]
            assert http_json(f"{base}/api/v1/alerts/1/notes", {"by": "carol", "text": "back"},
                             "api")[0] == 201  # fmt: skip
            last = json.loads(lines.next())
            assert last["detail"] == "back"
            assert watcher.wait(20) == 0  # --count 5 reached
        ids = [e["id"] for e in [first, second, *after, last]]
        assert ids == sorted(set(ids))  # in order, none twice, none skipped
        assert len(ids) == 5
        assert "connecting again" in errors.read_text()
    except BaseException:
        sys.stderr.write(f"--- watch stderr ---\n{errors.read_text()}\n")
        raise
    finally:
        if watcher is not None:
            if watcher.poll() is None:
                watcher.kill()
            watcher.wait(10)
            assert watcher.stdout is not None
            watcher.stdout.close()
        errors_out.close()
