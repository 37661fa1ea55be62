"""A local append-only journal of records the database could not take.

Records are JSON objects, one a line, appended to ``current.jsonl`` in the
journal directory and flushed to the disk (``fsync``) before :meth:`Journal.append`
returns, so a record it accepted survives a crash. A line torn by a full disk is
cut off again at once; one torn by a crash is skipped, with a warning, when read.

Replaying takes the current file aside as a numbered segment (appends then start a
new current file) and hands out the segments oldest first; a segment is deleted
only after its records are safely in the database, and records carry their own
unique ids, so a replay cut short by a crash is simply run again.

The journal never creates its directory except in :meth:`open` (at start-up): if
the data directory is removed while running, appends fail instead of quietly
writing somewhere nobody looks. Methods are synchronous and thread-safe; the event
loop calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CURRENT = "current.jsonl"
MIN_FREE_BYTES = 64 * 1024
"""Below this much free space the journal does not count on being writable."""
SEGMENT_PREFIX = "replay-"


def _is_record_file(name: str) -> bool:
    return name == CURRENT or name.startswith(SEGMENT_PREFIX)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """See the module docstring."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()

    def open(self) -> None:
        """Create the directory (start-up only)."""
        self.directory.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        """Append ``record`` durably; ``OSError`` when the disk cannot take it."""
        line = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode()
        path = self.directory / CURRENT
        with self._lock:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                try:
                    written = os.write(fd, line)
                    if written != len(line):
                        raise OSError(28, "short write to the audit journal")  # ENOSPC
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, size)  # no torn line for the next record to follow
                    raise
            finally:
                os.close(fd)
            if size == 0:
                _fsync_dir(self.directory)

    def writable(self) -> bool:
        """Whether an append can be expected to succeed: the directory exists and is
        writable, on a file system mounted read-write with some space left."""
        try:
            found = os.statvfs(self.directory)
        except OSError:
            return False
        if found.f_flag & os.ST_RDONLY or found.f_bavail * found.f_frsize < MIN_FREE_BYTES:
            return False
        return os.access(self.directory, os.W_OK)

    def pending(self) -> bool:
        """True when records wait to be replayed (cheap: a directory listing)."""
        try:
            with os.scandir(self.directory) as entries:
                return any(_is_record_file(entry.name) for entry in entries)
        except OSError:
            return False

    def take(self) -> list[Path]:
        """Set the current file aside as a segment; every segment to replay, oldest first."""
        with self._lock:
            current = self.directory / CURRENT
            if current.exists():
                os.replace(current, self.directory / f"{SEGMENT_PREFIX}{time.time_ns():020d}.jsonl")
                _fsync_dir(self.directory)
        return sorted(self.directory.glob(f"{SEGMENT_PREFIX}*.jsonl"))

    @staticmethod
    def read(segment: Path) -> list[dict[str, Any]]:
        """The records of a segment; torn or foreign lines are skipped with a warning."""
        records: list[dict[str, Any]] = []
        with open(segment, "rb") as source:
            for number, raw in enumerate(source, start=1):
                try:
                    record = json.loads(raw)
                except ValueError:
                    record = None
                if isinstance(record, dict):
                    records.append(record)
                elif raw.strip():
                    log.warning("audit journal %s line %d is torn or not a record; skipped", segment, number)
        return records

    def done(self, segment: Path) -> None:
        """Delete a segment whose records are all in the database."""
        segment.unlink(missing_ok=True)
        _fsync_dir(self.directory)
