"""A key per person: the keys file and `alertbridge keys`, then the API with keys (roles,
the actor of an action, acting on behalf of someone, revocation while the server runs), and
the CLI's --url with a key against a live bridge."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from click.testing import CliRunner

from bridge.cli import main
from bridge.config import Secret, load_settings
from bridge.core.errors import BridgeError
from bridge.host import apikeys
from bridge.http.app import create_app
from bridge.http.keys import KEYRING
from tests.payloads import am_alert, notification
from tests.support import (
    LOOPBACK,
    bridge_env,
    free_port,
    http_json,
    running,
    start_bridge,
    wait_for,
)

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
HOOK = {"Authorization": "Bearer hook-secret"}


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner(env=env).invoke(main, list(args))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the keys file and the CLI ---------------------------------------------------------------


def test_add_prints_the_token_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    added = cli("keys", "--file", str(path), "add", "alice", "--role", "write")
    assert added.exit_code == 0, added.output
    token = added.stdout.strip()
    assert token.startswith(apikeys.TOKEN_PREFIX)
    text = path.read_text()
    assert token not in text
    assert apikeys.token_hash(token) in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    listed = cli("keys", "--file", str(path), "list")
    assert "alice" in listed.output
    assert "write" in listed.output
    assert token not in listed.output
    as_json = json.loads(cli("keys", "--file", str(path), "list", "-o", "json").output)
    assert [(k["name"], k["role"], k["revoked_at"]) for k in as_json] == [("alice", "write", None)]
    # a second key gets another token
    other = cli("keys", "--file", str(path), "add", "bob", "--role", "read").stdout.strip()
    assert other != token
    assert [k.name for k in apikeys.load(path)] == ["alice", "bob"]


def test_mistakes_are_named_and_change_nothing(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    assert cli("keys", "--file", str(path), "add", "alice", "--role", "write").exit_code == 0
    before = path.read_bytes()
    twice = cli("keys", "--file", str(path), "add", "alice", "--role", "admin")
    assert twice.exit_code == 1
    assert "a key named alice exists" in twice.output
    bad_role = cli("keys", "--file", str(path), "add", "carol", "--role", "root")
    assert bad_role.exit_code == 2
    assert "'root' is not one of" in bad_role.output
    bad_name = cli("keys", "--file", str(path), "add", "<script>", "--role", "read")
    assert bad_name.exit_code == 1
    assert "key name" in bad_name.output
    unknown = cli("keys", "--file", str(path), "revoke", "nobody")
    assert unknown.exit_code == 1
    assert "no key named nobody" in unknown.output
    assert path.read_bytes() == before
    path.write_text("{not json")
    broken = cli("keys", "--file", str(path), "list")
    assert broken.exit_code == 1
    assert "is not JSON" in broken.output


def test_revoked_keys_are_kept_for_the_record_and_the_name_reusable(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first, _ = apikeys.add(path, "alice", "write")
    assert cli("keys", "--file", str(path), "revoke", "alice").output == "key alice revoked\n"
    assert cli("keys", "--file", str(path), "list").output.count("alice") == 0
    assert cli("keys", "--file", str(path), "list", "--all").output.count("alice") == 1
    again, _ = apikeys.add(path, "alice", "read")
    assert again.sha256 != first.sha256
    assert [(k.name, k.revoked_at is None) for k in apikeys.load(path)] == [
        ("alice", False), ("alice", True)]  # fmt: skip


def test_the_default_keys_file_sits_beside_the_database(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    added = cli("keys", "add", "alice", "--role", "read", env={"ALERTBRIDGE_DB": str(db)})
    assert added.exit_code == 0, added.output
    assert [k.name for k in apikeys.load(f"{db}.keys.json")] == ["alice"]
    elsewhere = tmp_path / "k.json"
    env = {"ALERTBRIDGE_DB": str(db), "ALERTBRIDGE_KEYS_FILE": str(elsewhere)}
    assert cli("keys", "add", "bob", "--role", "read", env=env).exit_code == 0
    assert [k.name for k in apikeys.load(elsewhere)] == ["bob"]


def test_a_postgresql_store_uses_only_the_keys_file_named(tmp_path: Path) -> None:
    """Replicas on one PostgreSQL share no directory: `keys` asks for the file (a usage error
    naming the ways to give it) and writes nothing; the server then has no named keys."""
    url = "postgresql://bridge@127.0.0.1:1/alerts"
    env = {"ALERTBRIDGE_DB": url}
    refused = cli("keys", "add", "alice", "--role", "read", env=env)
    assert refused.exit_code == 2
    assert "ALERTBRIDGE_KEYS_FILE" in refused.output
    assert "--file" in refused.output
    assert not Path("postgresql:").exists()
    ring = apikeys.KeyRing(None)
    ring.refresh()
    assert (ring.error, ring.find("anything")) == (None, None)
    shared = tmp_path / "shared.keys.json"
    env["ALERTBRIDGE_KEYS_FILE"] = str(shared)
    assert cli("keys", "add", "alice", "--role", "read", env=env).exit_code == 0
    assert [k.name for k in apikeys.load(shared)] == ["alice"]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('{"keys": [{"name": "a", "role": "owner", "sha256": "' + "0" * 64 + '"}]}', "role"),
        ('{"keys": [{"name": "a", "role": "read", "sha256": "xyz"}]}', "sha256"),
        ('{"keys": [{"name": "", "role": "read", "sha256": "' + "0" * 64 + '"}]}', "name"),
        ('{"keys": {}}', '"keys" list'),
        (
            '{"keys": [{"name": "a", "role": "read", "sha256": "' + "0" * 64 + '"},'
            ' {"name": "a", "role": "write", "sha256": "' + "1" * 64 + '"}]}',
            "twice",
        ),
    ],
)
def test_a_bad_keys_file_stops_the_server_naming_what_is_wrong(
    tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "keys.json"
    path.write_text(text)
    settings = load_settings(None, {"ALERTBRIDGE_KEYS_FILE": str(path)}, db=str(tmp_path / "d"))
    with pytest.raises(BridgeError, match=named):
        create_app(settings, background=False)


# --- the API with keys -------------------------------------------------------------------------


@pytest.fixture
async def keyed(aiohttp_client: MakeClient, tmp_path: Path) -> tuple[Client, dict[str, str]]:
    """An app with keys for a reader, a writer and an admin, the shared token "shared", and
    one stored firing alert (id 1); the tokens by name."""
    path = tmp_path / "keys.json"
    roles = {"rita": "read", "root": "write", "ada": "admin"}
    tokens = {name: apikeys.add(path, name, role)[1] for name, role in roles.items()}
    base = load_settings(None, {"ALERTBRIDGE_KEYS_FILE": str(path)}, db=str(tmp_path / "a.db"))
    server = dataclasses.replace(base.server, webhook_token=Secret("hook-secret"),
                                 api_token=Secret("shared"))  # fmt: skip
    client = await aiohttp_client(
        create_app(dataclasses.replace(base, server=server), background=False)
    )
    payload = notification(am_alert("0000000000000001"))
    assert (await client.post("/api/v1/alertmanager", json=payload, headers=HOOK)).status == 200
    return client, tokens


async def test_every_api_call_needs_a_valid_token(keyed: tuple[Client, dict[str, str]]) -> None:
    client, tokens = keyed
    for headers in ({}, bearer("abk_nope"), {"Authorization": f"Basic {tokens['rita']}"}):
        response = await client.get("/api/v1/alerts", headers=headers)
        assert response.status == 401
        assert (await response.json())["error"] == "unauthorized"
    for name in tokens:
        assert (await client.get("/api/v1/alerts", headers=bearer(tokens[name]))).status == 200
    assert (await client.get("/api/v1/status", headers=bearer(tokens["rita"]))).status == 200


async def test_a_read_key_may_look_but_not_act(keyed: tuple[Client, dict[str, str]]) -> None:
    client, tokens = keyed
    for path, body in (("ack", {}), ("notes", {"text": "x"}), ("assign", {"assignee": "x"}),
                       ("resolve", {}), ("unack", {}), ("escalate", {})):  # fmt: skip
        response = await client.post(f"/api/v1/alerts/1/{path}", json=body,
                                     headers=bearer(tokens["rita"]))  # fmt: skip
        assert response.status == 403, path
        error = await response.json()
        assert error["error"] == "forbidden"
        assert error["message"] == "key rita has role read; this needs write"
    detail = await (await client.get("/api/v1/alerts/1", headers=bearer(tokens["rita"]))).json()
    assert detail["acked_by"] is None
    assert [e["kind"] for e in detail["events"]] == ["fired"]


async def test_the_actor_is_the_keys_name(keyed: tuple[Client, dict[str, str]]) -> None:
    client, tokens = keyed
    acked = await client.post("/api/v1/alerts/1/ack", json={"comment": "mine"},
                              headers=bearer(tokens["root"]))  # fmt: skip
    assert acked.status == 200
    assert (await acked.json())["acked_by"] == "root"
    # naming oneself is fine; naming someone else is not (the issue: `unack 5 --by bob`)
    own = await client.post("/api/v1/alerts/1/notes", json={"by": "root", "text": "n"},
                            headers=bearer(tokens["root"]))  # fmt: skip
    assert own.status == 201
    assert (await own.json())["actor"] == "root"
    spoof = await client.post("/api/v1/alerts/1/unack", json={"by": "bob"},
                              headers=bearer(tokens["root"]))  # fmt: skip
    assert spoof.status == 403
    assert "may act only as itself" in (await spoof.json())["message"]
    detail = await (await client.get("/api/v1/alerts/1", headers=bearer(tokens["root"]))).json()
    assert detail["acked_by"] == "root"  # the refused unack changed nothing


async def test_an_admin_acts_on_behalf_and_the_trail_says_so(
    keyed: tuple[Client, dict[str, str]],
) -> None:
    client, tokens = keyed
    acked = await client.post("/api/v1/alerts/1/ack", json={"by": "bob"},
                              headers=bearer(tokens["ada"]))  # fmt: skip
    assert acked.status == 200
    assert (await acked.json())["acked_by"] == "ada on behalf of bob"
    detail = await (await client.get("/api/v1/alerts/1", headers=bearer(tokens["ada"]))).json()
    assert detail["events"][-1]["actor"] == "ada on behalf of bob"
    paused = await client.post("/api/v1/alerts/1/escalation/pause", json={"by": "bob"},
                               headers=bearer(tokens["ada"]))  # fmt: skip
    assert paused.status == 404, await paused.text()  # no policy here; what matters: not 403
    assert "escalation" in (await paused.json())["message"]


async def test_the_shared_token_is_still_an_admin_and_by_is_as_given(
    keyed: tuple[Client, dict[str, str]],
) -> None:
    client, _ = keyed
    missing = await client.post("/api/v1/alerts/1/ack", json={}, headers=bearer("shared"))
    assert missing.status == 422  # it has no name of its own: by is required, as before
    acked = await client.post("/api/v1/alerts/1/ack", json={"by": "alice"},
                              headers=bearer("shared"))  # fmt: skip
    assert (await acked.json())["acked_by"] == "alice"


async def test_a_revoked_key_is_refused_without_a_restart(
    keyed: tuple[Client, dict[str, str]],
) -> None:
    client, tokens = keyed
    ring = client.app[KEYRING]
    assert (await client.get("/api/v1/alerts", headers=bearer(tokens["root"]))).status == 200
    apikeys.revoke(ring.path, "root")
    ring._checked = 0.0  # the next request looks at the file now, not within the second
    assert (await client.get("/api/v1/alerts", headers=bearer(tokens["root"]))).status == 401
    new_key, token = apikeys.add(ring.path, "dora", "write")
    ring._checked = 0.0
    assert (await client.get("/api/v1/alerts", headers=bearer(token))).status == 200
    # a keys file broken while running: the last good keys stay in use
    ring.path.write_text("{broken")
    ring._checked = 0.0
    assert (await client.get("/api/v1/alerts", headers=bearer(token))).status == 200
    assert new_key.name == "dora"


async def test_with_neither_keys_nor_token_the_api_stays_open(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    settings = load_settings(None, {}, db=str(tmp_path / "a.db"))
    client = await aiohttp_client(create_app(settings, background=False))
    assert (await client.get("/api/v1/alerts")).status == 200


# --- the CLI against a live bridge with keys ---------------------------------------------------


@pytest.mark.e2e
def test_cli_with_a_key_acts_as_the_key_and_cannot_pose_as_another(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    root = cli("keys", "--file", str(keys), "add", "root", "--role", "write").stdout.strip()
    port = free_port()
    env = bridge_env(ALERTBRIDGE_WEBHOOK_TOKEN="hook", ALERTBRIDGE_KEYS_FILE=str(keys))
    with running(start_bridge(tmp_path, port, env)) as proc:
        base = f"http://{LOOPBACK}:{port}"
        status, _ = http_json(f"{base}/api/v1/alertmanager", notification(am_alert()), "hook")
        assert status == 200
        as_root = {"ALERTBRIDGE_API_TOKEN": root}
        acked = cli("ack", "1", "--url", base, "-o", "json", env=as_root)
        assert acked.exit_code == 0, acked.output
        assert json.loads(acked.output)["acked_by"] == "root"
        posing = cli("unack", "1", "--url", base, "--by", "bob", env=as_root)
        assert posing.exit_code == 1
        assert "may act only as itself" in posing.output
        reader = cli("keys", "--file", str(keys), "add", "rita", "--role", "read").stdout.strip()
        # the running server takes the new key within a second (it looks at the file)
        wait_for("the new key", lambda: http_json(f"{base}/api/v1/alerts", None, reader)[0] == 200,
                 timeout=5)  # fmt: skip
        refused = cli("note", "1", "hi", "--url", base, env={"ALERTBRIDGE_API_TOKEN": reader})
        assert refused.exit_code == 1
        assert "needs write" in refused.output
    assert root not in proc.output()
    assert reader not in proc.output()
