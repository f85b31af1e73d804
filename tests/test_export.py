"""Alert export: round trips per format, anonymisation leaves no sensitive value, atomicity."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from bridge.actions import acknowledge, assign
from bridge.cli import main
from bridge.columnar import Transformer, read_batches
from bridge.episodes import ingest
from bridge.errors import BridgeError, Conflict, StoreError
from bridge.export import Anonymizer, export_alerts, export_key, known_people, row_record
from bridge.store import COLUMNS, NS, Store
from bridge.webhook import ReceivedAlert

T0 = 1_795_428_000 * NS
SECRETS = ["db-payments-7.internal:9100", "team-ledger", "alice.smith", "bob.jones"]


def alert(i: int, status: str = "firing", **labels: str) -> ReceivedAlert:
    instance = f"db-payments-{i}.internal:9100"
    all_labels = {"alertname": "high_cpu", "severity": "warning", "job": "app",
                  "instance": instance, "team": "team-ledger", **labels}  # fmt: skip
    instance = all_labels["instance"]
    return ReceivedAlert(
        fingerprint=f"{i:016x}",
        status=status,
        starts_at=T0 + i * NS,
        ends_at=T0 + (i + 90) * NS if status == "resolved" else None,
        labels=dict(sorted(all_labels.items())),
        annotations={"summary": f"CPU high on {instance}", "description": "team-ledger pager"},
        generator_url=f"http://prom/graph?instance={instance}",
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "alerts.db")
    s.run(ingest([alert(i) for i in range(1, 6)] + [alert(7, "resolved")], T0))
    s.run(acknowledge(7 - 6, "alice.smith", "bob.jones is on it", T0 + 61 * NS))
    s.run(assign(2, "alice.smith", "bob.jones", T0 + 62 * NS))
    yield s
    s.close()


def read_back(path: Path, fmt: str) -> list[dict[str, Any]]:
    maps = ("labels", "annotations")
    if fmt == "parquet":
        rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
        for row in rows:
            for name in maps:
                if name in row:
                    row[name] = dict(row[name])
        return rows
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as handle:
            out = list(csv.DictReader(handle))
        for row in out:
            for name in maps:
                if name in row:
                    row[name] = json.loads(row[name])
        return out
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_round_trip(store: Store, tmp_path: Path, fmt: str) -> None:
    """Every alert comes back with its labels, ack and durations (anonymisation off)."""
    out = tmp_path / f"alerts.{fmt}"
    result = export_alerts(store, out, fmt, anonymizer=None)
    assert (result.records, result.format, result.path) == (6, fmt, out)
    assert result.bytes == out.stat().st_size > 0
    rows = read_back(out, fmt)
    assert [int(r["id"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    first = rows[0]
    assert first["labels"]["instance"] == "db-payments-1.internal:9100"
    assert first["acked_by"] == "alice.smith"
    assert float(first["time_to_ack_seconds"]) == 60.0
    resolved = rows[5]
    assert resolved["status"] == "resolved"
    assert float(resolved["time_to_resolve_seconds"]) == 90.0
    assert rows[1]["assignee"] == "bob.jones"


def test_parquet_schema_is_typed(store: Store, tmp_path: Path) -> None:
    """Timestamps are UTC timestamps, labels a map<string,string>."""
    out = tmp_path / "a.parquet"
    export_alerts(store, out, "parquet", anonymizer=None)
    schema = pq.read_schema(out)
    assert str(schema.field("starts_at").type) == "timestamp[ns, tz=UTC]"
    labels = schema.field("labels").type
    assert (str(labels.key_type), str(labels.item_type)) == ("string", "string")
    assert str(schema.field("time_to_ack_seconds").type) == "double"


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_anonymised_output_holds_no_sensitive_value(store: Store, tmp_path: Path, fmt: str) -> None:
    """No instance, team, person, or fingerprint survives in the bytes or the decoded values."""
    out = tmp_path / f"anon.{fmt}"
    anonymizer = Anonymizer(b"test-key", people=known_people(store))
    assert anonymizer.people == {"alice.smith", "bob.jones"}
    export_alerts(store, out, fmt, anonymizer=anonymizer)
    decoded = json.dumps(read_back(out, fmt), default=str)
    raw = out.read_bytes()
    for secret in [*SECRETS, "db-payments-", "0000000000000001"]:
        assert secret not in decoded
        assert secret.encode() not in raw
    row = read_back(out, fmt)[0]
    assert row["labels"]["alertname"] == "high_cpu"  # allowlisted values stay
    assert row["labels"]["severity"] == "warning"
    assert row["labels"]["instance"].startswith("anon-")
    assert row["annotations"]["summary"] == f"CPU high on {row['labels']['instance']}"


def test_pseudonyms_are_stable_per_key(store: Store, tmp_path: Path) -> None:
    """The same key gives the same pseudonyms (joinable exports); another key does not."""

    def instance(key: bytes, name: str) -> str:
        out = tmp_path / name
        export_alerts(store, out, "json", anonymizer=Anonymizer(key))
        return str(read_back(out, "json")[0]["labels"]["instance"])

    assert instance(b"k1", "a.json") == instance(b"k1", "b.json") != instance(b"k2", "c.json")


def test_generated_key_is_kept_in_the_database(store: Store) -> None:
    """Without ALERTBRIDGE_EXPORT_KEY one key is generated once and reused."""
    first, second = export_key(store, {}), export_key(store, {})
    assert first == second
    assert len(first) == 32
    assert export_key(store, {"ALERTBRIDGE_EXPORT_KEY": "given"}) == b"given"


def test_batches_keep_memory_flat_and_order(store: Store, tmp_path: Path) -> None:
    """Keyset batches of 2 export every alert once, in order; progress sees each batch."""
    seen: list[int] = []
    out = tmp_path / "b.json"
    result = export_alerts(store, out, "json", anonymizer=None, batch=2, progress=seen.append)
    assert seen == [2, 2, 2]
    assert result.records == 6
    assert [r["id"] for r in read_back(out, "json")] == [1, 2, 3, 4, 5, 6]


def test_since_until(store: Store, tmp_path: Path) -> None:
    """Only alerts that started in [since, until) are exported."""
    out = tmp_path / "w.json"
    result = export_alerts(store, out, "json", anonymizer=None, since=T0 + 2 * NS,
                           until=T0 + 5 * NS)  # fmt: skip
    assert result.records == 3


def test_failure_leaves_no_file_and_keeps_the_old_one(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export that fails half-way leaves the previous file intact and no temporary file."""
    out = tmp_path / "keep.json"
    out.write_text("previous export\n")
    calls = {"n": 0}

    anonymizer = Anonymizer(b"k")
    real = anonymizer.record

    def boom(record: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] > 3:  # the second batch: the first one is already in the file
            raise RuntimeError("disk on fire")
        return real(record)

    monkeypatch.setattr(anonymizer, "record", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_alerts(store, out, "json", anonymizer=anonymizer, batch=2)
    assert out.read_text() == "previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alerts.db", "alerts.db-shm",
                                                          "alerts.db-wal", "keep.json"]  # fmt: skip


