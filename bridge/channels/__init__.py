"""Integrations the bridge delivers to itself, shaped like Alertmanager's notify/: one
package per integration behind one interface (`Channel`: check a receiver's configuration,
read its target, render a notification), the stages every delivery shares (`delivery`: the
target's secret file, the POST with its timeout, the timing), and the registry by receiver
type here. Adding an integration is one package and one line in CHANNELS.

- `msteams`: Microsoft Teams, which Alertmanager 0.25 lacks: Alertmanager notifies the
  bridge's adapter (POST /api/v1/adapters/msteams/RECEIVER), which posts a card;
- `webhook`: a notification in Alertmanager's webhook format, posted by the bridge itself
  (the dead man's switch tells its receiver directly: Alertmanager may be what broke)."""

from __future__ import annotations

from bridge.channels.base import Channel, ChannelConfigError
from bridge.channels.msteams import TEAMS
from bridge.channels.webhook import WEBHOOK

#: The integrations by receiver type.
CHANNELS: dict[str, Channel] = {c.type: c for c in (TEAMS, WEBHOOK)}

__all__ = ["CHANNELS", "Channel", "ChannelConfigError"]
