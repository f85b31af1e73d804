"""alertbridge: telemetry to Prometheus + Alertmanager, alerts back to durable storage."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("alertbridge")  # the one source: pyproject.toml, as installed
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