def test_unwritable_destination_is_a_clear_error(store: Store, tmp_path: Path) -> None:
    """A missing directory or a directory as output is named, nothing written."""
    with pytest.raises(BridgeError, match="not a writable directory"):
        export_alerts(store, tmp_path / "nope" / "a.csv", "csv", anonymizer=None)
    with pytest.raises(BridgeError, match="is a directory"):
        export_alerts(store, tmp_path, "csv", anonymizer=None)
    with pytest.raises(BridgeError, match="format must be one of"):
        export_alerts(store, tmp_path / "a.xml", "xml", anonymizer=None)


def test_cli_export(store: Store, tmp_path: Path) -> None:
    """`alertbridge export` writes the file, anonymised by default, and says what it did."""
    out = tmp_path / "cli.parquet"
    result = CliRunner().invoke(main, ["export", "--format", "parquet", "--output", str(out),
                                       "--db", store.path])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote 6 alerts (anonymised) to {out}:")
    assert "db-payments" not in json.dumps(read_back(out, "parquet"), default=str)
    missing = CliRunner().invoke(main, ["export", "--format", "csv", "--output", str(out),
                                        "--db", str(tmp_path / "none.db")])  # fmt: skip
    assert missing.exit_code == 1
    assert "no alert database at" in missing.output


def varied_store(path: Path, seed: int = 7) -> Store:
    """Alerts of every shape: label sets repeated across episodes, values that contain each
    other, people named in comments, acks, assignments, silences, resolutions, odd text."""
    rng = random.Random(seed)  # noqa: S311 - test data
    store = Store(path)
    hosts = ["db-7", "db-7:9100", "db-70", "web-1", 'é-host "q"', "a"]
    batch = []
    for i in range(1, 301):
        host = rng.choice(hosts)
        labels = {
            "alertname": rng.choice(["high_cpu", "slow_search"]),
            "instance": host,
            "severity": rng.choice(["warning", "critical"]),
            "team": rng.choice(["", "ledger"]),
        }
        if i % 7 == 0:
            labels["zone"] = "eu-1"
        resolved = i % 3 == 0
        runbook = rng.choice(["", "ask alice.smith", "see ledger"])
        batch.append(
            ReceivedAlert(
                fingerprint=f"{rng.randrange(40):016x}",
                status="resolved" if resolved else "firing",
                starts_at=T0 + i * NS,
                ends_at=T0 + (i + rng.randrange(1, 500)) * NS if resolved else None,
                labels=labels,
                annotations={
                    "summary": f"CPU on {host} is {rng.randrange(80, 100)}%",
                    "runbook": runbook,
                },
                generator_url=rng.choice(["", f"http://prom/graph?instance={host}"]),
            )
        )
    store.run(ingest(batch, T0))
    for alert_id in range(1, 301, 4):
        who, comment = rng.choice(["alice.smith", "bob"]), rng.choice(["", "bob is on db-7"])
        with contextlib.suppress(Conflict):  # resolved ones cannot be acknowledged
            store.run(acknowledge(alert_id, who, comment, T0 + 900 * NS))
    for alert_id in range(2, 301, 9):
        store.run(assign(alert_id, "alice.smith", rng.choice(["bob", "carol.w"]), T0))
    store.run(lambda c: c.execute("UPDATE alerts SET silence_id = 'sil-' || id WHERE id % 5 = 0"))
    return store


