"""Export: the alert history (alerts, events) and telemetry to Parquet, CSV or JSON Lines,
anonymised by default, to a file replaced atomically or to standard output.

Modules: `anonymize` (pseudonyms, the scrubber), `columns` (reading and transforming Arrow
batches), `writers` (the three formats), `output` (where it goes), `history` (alerts and
events), `telemetry` (points from Prometheus). Nothing is imported here: the modules that
need pyarrow (and numpy) load where an export runs, not in the server nor in every command
(tests/test_cli.py checks it).
"""
