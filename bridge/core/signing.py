"""Signed links: an HMAC-SHA256 of what a link allows, with the key the store keeps for it
(records.KEPT_KEYS: signing_key), so that a link works on every replica and cannot be made
for anything else. A calendar feed's link allows reading that feed; an acknowledgement
link, acknowledging one alert as one person until it expires.

>>> key = bytes(32)
>>> mac = sign(key, "calendar", "schedules", "primary")
>>> valid(key, mac, "calendar", "schedules", "primary"), valid(key, mac, "calendar", "x")
(True, False)
"""

from __future__ import annotations

import hashlib
import hmac

#: Hex digits of a signature: 128 bits.
LENGTH = 32


def sign(key: bytes, *parts: str) -> str:
    """The signature of `parts` (joined by NUL: no part can run into the next)."""
    message = "\x00".join(parts).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:LENGTH]


def valid(key: bytes, signature: str, *parts: str) -> bool:
    """Whether `signature` is that of `parts` (in constant time)."""
    return signature.isascii() and hmac.compare_digest(sign(key, *parts), signature)
