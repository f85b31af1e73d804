"""One interface to alerts for the CLI: the local database, or a remote bridge over HTTP."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from bridge.cli.common import default_actor
from bridge.config import Secret
from bridge.core.errors import BridgeError
from bridge.core.times import now_ns
from bridge.escalation.engine import change_of, override, override_input
from bridge.host.apikeys import TOKEN_PREFIX
from bridge.store import AlertStore, open_store
from bridge.store.query import parse_alert_query

Params = Mapping[str, Sequence[str]]
T = TypeVar("T")


class AlertClient(Protocol):
    """What the CLI does to alerts; both implementations return the REST API's JSON shapes."""

    def list(self, params: Params) -> dict[str, Any]: ...
    def show(self, alert_id: int) -> dict[str, Any]: ...
    def ack(self, alert_id: int, by: str | None, comment: str) -> dict[str, Any]: ...
    def unack(self, alert_id: int, by: str | None, comment: str) -> dict[str, Any]: ...
    def note(self, alert_id: int, by: str | None, text: str) -> dict[str, Any]: ...
    def assign(self, alert_id: int, by: str | None, assignee: str) -> dict[str, Any]: ...
    def resolve(self, alert_id: int, by: str | None, comment: str) -> dict[str, Any]: ...
    def override(self, alert_id: int, action: str, body: dict[str, Any]) -> dict[str, Any]: ...


class RemoteError(BridgeError):
    """A bridge answered an API request with an error: its status, code and message."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        self.status, self.code, self.message, self.field = status, code, message, field
        super().__init__(message)


def remote_error(exc: urllib.error.HTTPError) -> RemoteError:
    """A bridge's error answer: its JSON {error, message, field}, or the bare HTTP status."""
    try:
        error = json.loads(exc.read())
        return RemoteError(exc.code, error["error"], error["message"], error.get("field"))
    except (ValueError, KeyError, TypeError):
        return RemoteError(exc.code, "http", f"HTTP {exc.code} {exc.reason}")


