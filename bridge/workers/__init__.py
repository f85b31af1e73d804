"""The bridge's processes beside the server: one supervisor for its workers (the escalation
engine's, the event streams'), what ties a worker to its server (it dies with it, and notices
it gone), and the lease by which one replica of several does the background work."""
