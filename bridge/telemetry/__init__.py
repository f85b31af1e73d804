"""The application's telemetry: the exporter and system sampler, the in-process evaluator of
the rules, and the embedded default that stores what it fires."""
