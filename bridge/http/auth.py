"""Who is asking, and may they: the API's bearer token is a person's key (bridge.host.apikeys)
or the shared `ALERTBRIDGE_API_TOKEN` of before (an admin key with no name of its own).

With neither keys nor a shared token the API is open, as it always was (bound to loopback by
default): anyone may act, and `by` says who. Once either exists, every API call needs one:
401 without a valid token, 403 when the key's role does not allow the call.

The actor of an action is the key's name. `by` is honoured only from an admin key, and then
recorded as "A on behalf of B"; from the shared token (no name) `by` is recorded as given, as
before; from a read or write key a `by` other than its own name is refused (403).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from bridge.host.apikeys import KeyRing, allows
from bridge.http.errors import HttpError
from bridge.http.keys import ATTEMPTS, KEYRING, SESSIONS, SETTINGS
from bridge.http.sessions import COOKIE, Session
from bridge.http.util import tokens_equal

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a key's name (None: the shared token, or an open API), its role, and the
    hash of its key (None: no named key), by which a stream it opened ends when the key is
    revoked."""

    name: str | None
    role: str
    key_sha256: str | None = None

    def actor(self, by: object) -> object:
        """Who an action is recorded as (`by` from the request body, unchecked: the store
        validates it when it is the actor)."""
        if self.name is None:
            return by
        if by is None or by == "" or by == self.name:
            return self.name
        if self.role != "admin":
            raise HttpError(403, "forbidden",
                            f"key {self.name} may act only as itself (by: {self.name});"
                            " acting on behalf of someone needs an admin key")  # fmt: skip
        if not isinstance(by, str):
            return by  # the store names what is wrong with it
        return f"{self.name} on behalf of {by}"


OPEN = Principal(None, "admin")


def bearer(request: web.Request) -> str | None:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None


def identify(request: web.Request, token: str | None) -> Principal | None:
    """The principal a token stands for; None when it stands for none. OPEN when the API
    has neither keys nor a shared token."""
    shared = request.app[SETTINGS].server.api_token
    ring: KeyRing | None = request.app.get(KEYRING)
    if ring is not None and ring.error:
        log.error("keys file: %s (the last good keys stay in use)", ring.error)
        ring.error = None
    if shared is None and not ring:
        return OPEN
    if token is None:
        return None
    if shared is not None and tokens_equal(token, shared):
        return Principal(None, "admin")
    key = ring.find(token) if ring is not None else None
    return None if key is None else Principal(key.name, key.role, key.sha256)


def session_of(request: web.Request) -> Session | None:
    """The page's signed-in session (its cookie), if its key is still in force (a revoked
    key's sessions end at their next request)."""
    sessions = request.app.get(SESSIONS)
    if sessions is None:
        return None
    session = sessions.get(request.cookies.get(COOKIE))
    if session is not None and session.key_sha256 is not None:
        ring: KeyRing | None = request.app.get(KEYRING)
        if ring is None or ring.by_hash(session.key_sha256) is None:
            sessions.end_key(session.key_sha256)
            return None
    return session


def from_session(request: web.Request) -> Principal | None:
    session = session_of(request)
    return None if session is None else Principal(session.name, session.role, session.key_sha256)


def authorize(request: web.Request, needed: str) -> Principal:
    """The caller, if their token allows `needed` (read, write, admin); else 401 or 403.
    Reads (GET) also take the page's session cookie: that is how the page's script reads
    the event stream (an EventSource sends no Authorization); writes never do (no request
    a page elsewhere could make the browser send acts with the cookie)."""
    token = bearer(request)
    principal = identify(request, token)
    if principal is None and token is None and request.method in ("GET", "HEAD"):
        principal = from_session(request)
    if principal is None:
        attempts = request.app.get(ATTEMPTS)
        wait = None if token is None or attempts is None else attempts.failure(request.remote or "")
        if wait is not None:
            raise HttpError(429, "too_many_attempts",
                            "too many wrong tokens from this address; try again later",
                            headers={"Retry-After": str(int(wait))})  # fmt: skip
        raise HttpError(401, "unauthorized", "missing or invalid bearer token")
    if not allows(principal.role, needed):
        who = f"key {principal.name}" if principal.name else "this token"
        raise HttpError(403, "forbidden", f"{who} has role {principal.role}; this needs {needed}")
    return principal
