"""PostgreSQL storage: pool, migrations, repositories.

Exceptions raised by this package:

- :class:`storage.migrate.MigrationError` - a migration file that changed after it was
  applied, or a database newer than this code.
- :class:`storage.names.InvalidName` - a device id, metric or topic prefix that fails its
  pattern (PROTOCOL.md section 1); the one home of these names, re-exported by ``ingest.names``.
- asyncpg's own ``PostgresError`` / ``ConnectionError`` subclasses pass through unchanged;
  callers retry what is retryable (:func:`storage.errors.is_transient`).
"""
