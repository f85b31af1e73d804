"""The alert commands on a local database and on a remote bridge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.cli.common import default_actor
from bridge.core.times import NS
from bridge.store.sqlite.store import SqliteStore
from tests.payloads import am_alert, notification
from tests.stores import T0, Sync, received
from tests.support import LOOPBACK, bridge_env, free_port, http_json, running, start_bridge

LONG_AGO = T0 - 3 * 365 * 86400 * NS  # ended years before any run of this suite


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A database with two firing alerts (ids 1, 2) and one resolved (3)."""
    path = tmp_path / "alerts.db"
    store = Sync(SqliteStore(path))
    store.ingest([received(fingerprint="1" * 16), received(fingerprint="2" * 16,
                      alertname="critical_cpu", severity="critical"),
                      received("resolved", starts=LONG_AGO, ends=LONG_AGO + 5,
                               fingerprint="3" * 16)], T0)  # fmt: skip
    store.close()
    return str(path)


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner(env=env).invoke(main, list(args))


def test_list_table_and_json(db: str) -> None:
    """alerts prints a table with state and summary; -o json the API's shape."""
    table = cli("alerts", "--db", db, "--status", "firing")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split()[:4] == ["ID", "STATE", "SEVERITY", "ALERTNAME"]
    assert [line.split()[0] for line in lines[1:]] == ["2", "1"]
    data = json.loads(cli("alerts", "--db", db, "-o", "json", "--severity", "critical").output)
    assert [a["alertname"] for a in data["alerts"]] == ["critical_cpu"]


def test_ack_note_assign_unack_show(db: str) -> None:
    """Actions on a local database, visible in show's audit trail."""
    assert cli("ack", "1", "--db", db, "--by", "alice", "-c", "on it").exit_code == 0
    row = next(r for r in cli("alerts", "--db", db).output.splitlines() if r.startswith("1 "))
    assert row.split()[1:2] + row.split()[7:9] == ["acknowledged", "alice", "pending"]
    assert cli("note", "1", "fan replaced", "--db", db, "--by", "bob").output.startswith("note ")
    assert cli("assign", "1", "carol", "--db", db, "--by", "bob").exit_code == 0
    assert cli("unack", "1", "--db", db, "--by", "alice").exit_code == 0
    shown = cli("show", "1", "--db", db)
    trail = [line.split()[2:5] for line in shown.output.split("events:")[1].splitlines()[1:]]
    assert trail == [["fired", "by", "alertmanager"], ["acknowledged", "by", "alice:"],
                     ["note", "by", "bob:"], ["assigned", "by", "bob:"],
                     ["unacknowledged", "by", "alice"]]  # fmt: skip
    acked = cli("alerts", "--db", db, "--ack", "2", "-o", "json")
    assert json.loads(acked.output)["acknowledged"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ack", "99"], "no alert with id 99"),
        (["ack", "3"], "alert 3 is resolved"),
        (["unack", "1"], "alert 1 is not acknowledged"),
        (["note", "1", " "], "text: must be a non-empty string"),
        (["alerts", "--since", "last week"], "since: must be RFC 3339"),
        (["alerts", "--filter", "team~x"], "not a label matcher"),
    ],
)
def test_errors_are_one_line_and_exit_1(db: str, args: list[str], message: str) -> None:
    """Unknown ids, wrong states and bad filters: a clear message, exit 1, no traceback."""
    result = cli(*args, "--db", db)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_database_is_explained(tmp_path: Path) -> None:
    """Pointing at a database that does not exist does not create an empty one."""
    result = cli("alerts", "--db", str(tmp_path / "nope.db"))
    assert result.exit_code == 1
    assert "no alert database at" in result.output
    assert not (tmp_path / "nope.db").exists()


def test_retention_show_set_prune(db: str) -> None:
    """retention shows the default, persists a new value and prunes on demand."""
    assert "retention: 90 days" in cli("retention", "--db", db).output
    assert "retention: 7 days" in cli("retention", "--db", db, "--days", "7").output
    assert "retention: 7 days" in cli("retention", "--db", db).output
    pruned = cli("retention", "--db", db, "--prune")
    assert "pruned 1 resolved alert(s)" in pruned.output
    assert cli("retention", "--db", db, "--days", "0").exit_code == 2


