"""Sign-in sessions of the operators' page: a random id in an HttpOnly, SameSite=Strict cookie
(Secure behind https), the principal it stands for and a CSRF token for its forms, kept in the
server's memory: signing out ends a session at once, a restart ends them all (sign in again),
and a revoked key ends its sessions at the next request (the key is looked up each time).

>>> sessions = Sessions()
>>> s = sessions.open("alice", "write", "0" * 64, by="alice")
>>> sessions.get(s.id) is s, sessions.get("nope")
(True, None)
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

COOKIE = "alertbridge_session"
LIFETIME = 12 * 3600.0
MAX_SESSIONS = 10_000
#: Sessions one key (or one name under the shared token) holds at once: a person's browsers.
MAX_PER_OWNER = 20


@dataclass(slots=True)
class Session:
    id: str
    name: str | None  # the key's name (None: the shared token, or an open API)
    role: str
    key_sha256: str | None  # which key (None: the shared token, or an open API)
    by: str  # who acts: the key's name, or the name given at sign-in
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    expires: float = field(default_factory=lambda: time.monotonic() + LIFETIME)

    @property
    def owner(self) -> str:
        """Whose session it is: the key, or the name given with the shared token."""
        return self.key_sha256 or f"name:{self.by}"

    def csrf_ok(self, given: object) -> bool:
        return isinstance(given, str) and hmac.compare_digest(given.encode(), self.csrf.encode())


class SessionsFull(Exception):
    """Every session slot is taken by sessions of others that have not expired."""


class Sessions:
    """The open sessions, oldest first, bounded twice: a key (or, for the shared token, a
    name) holds at most `per_owner`, its own oldest going first when it signs in again; and
    all of them at most `limit`, past which a sign-in is refused (SessionsFull) rather than
    anyone else's session ended: no key can sign another person out.

    >>> sessions = Sessions(limit=3, per_owner=2)
    >>> first = sessions.open("a", "read", "1" * 64, by="a")
    >>> _ = [sessions.open("a", "read", "1" * 64, by="a") for _ in range(2)]
    >>> sessions.get(first.id) is None, len(sessions)
    (True, 2)
    """

    def __init__(self, limit: int = MAX_SESSIONS, per_owner: int = MAX_PER_OWNER) -> None:
        self.limit = limit
        self.per_owner = per_owner
        self._open: OrderedDict[str, Session] = OrderedDict()
        self._owners: dict[str, OrderedDict[str, None]] = {}

    def __len__(self) -> int:
        return len(self._open)

    def open(self, name: str | None, role: str, key_sha256: str | None, by: str) -> Session:
        session = Session(secrets.token_urlsafe(32), name, role, key_sha256, by)
        mine = self._owners.setdefault(session.owner, OrderedDict())
        while len(mine) >= self.per_owner:
            self._drop(next(iter(mine)))
        if len(self._open) >= self.limit:
            self._purge()
            if len(self._open) >= self.limit:
                if not mine:
                    del self._owners[session.owner]
                raise SessionsFull(f"{len(self._open)} sessions open")
        self._open[session.id] = session
        mine[session.id] = None
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._open.get(session_id)
        if session is None:
            return None
        if time.monotonic() > session.expires:
            self._drop(session_id)
            return None
        return session

    def close(self, session_id: str) -> None:
        self._drop(session_id)

    def end_key(self, key_sha256: str) -> None:
        """End every session of a key (it was revoked)."""
        for sid in list(self._owners.get(key_sha256, ())):
            self._drop(sid)

    def _drop(self, session_id: str) -> None:
        session = self._open.pop(session_id, None)
        if session is None:
            return
        mine = self._owners.get(session.owner)
        if mine is not None:
            mine.pop(session_id, None)
            if not mine:
                del self._owners[session.owner]

    def _purge(self) -> None:
        """Drop the expired sessions (all share one lifetime: the oldest expire first)."""
        now = time.monotonic()
        while self._open:
            oldest = next(iter(self._open.values()))
            if oldest.expires > now:
                return
            self._drop(oldest.id)
