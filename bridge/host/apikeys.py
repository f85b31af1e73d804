"""API keys, one per person: a name, a role, and the SHA-256 of a random token.

The keys file (`server.keys_file`, default `<db>.keys.json`) holds no token: `alertbridge keys
add` prints the token once and stores its hash. Tokens are 32 random bytes, so a plain hash is
as good as a slow one (nothing to guess from a dictionary), and looking a token up is one hash
and one dict lookup, not a comparison with every key. The file is rewritten whole, atomically
(a temporary file, fsync, rename), mode 0600; a server reloads it when it changes (checked at
most once a second), so a revoked key stops working within a second without a restart.

Roles: `read` lists and watches; `write` also acts (ack, note, assign, resolve, escalate);
`admin` also acts on behalf of someone else (`by`), audited as "A on behalf of B".

>>> token = new_token()
>>> token.startswith(TOKEN_PREFIX) and len(token) > 40
True
>>> allows("write", "read"), allows("read", "write")
(True, False)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.core.errors import BridgeError
from bridge.core.times import format_time, now_ns

ROLES = ("read", "write", "admin")
TOKEN_PREFIX = "abk_"  # noqa: S105 - a prefix that marks a token, not a secret
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
FORMAT = 1
RELOAD_EVERY = 1.0


class KeysError(BridgeError):
    """A keys file that cannot be read or written, or a bad key name or role."""


def allows(role: str, needed: str) -> bool:
    """Whether a key of `role` may do what needs `needed`."""
    return ROLES.index(role) >= ROLES.index(needed)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    role: str
    sha256: str
    created_at: int
    revoked_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        """What `keys list` shows and the file holds (a hash, never a token)."""
        return {"name": self.name, "role": self.role, "sha256": self.sha256,
                "created_at": format_time(self.created_at),
                "revoked_at": format_time(self.revoked_at)}  # fmt: skip


def _key_of(raw: Any, where: str) -> ApiKey:
    if not isinstance(raw, Mapping):
        raise KeysError(f"{where}: must be an object")
    name, role, digest = raw.get("name"), raw.get("role"), raw.get("sha256")
    if not isinstance(name, str) or not NAME.match(name):
        raise KeysError(f"{where}.name: must be a key name, got {name!r:.80}")
    if role not in ROLES:
        raise KeysError(f"{where}.role: must be one of {', '.join(ROLES)}, got {role!r:.40}")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise KeysError(f"{where}.sha256: must be 64 hex digits")
    created, revoked = raw.get("created_ns", 0), raw.get("revoked_ns")
    if not isinstance(created, int) or not (revoked is None or isinstance(revoked, int)):
        raise KeysError(f"{where}: created_ns and revoked_ns must be integers")
    return ApiKey(name, role, digest, created, revoked)


def load(path: str | Path | None) -> list[ApiKey]:
    """Every key of the file (revoked ones included); [] when there is no file (or none is
    named)."""
    if path is None:
        return []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise KeysError(f"cannot read the keys file {path}: {exc.strerror}") from None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise KeysError(f"the keys file {path} is not JSON: {exc}") from None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("keys"), list):
        raise KeysError(f'the keys file {path} must be an object with a "keys" list')
    keys = [_key_of(item, f"{path}: keys[{n}]") for n, item in enumerate(raw["keys"])]
    live = [k.name for k in keys if k.revoked_at is None]
    if len(live) != len(set(live)):
        raise KeysError(f"the keys file {path} names a key twice")
    return keys


def save(path: str | Path, keys: list[ApiKey]) -> None:
    """Write the file whole: a temporary file beside it, fsync, rename (never half-written)."""
    target = Path(path)
    body = {"format": FORMAT, "keys": [
        {"name": k.name, "role": k.role, "sha256": k.sha256, "created_ns": k.created_at,
         "revoked_ns": k.revoked_at} for k in keys]}  # fmt: skip
    try:
        fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=target.parent or ".")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(body, indent=2) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise KeysError(f"cannot write the keys file {path}: {exc.strerror}") from None


def add(path: str | Path, name: str, role: str) -> tuple[ApiKey, str]:
    """A new key (and its token, shown once); KeysError for a taken name or a bad role."""
    if not NAME.match(name):
        raise KeysError(f"key name {name!r:.80}: letters, digits and . _ @ - (at most 64)")
    if role not in ROLES:
        raise KeysError(f"role {role!r:.40}: must be one of {', '.join(ROLES)}")
    keys = load(path)
    if any(k.name == name and k.revoked_at is None for k in keys):
        raise KeysError(f"a key named {name} exists (revoke it first)")
    token = new_token()
    key = ApiKey(name, role, token_hash(token), now_ns())
    save(path, [*keys, key])
    return key, token


def revoke(path: str | Path, name: str) -> ApiKey:
    keys = load(path)
    for n, key in enumerate(keys):
        if key.name == name and key.revoked_at is None:
            keys[n] = ApiKey(key.name, key.role, key.sha256, key.created_at, now_ns())
            save(path, keys)
            return keys[n]
    raise KeysError(f"no key named {name}")


class KeyRing:
    """The server's view of the keys file, reloaded when the file changes (stat at most once
    a second). A file that became unreadable keeps the last good keys (and the error is
    logged by the caller through `error`)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._by_hash: dict[str, ApiKey] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self.error: str | None = None
        self.reload()

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def reload(self) -> None:
        """Read the file now (KeysError when it is bad: at start, the server refuses it)."""
        stamp = self._stat()
        keys = load(self.path)
        self._by_hash = {k.sha256: k for k in keys if k.revoked_at is None}
        self._stamp, self.error = stamp, None

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_EVERY:
            return
        with self._lock:
            self._checked = now
            if self._stat() == self._stamp:
                return
            try:
                self.reload()
            except KeysError as exc:
                self.error = str(exc)

    def __bool__(self) -> bool:
        self.refresh()
        return bool(self._by_hash)

    def find(self, token: str) -> ApiKey | None:
        self.refresh()
        return self._by_hash.get(token_hash(token))

    def by_hash(self, sha256: str) -> ApiKey | None:
        """A key still in force, by its hash (a signed-in session's key)."""
        self.refresh()
        return self._by_hash.get(sha256)

    def in_force(self, sha256: str) -> bool:
        """Whether the key of this hash is still in force (an open stream's key)."""
        return self.by_hash(sha256) is not None
