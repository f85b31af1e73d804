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


@dataclass(slots=True)
class Session:
    id: str
    name: str | None  # the key's name (None: the shared token, or an open API)
    role: str
    key_sha256: str | None  # which key (None: the shared token, or an open API)
    by: str  # who acts: the key's name, or the name given at sign-in
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    expires: float = field(default_factory=lambda: time.monotonic() + LIFETIME)

    def csrf_ok(self, given: object) -> bool:
        return isinstance(given, str) and hmac.compare_digest(given.encode(), self.csrf.encode())


class Sessions:
    """The open sessions, oldest first (bounded: the oldest go when full)."""

    def __init__(self) -> None:
        self._open: OrderedDict[str, Session] = OrderedDict()

    def open(self, name: str | None, role: str, key_sha256: str | None, by: str) -> Session:
        while len(self._open) >= MAX_SESSIONS:
            self._open.popitem(last=False)
        session = Session(secrets.token_urlsafe(32), name, role, key_sha256, by)
        self._open[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._open.get(session_id)
        if session is None:
            return None
        if time.monotonic() > session.expires:
            del self._open[session_id]
            return None
        return session

    def close(self, session_id: str) -> None:
        self._open.pop(session_id, None)

    def end_key(self, key_sha256: str) -> None:
        """End every session of a key (it was revoked)."""
        for sid in [s.id for s in self._open.values() if s.key_sha256 == key_sha256]:
            del self._open[sid]
