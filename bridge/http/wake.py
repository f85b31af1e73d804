"""Waking the reconciler after a change Alertmanager should hear of now (an ack's silence, an
unack's or a resolution's expiry, a reopened alert's view): this replica's own when it holds
the background lease, else the replica that does, through the store (PostgreSQL NOTIFY; the
leader listens: `listen`). Without it, an ack through a replica that does not lead waited for
the leader's next round, up to `alertmanager.reconcile_interval`."""

from __future__ import annotations

from aiohttp import web

from bridge.http.keys import LEADER, RECONCILER, STORE


async def kick_reconciler(app: web.Application) -> None:
    """Wake whichever replica reconciles, now."""
    reconciler, leader = app.get(RECONCILER), app.get(LEADER)
    if reconciler is not None and (leader is None or leader.held):
        reconciler.kick()
        return
    store = app.get(STORE)
    if store is not None:
        await store.wake_others()
