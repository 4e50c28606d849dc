"""PostgreSQL storage: pool, migrations, repositories.

Exceptions raised by this package:

- :class:`storage.migrate.MigrationError` - a migration file that changed after it was
  applied, or a database newer than this code.
- asyncpg's own ``PostgresError`` / ``ConnectionError`` subclasses pass through unchanged;
  callers retry what is retryable (:func:`storage.errors.is_transient`).
"""
