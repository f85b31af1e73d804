"""Alert storage: the interface everything else uses, and its SQLite implementation."""
