"""Persistent state: the database connection, its schema and its migrations."""

from vms.storage.database import Database, DatabaseError, database_url

__all__ = ["Database", "DatabaseError", "database_url"]
