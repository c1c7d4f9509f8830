"""The SQLite store: the core's :class:`actors.ports.Store` kept in one file, its schema and
migrations, and the maintenance commands. It depends on the core alone."""
