"""The interface of an integration the bridge delivers to (bridge.channels)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from bridge.core.alerts import Notification


class ChannelConfigError(ValueError):
    """A receiver's configuration this integration cannot use: `field` (under the receiver's
    `config`) and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Channel(Protocol):
    #: The receiver type it delivers (alertmanager.receivers[].type).
    type: str
    #: Alertmanager 0.25 cannot deliver it: Alertmanager notifies the bridge's adapter,
    #: POST /api/v1/adapters/TYPE/RECEIVER, and the bridge delivers.
    adapter: bool
    #: Its name in messages ("Teams").
    title: str

    def validate(self, config: Mapping[str, Any]) -> None:
        """ChannelConfigError when a receiver of this type cannot be delivered to with
        `config` (checked when the configuration loads)."""
        ...

    def target(self, config: Mapping[str, Any]) -> str:
        """Where to post (read now from its secret file: a rotated secret needs no restart);
        delivery.TargetError naming the file, never the URL, when it cannot be read."""
        ...

    def render(self, notification: Notification, ids: Mapping[str, int],
               public_url: str | None) -> dict[str, Any]:  # fmt: skip
        """The message for a notification (`ids`: the bridge's alert ids by fingerprint)."""
        ...
