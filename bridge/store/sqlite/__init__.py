"""The SQLite store: schema and migrations (`schema`), connections and the read budget
(`database`), the group-commit writer (`writer`), ingestion (`ingest`), the other writes
(`actions`), reads (`queries`), columnar reads for exports (`columnar`), and `SqliteStore`,
the interface over them (`store`)."""
