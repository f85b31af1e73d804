"""The SQLite store: schema and migrations, the group-commit writer, jobs and queries."""
