"""Typed application keys shared by the aiohttp handlers and the app factory."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from bridge.alertmanager.reconciler import Reconciler
from bridge.config import Settings
from bridge.escalation.engine import Escalator
from bridge.escalation.heartbeat import Watchdog
from bridge.escalation.worker import WorkerProcess
from bridge.feed.consumer import FeedConsumer
from bridge.feed.hub import EventHub
from bridge.feed.notify import Notifier
from bridge.host.apikeys import KeyRing
from bridge.http.fanout import StreamWorker
from bridge.http.ratelimit import Attempts
from bridge.http.selfmetrics import BridgeMetrics
from bridge.http.server import ConnectionGuard
from bridge.http.sessions import Sessions
from bridge.store import AlertStore
from bridge.telemetry.exporter import Telemetry
from bridge.workers.leader import Leader

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", CollectorRegistry)
TELEMETRY = web.AppKey("telemetry", Telemetry)
METRICS = web.AppKey("metrics", BridgeMetrics)
STORE = web.AppKey("store", AlertStore)
#: The notifier's consumer of the feed of changes (when callbacks are registered).
FEED = web.AppKey("feed", FeedConsumer)
ENRICH_FEED = web.AppKey("enrich_feed", FeedConsumer)
NOTIFIER = web.AppKey("notifier", Notifier)
RECONCILER = web.AppKey("reconciler", Reconciler)
ESCALATOR = web.AppKey("escalator", Escalator)
ADAPTER_SESSION = web.AppKey("adapter_session", aiohttp.ClientSession)
WATCHDOG = web.AppKey("watchdog", Watchdog)
WORKER = web.AppKey("escalation_worker", WorkerProcess)
GUARD = web.AppKey("guard", ConnectionGuard)
#: The API keys (bridge.http.auth), reloaded when their file changes.
KEYRING = web.AppKey("keyring", KeyRing)
#: Sign-in sessions of the operators' page (bridge.http.pages).
SESSIONS = web.AppKey("sessions", Sessions)
#: The feed fanned out to live watchers (bridge.http.stream).
HUB = web.AppKey("event_hub", EventHub)
#: The process the live streams are handed to (bridge.http.fanout; `serve` only).
STREAM_WORKER = web.AppKey("stream_worker", StreamWorker)
#: The lease of the background work done once across replicas (bridge.workers.leader).
LEADER = web.AppKey("leader", Leader)
#: The limiter of attempts at credentials (sign-in, wrong bearer tokens).
ATTEMPTS = web.AppKey("attempts", Attempts)