@pytest.mark.e2e
def test_remote_commands_against_a_live_bridge(tmp_path: Path) -> None:
    """--url works the same as --db, through the REST API with the token from the env."""
    port = free_port()
    env = bridge_env(ALERTBRIDGE_API_TOKEN="api", ALERTBRIDGE_WEBHOOK_TOKEN="hook")
    with running(start_bridge(tmp_path, port, env)):
        base = f"http://{LOOPBACK}:{port}"
        status, _ = http_json(f"{base}/api/v1/alertmanager", notification(am_alert()), "hook")
        assert status == 200
        token_env = {"ALERTBRIDGE_API_TOKEN": "api"}
        listed = cli("alerts", "--url", base, "-o", "json", env=token_env)
        assert [a["id"] for a in json.loads(listed.output)["alerts"]] == [1]
        acked = cli("ack", "1", "--url", base, "--by", "alice", env=token_env)
        assert acked.exit_code == 0, acked.output
        again = cli("ack", "1", "--url", base, "--by", "bob", env=token_env)
        assert again.exit_code == 1
        assert "already acknowledged by alice" in again.output
        # No --by with the shared token: the server lets the caller name itself, and the
        # CLI names the OS user, as --db records.
        noted = cli("note", "1", "looking", "--url", base, env=token_env)
        assert noted.exit_code == 0, noted.output
        shown = json.loads(cli("show", "1", "--url", base, "-o", "json", env=token_env).output)
        assert shown["events"][-1]["actor"] == default_actor()
        denied = cli("alerts", "--url", base, env={"ALERTBRIDGE_API_TOKEN": "wrong"})
        assert denied.exit_code == 1
        assert "missing or invalid bearer token" in denied.output
        status_out = cli("status", "--url", base, env=token_env)
        assert "alerts: firing 0, acknowledged 1, resolved 0" in status_out.output
    unreachable = cli("alerts", "--url", base, env=token_env)
    assert unreachable.exit_code == 1
    assert f"cannot reach {base}" in unreachable.output


def test_resolve_by_hand(db: str) -> None:
    """resolve ID -c WHY: resolved with the actor and comment in the trail; again is 409-ish
    (exit 1, one line); the table says how it ended."""
    result = cli("resolve", "1", "--db", db, "--by", "ann", "-c", "false alarm")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split()[1:3] == ["resolved", "(by"]
    again = cli("resolve", "1", "--db", db)
    assert again.exit_code == 1
    assert again.output == "alertbridge: error: alert 1 is already resolved\n"
    trail = cli("show", "1", "--db", db).output.split("events:")[1]
    assert "resolved by ann: false alarm" in trail


def test_attention_first_by_default_and_newest_on_request(db: str) -> None:
    """The default listing shows what needs someone first: unacknowledged and not muted by
    Alertmanager, critical first; acknowledged after; resolved last. --sort newest is by id."""
    store = Sync(SqliteStore(db))
    store.set_am_states([(2, "suppressed", [], [("1" * 16, 1)])])
    store.ingest([received(fingerprint="4" * 16, severity="critical")], T0)
    store.acknowledge(4, "alice", "", T0)
    store.close()
    listed = cli("alerts", "--db", db, "-o", "json")
    assert [a["id"] for a in json.loads(listed.output)["alerts"]] == [1, 2, 4, 3]
    newest = cli("alerts", "--db", db, "-o", "json", "--sort", "newest")
    assert [a["id"] for a in json.loads(newest.output)["alerts"]] == [4, 3, 2, 1]
    table = cli("alerts", "--db", db).output.splitlines()
    assert table[2].startswith("2   firing, inhibited by #1")
    suppressed = cli("alerts", "--db", db, "--am-state", "suppressed", "-o", "json")
    assert [a["id"] for a in json.loads(suppressed.output)["alerts"]] == [2]
    active = cli("alerts", "--db", db, "--am-state", "active", "-o", "json")
    assert [a["id"] for a in json.loads(active.output)["alerts"]] == [1, 4]


def test_attention_pages_follow_each_other(db: str) -> None:
    """Page by page in attention order: every alert once, in the same order as one page."""
    store = Sync(SqliteStore(db))
    store.ingest([received(fingerprint=f"{n:016x}", severity=["info", "critical"][n % 2])
                      for n in range(10, 30)], T0)  # fmt: skip
    store.close()
    whole = json.loads(cli("alerts", "--db", db, "-o", "json", "--limit", "100").output)
    seen, cursor = [], None
    for _ in range(30):
        args = ["alerts", "--db", db, "-o", "json", "--limit", "3"]
        page = json.loads(cli(*args, *(["--cursor", cursor] if cursor else [])).output)
        seen += [a["id"] for a in page["alerts"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [a["id"] for a in whole["alerts"]]
    assert len(seen) == 23


def test_no_alertmanager_no_pending_silence(db: str) -> None:
    """When the server runs with no Alertmanager, an ack makes no silence work and the
    SILENCE column says why."""
    store = Sync(SqliteStore(db))
    store.record_alertmanagers([])
    store.close()
    acked = json.loads(cli("ack", "1", "--db", db, "-o", "json").output)
    assert acked["silence_state"] == "none"
    row = next(r for r in cli("alerts", "--db", db).output.splitlines() if r.startswith("1 "))
    assert "none: no Alertmanager configured" in row
