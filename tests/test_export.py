"""Alert export: round trips per format, anonymisation leaves no sensitive value, atomicity."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from bridge.actions import acknowledge, assign
from bridge.cli import main
from bridge.episodes import ingest
from bridge.errors import BridgeError
from bridge.export import Anonymizer, export_alerts, export_key, known_people
from bridge.store import NS, Store
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
