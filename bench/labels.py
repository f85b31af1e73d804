"""Benchmark: label queries of every selectivity over a large store (issue 35).

    .venv/bin/python -m bench.labels [--rows 1000000] [--requests 50] [--store postgresql]

Builds a store of --rows alerts (bench.ingest.build_store: 1% firing, 500 label sets over four
teams, ten rules and four severities; the fingerprint a hash of the label set), starts
`alertbridge serve` on it and times `GET /api/v1/alerts?filter=...` (a page of 50) for matchers
from "everything" to "nothing": =, !=, =~, !~, several at once, and with the other filters;
--requests each, one at a time, the whole round trip. Beside them, in the same run, the page
with no matcher at all (the floor a label index must approach). A listing that takes longer
than the server's query budget answers 503 `query_timeout`: printed as such. Asserts nothing;
issue 35's target: p99 <= 50 ms for every one, an empty page (not a timeout) for none.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from bench.ingest import TOKEN, build_store, pct, start
from tests.support import LOOPBACK, free_port

#: (what, the share of the alerts it matches, the query string)
QUERIES = [
    ("no matcher", "100%", ""),
    ("team=\"team1\"", "25%", 'filter=team="team1"'),
    ("alertname=~\"rule_[12]\"", "20%", 'filter=alertname=~"rule_[12]"'),
    ("instance=\"i7:9100\"", "0.2%", 'filter=instance="i7:9100"'),
    ("instance=~\"web-7:9100\"", "0%", 'filter=instance=~"web-7:9100"'),
    ("instance=~\"mail-.*\"", "0%", 'filter=instance=~"mail-.*"'),
    ("team!=\"team1\"", "75%", 'filter=team!="team1"'),
    ("instance!~\"i.*\"", "0%", 'filter=instance!~"i.*"'),
    ("two: team=\"team1\", alertname=\"rule_5\"", "5%",
     'filter=team="team1"&filter=alertname="rule_5"'),
    ("three, none in common", "0%",
     'filter=team="team1"&filter=alertname="rule_5"&filter=severity="critical"'),
    ("team=\"team2\" and firing", "0.25%", 'filter=team="team2"&status=firing'),
    ("team=\"team2\", acknowledged", "0%", 'filter=team="team2"&acknowledged=true'),
    ("free text 'rule_3 on'", "10%", "q=rule_3+on"),
    ("free text 'on i7:9100'", "0.2%", "q=on+i7:9100"),
    ("free text 'value is 8'", "100%", "q=value+is+8"),
    ("free text nowhere", "0%", "q=no+such+text"),
    ("free text and team=\"team2\", none both", "0%", 'q=on+i7:9100&filter=team="team2"'),
    ("free text of 2 characters, nowhere", "0%", "q=zq"),
]  # fmt: skip


def timed(url: str, count: int) -> tuple[list[float], int, str]:
    """Latencies, the rows of the last answer, and the error code of a refusal ('' if none)."""
    out: list[float] = []
    rows, error = 0, ""
    headers = {"Authorization": "Bearer bench-api"}
    for _ in range(count):
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http://
        began = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                body = json.loads(response.read())
                rows = len(body["alerts"])
        except urllib.error.HTTPError as exc:
            error = json.loads(exc.read() or b"{}").get("error", str(exc.code))
        out.append(time.perf_counter() - began)
    return out, rows, error


#: The alerts of build_store (bench.ingest), made by PostgreSQL itself: the same labels,
#: annotations, shares of firing and severities, one event each.
_PG_BUILD = """
INSERT INTO alerts (fingerprint, starts_at, ends_at, status, alertname, severity, labels,
                    annotations, generator_url, source, first_received_at, last_received_at,
                    receive_count, updated_at)
SELECT substr(encode(sha256(convert_to(labels, 'UTF8')), 'hex'), 1, 16), start_at,
       CASE WHEN firing THEN NULL ELSE start_at + 60000000000 END,
       CASE WHEN firing THEN 'firing' ELSE 'resolved' END, alertname, severity, labels,
       annotations, '', 'alertmanager', start_at, start_at, 1, start_at
