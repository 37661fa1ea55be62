"""Persistent state: the database connection, its schema and its migrations."""

from vms.storage.database import Database, DatabaseError, advisory_lock, database_url

__all__ = ["Database", "DatabaseError", "advisory_lock", "database_url"]
