"""`alertbridge keys add|list|revoke`: one API key per person (bridge.host.apikeys).

The token is printed once, by `add`, and never stored: the keys file keeps its SHA-256. A
running server picks the change up within a second.
"""

from __future__ import annotations

import json

import click

from bridge.cli.common import fail_cleanly, main, settings_of, short_time, table
from bridge.host import apikeys


@main.group()
@click.option("--file", "path", default=None,
              help="The keys file (default: server.keys_file, <db>.keys.json).")  # fmt: skip
@click.pass_context
def keys(ctx: click.Context, path: str | None) -> None:
    """Named API keys: who may read, who may act, who may act for others."""
    ctx.ensure_object(dict)["keys_file"] = path


def _path(ctx: click.Context) -> str:
    given: str | None = ctx.obj.get("keys_file")
    path = given or settings_of(ctx).server.keys_path
    if path is None:
        raise click.UsageError(
            "the store is PostgreSQL: name the keys file with --file, server.keys_file or"
            " ALERTBRIDGE_KEYS_FILE (a file every replica reads)"
        )
    return path


@keys.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(apikeys.ROLES), required=True,
              help="read: list, watch; write: also act; admin: also act for others.")  # fmt: skip
@click.pass_context
@fail_cleanly
def keys_add(ctx: click.Context, name: str, role: str) -> None:
    """Make a key for NAME and print its token (shown this once: keep it somewhere safe)."""
    path = _path(ctx)
    key, token = apikeys.add(path, name, role)
    click.echo(token)
    click.echo(f"key {key.name} ({key.role}) added to {path}; the token above is not"
               " stored anywhere: pass it as ALERTBRIDGE_API_TOKEN or a bearer token",
               err=True)  # fmt: skip


@keys.command("list")
@click.option("--all", "everything", is_flag=True, help="Revoked keys too.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@fail_cleanly
def keys_list(ctx: click.Context, everything: bool, output: str) -> None:
    """The keys: name, role, when made (and revoked); never a token."""
    found = [k for k in apikeys.load(_path(ctx)) if everything or k.revoked_at is None]
    if output == "json":
        click.echo(json.dumps([k.to_json() for k in found], indent=2))
        return
    rows = [[k.name, k.role, short_time(k.to_json()["created_at"]),
             short_time(k.to_json()["revoked_at"]) if k.revoked_at else "-",
             k.sha256[:12]] for k in found]  # fmt: skip
    click.echo(table(["name", "role", "created", "revoked", "sha256"], rows))


@keys.command("revoke")
@click.argument("name")
@click.pass_context
@fail_cleanly
def keys_revoke(ctx: click.Context, name: str) -> None:
    """Revoke NAME's key (a running server refuses it within a second)."""
    key = apikeys.revoke(_path(ctx), name)
    click.echo(f"key {key.name} revoked")
