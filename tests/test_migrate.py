"""`alertbridge migrate`: a SQLite store copied into PostgreSQL row for row (ids kept), again
without changing anything, the target then writing on after the copied ids; a target holding
other alerts under the same ids is refused before any event lands on the wrong alert; bad
arguments are usage errors naming the option."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from bridge.cli.migrate import copy
from bridge.core.policies import Policy, Step
from bridge.core.times import NS
from bridge.store import AlertQuery, AlertStore, Escalation
from bridge.store.postgres.store import PostgresStore
from bridge.store.rows import TABLES
from bridge.store.sqlite.queries import text_candidates
from bridge.store.sqlite.store import SqliteStore
from tests.pg import Cluster
from tests.stores import T0, received


async def everything(store: AlertStore) -> dict[str, list[tuple[object, ...]]]:
    return {table: await store.dump(table, None, 100_000) for table in TABLES}


async def filled(path: Path) -> SqliteStore:
    store = SqliteStore(path)
    await store.start()
    await store.ingest([received(fingerprint=f"{n:016x}", team="db") for n in range(30)], T0)
    await store.ingest([received("resolved", T0, T0 + NS, f"{3:016x}")], T0 + NS)
    await store.acknowledge(1, "alice", "looking", T0 + 2 * NS)
    await store.add_note(2, "bob", "<b>not markup</b>", T0 + 3 * NS)
    await store.assign(2, "bob", "carol", T0 + 4 * NS)
    await store.set_retention_days(30)
    await store.save_cursor("notify", 5)
    policy = Policy("page", (Step("notify", ("ops",)),), repeat=0, ack_timeout=600)
    esc = Escalation(alert_id=4, policy=policy, urgency="high", state="running", position=0,
                     repeats=0, round=1, due_at=T0, level=-1, copies=(), reposted_at=None,
                     version=0, updated_at=T0)  # fmt: skip
    await store.add_escalations([esc], ["started"], T0)
    return store


async def test_a_copy_is_row_for_row_and_again_changes_nothing(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    source = await filled(tmp_path / "a.db")
    target = PostgresStore(pg_cluster.new_database(), password_file=pg_cluster.password_file)
    await target.start()
    try:
        done = await copy(source, target, page=7)  # several pages a table
        assert done["alerts"] == (30, 30)
        assert done["events"][0] == done["events"][1] > 30
        assert await everything(target) == await everything(source)
        again = await copy(source, target, page=7)
        assert all(new == 0 for _, new in again.values())
        assert await everything(target) == await everything(source)
        # the target goes on after the copied ids
        result = await target.ingest([received(fingerprint="f" * 16)], T0 + 9 * NS)
        assert result.fired == [31]
        assert (await target.get_alert(1)).acked_by == "alice"
        assert [a.id for a in await target.list_alerts(AlertQuery(text="not markup"))] == [2]
        # And back into a new SQLite store: counted by the rows copied (not by what the
        # free-text index's triggers write beside them), and found through that index.
        back = SqliteStore(tmp_path / "back.db")
        await back.start()
        try:
            done = await copy(target, back, page=7)
            assert done["alerts"] == (31, 31)
            assert done["events"][0] == done["events"][1]
            resolved = await back._read(lambda c: text_candidates(c, f"resolved at {T0 + NS}"))
            assert resolved == [4]
        finally:
            await back.close()
    finally:
        await target.close()
        await source.close()


def _migrate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", "migrate", *args], capture_output=True,
                          text=True, timeout=120, env=env, check=False)  # fmt: skip


async def test_the_command_copies_and_refuses_a_target_with_other_alerts(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    source = await filled(tmp_path / "a.db")
    await source.close()
    env = {**os.environ, "ALERTBRIDGE_STORE_PASSWORD_FILE": str(pg_cluster.password_file)}
    url = pg_cluster.new_database()
    done = _migrate("--from", f"sqlite:{tmp_path / 'a.db'}", "--to", url, env=env)
    assert done.returncode == 0, done.stderr
    assert "alerts: 30 in the source, all in the target (30 copied now, 0 there already)" in (
        done.stdout
    )
    # Another database where a bridge already stored an alert under id 1: refused, and no
    # event of the source's alert 1 lands on it.
    other = pg_cluster.new_database()
    bridge = PostgresStore(other, password_file=pg_cluster.password_file)
    await bridge.start()
    await bridge.ingest([received(fingerprint="e" * 16)], T0)
    await bridge.close()
    refused = _migrate("--from", f"sqlite:{tmp_path / 'a.db'}", "--to", other, env=env)
    assert refused.returncode == 1
    assert "alerts:" in refused.stderr
    assert "empty database" in refused.stderr
    assert "Traceback" not in refused.stderr
    bridge = PostgresStore(other, password_file=pg_cluster.password_file)
    await bridge.start()
    try:
        assert [e.kind for e in await bridge.events(1)] == ["fired"]
    finally:
        await bridge.close()


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    missing = _migrate("--from", f"sqlite:{tmp_path / 'none.db'}", "--to", "postgresql://a@b/c")
    assert missing.returncode == 2
    assert "no such database file" in missing.stderr
    secret = _migrate("--from", "sqlite:x.db", "--to", "postgresql://u:hunter2@127.0.0.1/db")
    assert secret.returncode == 2
    assert "no password in the URL" in secret.stderr
    assert "hunter2" not in secret.stderr


def test_the_cli_works_on_a_postgresql_store(pg_cluster: Cluster, tmp_path: Path) -> None:
    """Each CLI call runs its own event loop: the store connects again on each (the first
    version's pool belonged to the loop that made it: a second call failed or hung)."""
    env = {**os.environ, "ALERTBRIDGE_STORE_PASSWORD_FILE": str(pg_cluster.password_file)}
    url = pg_cluster.new_database()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bridge", *args, "--db", url],
                              capture_output=True, text=True, timeout=60, env=env,
                              check=False)  # fmt: skip

    store = PostgresStore(url, password_file=pg_cluster.password_file)

    async def fill() -> None:
        await store.start()
        await store.ingest([received(fingerprint=f"{n:016x}") for n in range(3)], T0)
        await store.close()

    asyncio.run(fill())
    listed = cli("alerts")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.strip().splitlines()) == 4  # a header and three alerts
    acked = cli("ack", "2", "--by", "alice")
    assert acked.returncode == 0, acked.stderr
    again = cli("alerts", "--acknowledged")
    assert again.returncode == 0, again.stderr
    assert "alice" in again.stdout
    out = tmp_path / "alerts.csv"
    exported = subprocess.run([sys.executable, "-m", "bridge", "export", "--db", url, "--format",
                               "csv", "--output", str(out)], capture_output=True, text=True,
                              timeout=60, env=env, check=False)  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert len(out.read_text().splitlines()) == 4
    no_password = {k: v for k, v in env.items() if k != "ALERTBRIDGE_STORE_PASSWORD_FILE"}
    refused = subprocess.run([sys.executable, "-m", "bridge", "alerts", "--db", url],
                             capture_output=True, text=True, timeout=60, env=no_password,
                             check=False)  # fmt: skip
    assert refused.returncode == 1
    assert "password authentication failed" in refused.stderr
    assert "Traceback" not in refused.stderr