class LocalClient:
    """Works directly on a database file through the store interface (safe beside a running
    server: SQLite locks). Each call runs its own event loop; the store's writer thread is
    started for the first write."""

    def __init__(self, path: str, password_file: str | None = None) -> None:
        self.store = open_store(path, password_file=password_file)  # (see _waking below)
        self._started = False

    def close(self) -> None:
        asyncio.run(self.store.close())

    def _run(self, call: Callable[[AlertStore], Awaitable[T]]) -> T:
        async def run(store: AlertStore) -> T:
            return await call(store)

        return asyncio.run(run(self.store))

    def _write(self, call: Callable[[AlertStore], Awaitable[T]]) -> T:
        async def run(store: AlertStore) -> T:
            if not self._started:
                await store.start()
                self._started = True
            return await call(store)

        return asyncio.run(run(self.store))

    def list(self, params: Params) -> dict[str, Any]:
        query = parse_alert_query(params, now_ns())
        return self._run(lambda s: s.list_page(query)).to_json()

    def show(self, alert_id: int) -> dict[str, Any]:
        async def show(store: AlertStore) -> dict[str, Any]:
            detail = (await store.alert_detail(alert_id)).to_json()
            escalations = await store.escalations(alert_id)
            return {**detail, "escalations": [e.to_json() for e in escalations]}

        return self._run(show)

    def override(self, alert_id: int, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """An escalation override on the database: a running server's engine takes what
        became due within a second (its poll)."""
        by, level, seconds = override_input({**body, "by": body.get("by") or default_actor()})
        change = change_of(action, level, seconds)
        escalations = self._write(lambda s: override(s, alert_id, by, change, now_ns()))
        return {"escalations": [e.to_json() for e in escalations]}

    def ack(self, alert_id: int, by: str | None, comment: str) -> dict[str, Any]:
        return self._write(
            lambda s: _waking(s, s.acknowledge(alert_id, by or default_actor(), comment, now_ns()))
        ).to_json()

    def unack(self, alert_id: int, by: str | None, comment: str) -> dict[str, Any]:
        return self._write(
            lambda s: _waking(
                s, s.unacknowledge(alert_id, by or default_actor(), comment, now_ns())
            )
        ).to_json()

    def note(self, alert_id: int, by: str | None, text: str) -> dict[str, Any]:
        return self._write(
            lambda s: s.add_note(alert_id, by or default_actor(), text, now_ns())
        ).to_json()

    def assign(self, alert_id: int, by: str | None, assignee: str) -> dict[str, Any]:
        return self._write(
            lambda s: s.assign(alert_id, by or default_actor(), assignee, now_ns())
        ).to_json()

    def resolve(self, alert_id: int, by: str | None, comment: str) -> dict[str, Any]:
        return self._write(
            lambda s: _waking(s, s.resolve(alert_id, by or default_actor(), comment, now_ns()))
        ).to_json()

    def retention(self, days: int | None) -> int:
        if days is not None:
            return self._write(lambda s: s.set_retention_days(days))
        return self._run(lambda s: s.retention_days())

    def prune(self) -> int:
        async def prune_all(store: AlertStore) -> int:
            total = 0
            for _ in range(10_000):  # bounded: 50 million rows
                removed = await store.prune(now_ns())
                total += removed
                if not removed:
                    break
            return total

        return self._write(prune_all)


class RemoteClient:
    """Talks to a running bridge's REST API with the API token."""

    def __init__(self, url: str, token: Secret | None, timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise BridgeError(f"--url must be http:// or https://, got {url!r}")
        self.base = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        #: A key of one person (the server names the actor from it), not the shared token.
        self.personal_key = token is not None and token.value.startswith(TOKEN_PREFIX)

    def close(self) -> None:
        pass

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token is not None:
            request.add_header("Authorization", f"Bearer {self.token.value}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise remote_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BridgeError(f"cannot reach {self.base}: {reason}") from None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Any request of the API: its JSON answer, RemoteError for an error answer."""
        return self._call(method, path, body)

    def get(self, path: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", path)
        return result

    def list(self, params: Params) -> dict[str, Any]:
        query = urllib.parse.urlencode([(k, v) for k, vs in params.items() for v in vs])
        result: dict[str, Any] = self._call("GET", f"/api/v1/alerts?{query}")
        return result

    def show(self, alert_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/api/v1/alerts/{alert_id}")
        return result

    def _post(self, alert_id: int, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """`by` as given; without it, a personal key's server records the key's name, and
        the others (no token, the shared token) are told the OS user, as `--db` records."""
        if body.get("by") is None:
            body = {k: v for k, v in body.items() if k != "by"}
            if not self.personal_key:
                body["by"] = default_actor()
        result: dict[str, Any] = self._call("POST", f"/api/v1/alerts/{alert_id}/{action}", body)
        return result

    def ack(self, alert_id: int, by: str | None, comment: str) -> dict[str, Any]:
        return self._post(alert_id, "ack", {"by": by, "comment": comment})

    def unack(self, alert_id: int, by: str | None, comment: str) -> dict[str, Any]:
        return self._post(alert_id, "unack", {"by": by, "comment": comment})

    def note(self, alert_id: int, by: str | None, text: str) -> dict[str, Any]:
        return self._post(alert_id, "notes", {"by": by, "text": text})

    def assign(self, alert_id: int, by: str | None, assignee: str) -> dict[str, Any]:
        return self._post(alert_id, "assign", {"by": by, "assignee": assignee})

    def resolve(self, alert_id: int, by: str | None, comment: str) -> dict[str, Any]:
        return self._post(alert_id, "resolve", {"by": by, "comment": comment})

    def override(self, alert_id: int, action: str, body: dict[str, Any]) -> dict[str, Any]:
        path = "escalate" if action == "escalate" else f"escalation/{action}"
        return self._post(alert_id, path, body)


async def _waking(store: AlertStore, change: Awaitable[T]) -> T:
    """A change Alertmanager should hear of now: then wake the replica that reconciles (on
    PostgreSQL; a bridge serving a SQLite file learns of it at its next round)."""
    result = await change
    await store.wake_others()
    return result
