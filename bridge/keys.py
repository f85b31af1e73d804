"""Typed application keys shared by the aiohttp handlers and the app factory."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from bridge.alertmanager import Reconciler
from bridge.config import Settings
from bridge.notify import Notifier
from bridge.selfmetrics import BridgeMetrics
from bridge.server import ConnectionGuard
from bridge.store import Store
from bridge.telemetry import Telemetry
from bridge.writer import Writer

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", CollectorRegistry)
TELEMETRY = web.AppKey("telemetry", Telemetry)
METRICS = web.AppKey("metrics", BridgeMetrics)
STORE = web.AppKey("store", Store)
WRITER = web.AppKey("writer", Writer)
NOTIFIER = web.AppKey("notifier", Notifier)
RECONCILER = web.AppKey("reconciler", Reconciler)
GUARD = web.AppKey("guard", ConnectionGuard)
