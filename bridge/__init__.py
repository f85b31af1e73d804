"""alertbridge: telemetry to Prometheus + Alertmanager, alerts back to durable storage."""

__version__ = "0.1.0"