FROM (
  SELECT i, random() < 0.01 AS firing, $2::bigint - ($1::bigint - i) * 1000000000 AS start_at,
         'rule_' || i % 10 AS alertname, sev AS severity,
         '{"alertname": "rule_' || i % 10 || '", "instance": "i' || i % 500
           || ':9100", "severity": "' || sev || '", "team": "team' || i % 4 || '"}' AS labels,
         '{"description": "value is ' || 80 + i % 7 || '%", "summary": "rule_' || i % 10
           || ' on i' || i % 500 || ':9100"}' AS annotations
  FROM generate_series(0, $1::bigint - 1) AS i,
       LATERAL (SELECT (ARRAY['info', 'warning', 'error', 'critical'])[i % 4 + 1] AS sev) AS s
) AS g
"""


def build_pg_store(url: str, password: str, rows: int) -> None:
    """`rows` alerts as build_store makes them, in a PostgreSQL database of today's schema,
    with the label index where the bridge measured has one."""
    import asyncio

    import asyncpg

    from bridge.core.times import now_ns
    from bridge.store.postgres import schema

    async def build() -> None:
        conn = await asyncpg.connect(url, password=password)
        try:
            await schema.migrate(conn)
            await conn.execute("SELECT setseed(0.7)")
            await conn.execute(_PG_BUILD, rows, now_ns())
            await conn.execute(
                "INSERT INTO events (alert_id, at, kind, actor, detail)"
                " SELECT id, starts_at, 'fired', 'alertmanager', '' FROM alerts"
            )
            if hasattr(schema, "label_index_build"):  # (a baseline before issue 35 has none)
                began = time.monotonic()
                await conn.execute(schema.label_index_build(0))  # the SQL of migration 8
                print(f"-- label index built in {time.monotonic() - began:.1f} s"
                      " (as by the migration)", flush=True)  # fmt: skip
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()

    asyncio.run(build())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-labels-") as name,
        contextlib.ExitStack() as stack,
    ):
        db: Path | str = Path(name) / "alerts.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTBRIDGE_")}
        began = time.monotonic()
        if args.store == "postgresql":
            from tests.pg import cluster

            pg = stack.enter_context(cluster())
            db = pg.new_database()
            env["ALERTBRIDGE_STORE_PASSWORD_FILE"] = str(pg.password_file)
            build_pg_store(db, pg.password_file.read_text().strip(), args.rows)
        else:
            build_store(Path(db), args.rows)
        print(f"-- {args.rows:,} alerts stored ({args.store}) in {time.monotonic() - began:.0f}s;"
              f" {args.requests} requests a query, one at a time, a page of 50")  # fmt: skip
        port = free_port()
        env.update(ALERTBRIDGE_WEBHOOK_TOKEN=TOKEN, ALERTBRIDGE_API_TOKEN="bench-api",
                   ALERTBRIDGE_ALERTMANAGER_URL="http://127.0.0.1:9")  # fmt: skip
        argv = [sys.executable, "-m", "bridge", "serve", "--host", LOOPBACK, "--port", str(port),
                "--db", str(db)]  # fmt: skip
        server = start(argv, port, env)
        try:
            base = f"http://{LOOPBACK}:{port}/api/v1/alerts?limit=50"
            for label, share, query in QUERIES:
                url = base + ("&" + urllib.parse.quote(query, safe="=&+") if query else "")
                timed(url, 2)  # warm the caches
                values, rows, error = timed(url, args.requests)
                said = f"refused {error}" if error else f"{rows} rows"
                print(f"{label:42s} ({share:>5} of the alerts) p50 {pct(values, 0.5):8.1f} ms,"
                      f" p99 {pct(values, 0.99):8.1f} ms; {said}", flush=True)  # fmt: skip
        finally:
            server.terminate()
            server.wait(30)
    print(
        "target (issue 35): p99 <= 50 ms for every query, an empty page for those matching"
        " nothing (never query_timeout)"
    )


if __name__ == "__main__":
    main()
