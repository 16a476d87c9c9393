"""SQLite state (aiosqlite): schema, migrations, queries; artifact stores in `storage.artifacts`."""
