"""SQLite state (aiosqlite): schema, migrations, queries. Artifact stores join here later."""
