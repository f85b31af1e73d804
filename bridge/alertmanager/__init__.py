"""Alertmanager's API v2: a client of a cluster of replicas, and the reconciler that keeps
silences and alert states in step with it."""
