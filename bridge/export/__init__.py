"""Export: the alert history (alerts, events) and telemetry to Parquet, CSV or JSON Lines,
anonymised by default, to a file replaced atomically or to standard output.

Modules: `anonymize` (pseudonyms, the scrubber), `columns` (reading and transforming Arrow
batches), `writers` (the three formats), `output` (where it goes), `history` (alerts and
events), `telemetry` (points from Prometheus).
"""

from bridge.export.anonymize import ALLOWED_LABELS, Anonymizer, Scrubber, text_forms
from bridge.export.columns import ALERT_SCHEMA, EVENT_SCHEMA
from bridge.export.history import (
    WHAT,
    ExportResult,
    MissingKey,
    anonymizer_for,
    export_history,
    export_key,
)
from bridge.export.output import STDOUT, Destination
from bridge.export.writers import FORMATS

__all__ = [
    "ALERT_SCHEMA",
    "ALLOWED_LABELS",
    "EVENT_SCHEMA",
    "FORMATS",
    "STDOUT",
    "WHAT",
    "Anonymizer",
    "Destination",
    "ExportResult",
    "MissingKey",
    "Scrubber",
    "anonymizer_for",
    "export_history",
    "export_key",
    "text_forms",
]
