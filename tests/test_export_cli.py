"""`alertbridge export` as a process: streaming to standard output, SIGTERM mid-export, a
read-only database, the progress display on a terminal."""

from __future__ import annotations

import io
import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from bench.ingest import build_store
from bridge.store.sqlite.store import SqliteStore
from tests.stores import T0, Sync
from tests.support import bridge_env
from tests.test_cli import _unprivileged
from tests.test_export import alert

BRIDGE = [sys.executable, "-m", "bridge"]


def small_db(path: Path) -> str:

    store = Sync(SqliteStore(path))
    store.ingest([alert(i) for i in range(1, 6)], T0)
    store.close()
    return str(path)


def test_output_dash_streams_to_standard_output(tmp_path: Path) -> None:
    """--output - writes the export itself to stdout (Parquet too: for | duckdb), the summary
    to stderr, and no temporary file anywhere."""
    db = small_db(tmp_path / "a.db")
    for fmt in ("json", "csv", "parquet"):
        proc = subprocess.run(
            [*BRIDGE, "export", "--format", fmt, "--output", "-", "--db", db, "--no-anonymize"],
            capture_output=True,
            timeout=60,
            check=True,
            env=bridge_env(),
            cwd=tmp_path,
        )
        assert proc.stderr.decode().startswith("wrote 5 alerts (not anonymised) to standard")
        if fmt == "json":
            assert len(proc.stdout.decode().splitlines()) == 5
            assert json.loads(proc.stdout.decode().splitlines()[0])["id"] == 1
        elif fmt == "parquet":
            assert pq.read_table(io.BytesIO(proc.stdout)).num_rows == 5
        else:
            assert len(proc.stdout.decode().splitlines()) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.db", "a.db-shm", "a.db-wal"]


def test_a_full_disk_and_a_closed_pipe_are_no_traceback(tmp_path: Path) -> None:
    """Onto a full device (/dev/full): one line naming it, exit 1; listing too. A reader
    that closes the pipe early: exit 1, nothing but what was written."""
    db = small_db(tmp_path / "a.db")
    for argv in (["export", "--format", "json", "--output", "-", "--db", db],
                 ["alerts", "--db", db]):  # fmt: skip
        with open("/dev/full", "wb") as full:
            proc = subprocess.run([*BRIDGE, *argv], stdout=full, stderr=subprocess.PIPE,
                                  timeout=60, check=False, env=bridge_env())  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.decode().splitlines() == [
            "alertbridge: error: cannot go on: no space left on device"
        ], argv
    with subprocess.Popen(
        [*BRIDGE, "export", "--format", "csv", "--output", "-", "--db", db],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=bridge_env(),
    ) as reader:  # fmt: skip
        assert reader.stdout is not None
        assert reader.stderr is not None
        reader.stdout.read(5)
        reader.stdout.close()
        assert reader.wait(60) in (0, 1)  # 0: it had written all before the reader left
        assert "Traceback" not in reader.stderr.read().decode()


def test_sigterm_mid_export_leaves_no_temporary_file(tmp_path: Path) -> None:
    """An export of 300,000 alerts killed with SIGTERM once its temporary file is there: it
    exits, the temporary file is gone, the previous output is intact."""
    db = tmp_path / "big.db"
    build_store(db, 300_000)
    out = tmp_path / "out.csv"
    out.write_text("previous\n")
    proc = subprocess.Popen(
        [*BRIDGE, "export", "--format", "csv", "--output", str(out), "--db", str(db)],
        env=bridge_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no temporary file appeared"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert out.read_text() == "previous\n"


def test_no_anonymize_works_on_a_read_only_database(tmp_path: Path) -> None:
    """A database and directory the exporting user cannot write (a backup, a mounted
    snapshot): --no-anonymize exports; anonymised needs a key and says how to give one."""
    data = tmp_path / "data"
    data.mkdir()
    db = small_db(data / "a.db")
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(db, 0o444)
    data.chmod(0o555)
    try:
        argv = [*BRIDGE, "export", "--format", "json", "--db", db]
        plain = subprocess.run(
            _unprivileged([*argv, "--output", str(out / "a.json"), "--no-anonymize"]),
            capture_output=True,
            text=True,
            timeout=60,
            env=bridge_env(),
        )
        anon = subprocess.run(
            _unprivileged([*argv, "--output", str(out / "b.json")]),
            capture_output=True,
            text=True,
            timeout=60,
            env=bridge_env(),
        )
        keyed = subprocess.run(
            _unprivileged([*argv, "--output", str(out / "c.json")]),
            capture_output=True,
            text=True,
            timeout=60,
            env=bridge_env(ALERTBRIDGE_EXPORT_KEY="k"),
        )
    finally:
        data.chmod(0o755)
        os.chmod(db, 0o644)
    assert plain.returncode == 0, plain.stderr
    assert len((out / "a.json").read_text().splitlines()) == 5
    assert anon.returncode == 1
    assert "ALERTBRIDGE_EXPORT_KEY" in anon.stderr
    assert keyed.returncode == 0, keyed.stderr
    assert sorted(p.name for p in data.iterdir()) == ["a.db"]  # nothing created beside it


def test_progress_on_a_terminal_and_nothing_otherwise(tmp_path: Path) -> None:
    """On a terminal: done of total, the percentage and a rate; piped: only the summary."""
    db = tmp_path / "big.db"
    build_store(db, 100_000)
    argv = [
        *BRIDGE,
        "export",
        "--format",
        "json",
        "--output",
        str(tmp_path / "o.json"),
        "--db",
        str(db),
        "--no-anonymize",
    ]
    piped = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=bridge_env())
    assert piped.stderr == ""
    assert piped.stdout.startswith("wrote 100000 alerts")
    main, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=terminal, env={**bridge_env(), "COLUMNS": "120"}
        )
        os.close(terminal)
        seen = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(120) == 0
    finally:
        os.close(main)
    text = seen.decode(errors="replace")
    assert "exporting alerts" in text
    assert "100000/100000" in text
    assert "100%" in text
    assert "/s" in text
