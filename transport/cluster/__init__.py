"""The clustered mode: conversations kept in Valkey (or Redis >= 7.2), partitioned, each
partition owned by one node at a time under a lease with a fencing token (docs/cluster.md).

Depends on the core only, like the SQLite store: the runtime chooses it from the config.
"""
