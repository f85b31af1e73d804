"""Escalation of what nobody acknowledges: the engine on the feed of changes (engine.py) and
its pure transitions (transitions.py); the policies themselves are configuration
(bridge.core.policies)."""
