"""HTTP plumbing shared by the handlers: JSON errors, the error middleware, auth, JSON bodies,
and the checks that keep a browser page from using the API (Host, Origin, Content-Type)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestPayloadError

from bridge.config import Secret
from bridge.core.errors import BridgeError, InvalidInput
from bridge.http.errors import HttpError, answer, error_response

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Seconds a client has to send a request body (set by the app; read_json enforces it).
BODY_TIMEOUT = web.AppKey("body_timeout", float)
#: Host names (besides IP literals and localhost) requests may be addressed to; "*": any.
ALLOWED_HOSTS = web.AppKey("allowed_hosts", frozenset)


def make_errors_middleware(max_body_bytes: int) -> Any:
    """The middleware mapping domain errors (bridge.http.errors.answer) and aiohttp's HTTP
    errors to JSON, never internals; it runs check_same_origin first, so that its refusals
    take the same form."""

    @web.middleware
    async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            check_same_origin(request)
            return await handler(request)
        except BridgeError as exc:
            found = answer(exc)
            if found is None:
                log.exception("unhandled error in %s %s", request.method, request.path)
                return error_response(500, "internal", "internal error")
            status, code, message, field = found
            response = error_response(status, code, message, field)
            if isinstance(exc, HttpError):
                response.headers.update(exc.headers)
            if status == 408:  # the rest of the body may still come: do not read it
                response.force_close()
            return response
        except web.HTTPRequestEntityTooLarge:
            message = f"request body exceeds {max_body_bytes} bytes"
            return error_response(413, "too_large", message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error_response(exc.status, exc.reason.lower().replace(" ", "_"),
                                      exc.reason)  # fmt: skip
            if "Allow" in exc.headers:  # 405: the methods the resource has (RFC 9110)
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except Exception:
            # Log the traceback, never the request body or headers (they may hold secrets).
            log.exception("unhandled error in %s %s", request.method, request.path)
            return error_response(500, "internal", "internal error")

    return errors_middleware


class BodyBudget:
    """The bytes of request bodies in flight, server-wide, and their budget: a body that would
    pass it waits for none and is answered 503 (Alertmanager retries a 5xx; a 413 it would
    post again every group_interval, forever). The first body in flight is always taken, so
    that any body up to the size limit gets through; one without a Content-Length counts as
    the size limit (the most it can be).

    >>> budget = BodyBudget(limit=10, max_body=8)
    >>> budget.in_flight, budget.limit
    (0, 10)
    """

    def __init__(
        self, limit: int, max_body: int, on_busy: Callable[[], None] | None = None
    ) -> None:
        self.limit = limit
        self.max_body = max_body
        self.in_flight = 0
        self._on_busy = on_busy or (lambda: None)

    @contextlib.asynccontextmanager
    async def held(self, request: web.BaseRequest) -> AsyncIterator[None]:
        length = request.content_length
        size = self.max_body if length is None else min(length, self.max_body)
        if self.in_flight and self.in_flight + size > self.limit:
            self._on_busy()
            raise HttpError(
                503, "busy",
                f"{self.in_flight} bytes of notifications are being stored"
                f" (server.max_bodies_in_flight_bytes {self.limit}); retry",
            )  # fmt: skip
        self.in_flight += size
        try:
            yield
        finally:
            self.in_flight -= size


#: The budget of webhook bodies in flight (set by the app; the webhook holds it).
BODIES = web.AppKey("bodies", BodyBudget)
#: The share of bodies read before their sender is known (a Grafana signature, checked once
#: read): a quarter of the budget, at least one body; apart from BODIES.
SIGNED_BODIES = web.AppKey("signed_bodies", BodyBudget)


def tokens_equal(given: str, expected: Secret) -> bool:
    """Constant-time comparison of a presented credential with the secret."""
    try:
        data = given.encode()
    except UnicodeEncodeError:
        # aiohttp decodes header bytes that are not UTF-8 as surrogates: encode them back,
        # so that a stray byte is a wrong token (401), not an encoding error.
        data = given.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(data, expected.data)


async def read_json(request: web.Request) -> Any:
    """The request body as JSON (read_body, then decode_json)."""
    return decode_json(await read_body(request))


async def read_body(request: web.Request) -> bytes:
    """The body of a JSON request: 415 unless declared JSON, 408 when it does not arrive
    within the body timeout, 413 when too large, 400 when it cannot be read (bad chunking, a
    Content-Encoding it does not have)."""
    declared = request.headers.get("Content-Type")  # as Alertmanager sends it: no parsing
    if declared != "application/json" and request.content_type != "application/json":
        raise HttpError(
            415, "unsupported_media_type",
            f"Content-Type must be application/json, got {request.content_type!r:.80}",
        )  # fmt: skip
    try:
        if request.content.is_eof():  # the whole body came with the head: no timer needed
            return await request.read()
        async with asyncio.timeout(request.app.get(BODY_TIMEOUT, 10.0)):
            return await request.read()
    except TimeoutError:
        # End the body here: aiohttp would otherwise go on reading what is left of it for up
        # to 10 s after the answer, which is what the timeout is against.
        request.content.feed_eof()
        raise HttpError(408, "body_timeout", "the request body did not arrive in time") from None
    except (http_exceptions.BadHttpMessage, RequestPayloadError) as exc:
        # The rest of the body cannot be read either: end it, or aiohttp would try to drain
        # it after the answer.
        request.content.feed_eof()
        reason = getattr(exc.__cause__, "message", None) or getattr(exc, "message", None)
        raise InvalidInput("body", f"cannot be read: {str(reason or exc).strip()[:200]}") from None


def decode_json(raw: bytes) -> Any:
    """JSON: 400 for bad UTF-8 or malformed JSON. orjson is strict RFC 8259: NaN/Infinity
    literals and integers beyond 64 bits are malformed."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise InvalidInput("body", f"not valid UTF-8 at byte {bad.start}") from None
        raise InvalidInput("body", f"malformed JSON: {exc.msg} at line {exc.lineno}") from None


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON response encoded with orjson."""
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def host_name(authority: str) -> str:
    """The host of a Host header or URL authority, lower case, without port or final dot.

    >>> host_name("[::1]:9470"), host_name("Bridge.Example.:80")
    ('::1', 'bridge.example')
    """
    text = authority.strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    name, colon, port = text.rpartition(":")
    if colon and port.isascii() and port.isdigit() and ":" not in name:
        text = name
    return text.rstrip(".")


@functools.lru_cache(maxsize=1024)
def host_allowed(authority: str, allowed: frozenset[str]) -> bool:
    """Whether a request addressed to `authority` may be served.

    IP literals and localhost are always allowed: DNS rebinding needs a name the attacker
    controls, which a browser then sends as Host; an address cannot be rebound.
    """
    if "*" in allowed or not authority:
        return True
    host = host_name(authority)
    if host == "localhost" or host.endswith(".localhost") or host in allowed:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def allowed_hosts(names: Iterable[str], urls: Iterable[str]) -> frozenset[str]:
    """The configured names plus the hosts of URLs the generated configs address us by."""
    hosts = {n.strip().lower().rstrip(".") for n in names}
    for url in urls:
        authority = urlsplit(url if "//" in url else f"//{url}").netloc
        if authority:
            hosts.add(host_name(authority.rpartition("@")[2]))
    return frozenset(hosts)


_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def check_same_origin(request: web.Request) -> None:
    """Refuse requests addressed to a foreign Host name (DNS rebinding) and state-changing
    requests a browser sends from another origin (cross-site request forgery)."""
    host = request.headers.get("Host", "")
    if not host_allowed(host, request.app[ALLOWED_HOSTS]):
        log.warning("refused a request for host %r (not in server.allowed_hosts)", host[:100])
        raise HttpError(
            403, "host_not_allowed",
            f"requests for host {host_name(host)[:100]!r} are not served; add the name to"
            " server.allowed_hosts",
        )  # fmt: skip
    if request.method in _UNSAFE:
        origin = request.headers.get("Origin")
        if origin is not None:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.lower():
                raise HttpError(403, "cross_origin", f"cross-origin request from {origin[:100]!r}")
        elif request.headers.get("Sec-Fetch-Site") == "cross-site":
            raise HttpError(403, "cross_origin", "cross-site request")