def row_path(store: Store, anonymizer: Anonymizer | None) -> list[dict[str, Any]]:
    """The reference: every alert through row_record (and Anonymizer.record)."""
    sql = f"SELECT {COLUMNS} FROM alerts ORDER BY id"  # noqa: S608 - a constant
    rows = store.read(lambda c: c.execute(sql).fetchall())
    records = [row_record(r) for r in rows]
    return [anonymizer.record(r) for r in records] if anonymizer else records


def parquet_records(path: Path) -> list[dict[str, Any]]:
    table = pq.read_table(path)
    for name in ("starts_at", "ends_at", "first_received_at", "last_received_at", "acked_at"):
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, table.column(name).cast(pa.int64()))
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:
        row["labels"], row["annotations"] = dict(row["labels"]), dict(row["annotations"])
    return rows


@pytest.mark.parametrize("anonymised", [False, True])
def test_columnar_parquet_equals_the_row_path(tmp_path: Path, anonymised: bool) -> None:
    """The Parquet export (bridge.columnar) holds exactly what the row path makes of each alert,
    across batches (of 7 rows here), anonymised or not."""
    store = varied_store(tmp_path / "v.db")
    anonymizer = Anonymizer(b"k", people=known_people(store)) if anonymised else None
    expected = row_path(store, anonymizer)
    out = tmp_path / "v.parquet"
    seen: list[int] = []
    result = export_alerts(store, out, "parquet", anonymizer=anonymizer, batch=7,
                           progress=seen.append)  # fmt: skip
    assert result.records == len(expected) == sum(seen) == 300
    assert max(seen) == 7  # streamed in batches, each reported
    got = parquet_records(out)
    for want, have in zip(expected, got, strict=True):
        assert have == want
    if anonymised:  # an alert's own host and every person are gone from all of its fields
        plain = row_path(store, None)
        for original, anon in zip(plain, got, strict=True):
            assert "alice.smith" not in json.dumps(anon, default=str)
            host = original["labels"]["instance"]
            if len(host) > 1:  # "a" is in every pseudonym ("anon-...")
                assert json.dumps(host)[1:-1] not in json.dumps(anon, default=str)
    store.close()


def test_columnar_parquet_of_an_empty_window_is_an_empty_typed_file(
    store: Store, tmp_path: Path
) -> None:
    """No alert in the window: a valid Parquet file with the schema and no rows."""
    out = tmp_path / "none.parquet"
    result = export_alerts(store, out, "parquet", anonymizer=None, since=T0 + 10**6 * NS)
    assert result.records == 0
    assert pq.read_table(out).num_rows == 0
    assert pq.read_schema(out).field("labels").type == pq.read_schema(out).field("annotations").type


@pytest.mark.parametrize("key", [b"k", b"x" * 64, b"long key " * 20])
def test_pseudonyms_are_hmac_sha256(key: bytes) -> None:
    """The pseudonym is the documented HMAC-SHA256 (so exports stay joinable across versions)."""
    anonymizer = Anonymizer(key)
    for value in ["db-7:9100", "", "é ✓", "0123456789abcdef"]:
        expected = "anon-" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]
        assert anonymizer.pseudonym(value) == anonymizer.fingerprint(value) == expected


def test_failed_parquet_export_keeps_the_old_file_and_stops_its_reader(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A columnar export failing on its second batch leaves the previous file, no temporary
    file, and no reader thread behind."""
    out = tmp_path / "keep.parquet"
    out.write_bytes(b"previous export")
    real = Transformer.__call__
    calls = {"n": 0}

    def boom(self: Transformer, raw: pa.RecordBatch) -> pa.RecordBatch:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        return real(self, raw)

    monkeypatch.setattr(Transformer, "__call__", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_alerts(store, out, "parquet", anonymizer=Anonymizer(b"k"), batch=2)
    assert out.read_bytes() == b"previous export"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert not [t for t in threading.enumerate() if t.name == "alertbridge-export-reader"]


def test_unreadable_database_is_a_store_error(tmp_path: Path) -> None:
    """The reader's failure reaches the caller as a StoreError naming it."""
    bad = tmp_path / "not-a-db"
    bad.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match="reading alerts failed"):
        list(read_batches(str(bad), None, None, 10))
