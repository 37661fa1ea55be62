"""Why the database refuses a write, in words an operator can act on.

:func:`fault_of` walks an exception (SQLAlchemy's wrapper, the driver's error,
the ``OSError`` below it) and names the fault: another process holds the lock,
the disk is full, the database is read-only, it does not answer, or its file was
removed or replaced. The names are the reasons ``/readyz`` gives and the text of
the 503 answers a refused write gets, so they never quote a URL or a password.
Pure functions, any thread.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

LOCKED = "the database is locked by another process"
DISK_FULL = "the disk is full"
READ_ONLY = "the database is read-only"
NO_ANSWER = "the database does not answer"
GONE = "the database file was removed or replaced"

MIN_FREE_BYTES = 256 * 1024
"""Below this much free space on the SQLite file's disk, the disk counts as full."""

_SQLSTATES = {
    "53100": DISK_FULL,  # disk_full
    "25006": READ_ONLY,  # read_only_sql_transaction
    "55P03": LOCKED,  # lock_not_available
    "57P01": NO_ANSWER,  # admin_shutdown
    "57P02": NO_ANSWER,  # crash_shutdown
    "57P03": NO_ANSWER,  # cannot_connect_now
}
_ERRNOS = {
    errno.ENOSPC: DISK_FULL,
    errno.EDQUOT: DISK_FULL,
    errno.EROFS: READ_ONLY,
    errno.EACCES: READ_ONLY,
    errno.EPERM: READ_ONLY,
    errno.ENOENT: GONE,
}
_MESSAGES = (
    ("database is locked", LOCKED),
    ("database table is locked", LOCKED),
    ("disk is full", DISK_FULL),
    ("no space left", DISK_FULL),
    ("readonly database", READ_ONLY),
    ("read-only", READ_ONLY),
    ("unable to open database file", GONE),
    ("connection was closed", NO_ANSWER),
    ("connection refused", NO_ANSWER),
    ("connection is closed", NO_ANSWER),
    ("the database system is", NO_ANSWER),  # ... shutting down / starting up
)


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err``, the driver error it wraps (``.orig``) and its causes, each once."""
    seen: set[int] = set()
    todo = [err]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nxt in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def fault_of(err: BaseException) -> str | None:
    """The named fault behind ``err``, or ``None`` when it is none of the known ones."""
    for current in _chain(err):
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str):
            if sqlstate in _SQLSTATES:
                return _SQLSTATES[sqlstate]
            if sqlstate.startswith("08"):  # connection exceptions
                return NO_ANSWER
        if isinstance(current, (TimeoutError, ConnectionError)):
            return NO_ANSWER
        if isinstance(current, OSError) and current.errno in _ERRNOS:
            return _ERRNOS[current.errno]
        text = str(current).lower()
        for needle, fault in _MESSAGES:
            if needle in text:
                return fault
    return None


def disk_fault(directory: Path, min_free_bytes: int = MIN_FREE_BYTES) -> str | None:
    """:data:`DISK_FULL` when the disk holding ``directory`` has less than ``min_free_bytes`` free."""
    try:
        found = os.statvfs(directory)
    except OSError:
        return None
    return DISK_FULL if found.f_bavail * found.f_frsize < min_free_bytes else None


def describe(err: BaseException, directory: Path | None = None) -> str:
    """The named fault, else a full disk under ``directory`` (SQLite says only "disk I/O
    error" when a full disk leaves no room for its shared memory), else a generic phrase
    with the error's type (never its text, which may quote SQL)."""
    found = fault_of(err) or (disk_fault(directory) if directory is not None else None)
    return found or f"the database refused the write ({type(err).__name__})"
