"""`alertbridge migrate --from sqlite:PATH --to postgresql://...`: copy a store into another
(alerts, events, settings, people, escalations; ids kept), page by page, verifying that every
row of the source is in the target. Run again, it copies what is missing and changes nothing
else, so it can follow a source still being written until the cut-over. Stop the bridges
writing the target meanwhile: alerts they store get ids a later copy would collide with
(that is found, and refused)."""

from __future__ import annotations

import asyncio
import sys

import click

from bridge.cli.common import fail_cleanly, main, settings_of
from bridge.core.errors import StoreError
from bridge.store import exists as store_exists
from bridge.store import is_url, open_store
from bridge.store.interface import Transfer
from bridge.store.rows import TABLES

PAGE = 5000


def _location(value: str, option: str) -> str:
    """sqlite:PATH (or a path), or a postgresql:// URL (no password in it: see
    docs/operating/postgresql.md)."""
    if is_url(value):
        if (
            "@" in value.split("//", 1)[1].split("/", 1)[0]
            and ":" in value.split("//", 1)[1].split("@", 1)[0]
        ):
            raise click.BadParameter("no password in the URL: give it in a file"
                                     " (ALERTBRIDGE_STORE_PASSWORD_FILE) or PGPASSFILE",
                                     param_hint=option)  # fmt: skip
        return value
    path = value.removeprefix("sqlite:")
    if not path:
        raise click.BadParameter("sqlite:PATH or postgresql://...", param_hint=option)
    return path


async def copy(source: Transfer, target: Transfer, page: int = PAGE) -> dict[str, tuple[int, int]]:
    """Every table, in an order that keeps references whole (alerts before their events and
    escalations); per table (rows in the source, rows the target did not have yet). StoreError
    when a row of the source is not in the target afterwards."""
    done: dict[str, tuple[int, int]] = {}
    for table in ("alerts", "events", "escalations", "meta", "people"):
        columns, key = TABLES[table]
        at = [columns.index(k) for k in key]
        total = new = 0
        after: tuple[object, ...] | None = None
        for _ in range(10_000_000 // page + 1):  # bounded: ten million rows a table
            rows = await source.dump(table, after, page)
            if not rows:
                break
            inserted, present = await target.load(table, rows)
            if present != len(rows):
                raise StoreError(
                    f"{table}: {len(rows) - present} of {len(rows)} rows after"
                    f" {after or 'the start'} are not in the target as in the source (the"
                    " target holds other rows under those keys: copy into an empty database,"
                    " or one only this command has written)"
                )
            total += len(rows)
            new += inserted
            after = tuple(rows[-1][i] for i in at)
        done[table] = (total, new)
    return done


async def _run(source_at: str, target_at: str,
               password_file: str | None) -> dict[str, tuple[int, int]]:  # fmt: skip
    source = open_store(source_at, read_only=True, password_file=password_file)
    target = open_store(target_at, password_file=password_file)
    try:
        await target.start()
        return await copy(source, target)
    finally:
        await target.close()
        await source.close()


@main.command("migrate")
@click.option("--from", "source", required=True, metavar="sqlite:PATH",
              help="The store to copy (read only).")  # fmt: skip
@click.option("--to", "target", required=True, metavar="postgresql://USER@HOST:PORT/DB",
              help="The store to copy into (migrated first; password from a file).")  # fmt: skip
@click.pass_context
@fail_cleanly
def migrate(ctx: click.Context, source: str, target: str) -> None:
    """Copy alerts, events, settings and escalations into another store, verified."""
    source_at, target_at = _location(source, "--from"), _location(target, "--to")
    if not store_exists(source_at):
        raise click.BadParameter(f"{source_at}: no such database file", param_hint="--from")
    if source_at == target_at:
        raise click.BadParameter("the same store", param_hint="--to")
    done = asyncio.run(_run(source_at, target_at, settings_of(ctx).server.db_password_file))
    for table, (total, new) in done.items():
        click.echo(f"{table}: {total} in the source, all in the target ({new} copied now,"
                   f" {total - new} there already)")  # fmt: skip
    sys.stdout.flush()
