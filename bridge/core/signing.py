"""Signed links: an HMAC-SHA256 of what a link allows, with the key the store keeps for it
(records.KEPT_KEYS: signing_key), so that a link works on every replica and cannot be made
for anything else. A calendar feed's link allows reading that feed; an acknowledgement
link (AckLink), acknowledging one alert as one person until it expires: a GET of it shows
a confirmation page and changes nothing (link previews in Slack, Teams and mail scanners
fetch every URL), only the POST from that page acknowledges.

>>> key = bytes(32)
>>> mac = sign(key, "calendar", "schedules", "primary")
>>> valid(key, mac, "calendar", "schedules", "primary"), valid(key, mac, "calendar", "x")
(True, False)
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

#: Hex digits of a signature: 128 bits.
LENGTH = 32


def sign(key: bytes, *parts: str) -> str:
    """The signature of `parts` (joined by NUL: no part can run into the next)."""
    message = "\x00".join(parts).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:LENGTH]


def valid(key: bytes, signature: str, *parts: str) -> bool:
    """Whether `signature` is that of `parts` (in constant time)."""
    return signature.isascii() and hmac.compare_digest(sign(key, *parts), signature)


@dataclass(frozen=True, slots=True)
class AckLink:
    """What an acknowledgement link allows: acknowledging alert `alert_id` as `person` ("":
    whoever follows it, who then gives their name) until `expires` (seconds since the
    epoch). Its query string carries all of it and the signature."""

    alert_id: int
    person: str
    expires: int

    def parts(self) -> tuple[str, ...]:
        return ("ack", str(self.alert_id), self.person, str(self.expires))

    def url(self, base: str, key: bytes) -> str:
        query = urlencode({"person": self.person, "exp": self.expires,
                           "sig": sign(key, *self.parts())})  # fmt: skip
        return f"{base.rstrip('/')}/ack/{self.alert_id}?{query}"

    @classmethod
    def checked(cls, key: bytes, alert_id: int, query: Mapping[str, str], now: int) -> AckLink:
        """The link a request followed (its path's alert id and its query), once its
        signature and expiry are checked: LinkRefused naming why otherwise."""
        person, expires, signature = (query.get(k, "") for k in ("person", "exp", "sig"))
        if not (expires.isascii() and expires.isdigit()) or not signature:
            raise LinkRefused("This link is incomplete: open the one from the notification.")
        link = cls(alert_id, person, int(expires))
        if not valid(key, signature, *link.parts()):
            raise LinkRefused("This link is not one this bridge made (its signature does not"
                              " match): open the one from the notification.")  # fmt: skip
        if link.expires <= now // 1_000_000_000:
            raise LinkRefused("This link has expired: acknowledge from the alert's page or"
                              " with `alertbridge ack`.")  # fmt: skip
        return link


class LinkRefused(Exception):
    """A link that does not allow what it was followed for; the message says why, for a
    person."""


#: Slack: how far a request's timestamp may be from now, in seconds (its documentation's).
SLACK_MAX_SKEW = 300


def slack_signature_ok(secret: bytes, timestamp: str, body: bytes, signature: str,
                       now: int) -> str | None:  # fmt: skip
    """Why a request does not come from the Slack app with this signing secret (None: it
    does): `X-Slack-Signature` is "v0=" and the hex HMAC-SHA256 of "v0:TIMESTAMP:BODY",
    `X-Slack-Request-Timestamp` within SLACK_MAX_SKEW seconds of `now` (seconds).

    Slack's documented example:
    >>> body = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
    ...   b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
    ...   b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
    ...   b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id="
    ...   b"398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
    >>> slack_signature_ok(b"8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body,
    ...   "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503", 1531420618)
    """
    if not (timestamp.isascii() and timestamp.isdigit()):
        return "missing or malformed X-Slack-Request-Timestamp"
    if abs(now - int(timestamp)) > SLACK_MAX_SKEW:
        return f"X-Slack-Request-Timestamp is more than {SLACK_MAX_SKEW}s off: a replay?"
    expected = "v0=" + hmac.new(secret, b"v0:" + timestamp.encode() + b":" + body,
                                hashlib.sha256).hexdigest()  # fmt: skip
    if not signature.isascii() or not hmac.compare_digest(expected, signature.strip()):
        return "X-Slack-Signature does not match the body"
    return None
