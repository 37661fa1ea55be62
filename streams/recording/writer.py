"""The writer thread of one recorder: files, ``fdatasync``, hashing, and the final rename.

The recorder (event loop) hands :mod:`~streams.recording.segmenter` steps to
:meth:`SegmentWriter.put` and, after each batch, calls :meth:`SegmentWriter.flush`;
one thread per recorder then takes everything queued, in order (at once also for
opening and closing a segment, when :data:`FLUSH_BYTES` are queued, or when
unsynced data is due), and writes the fragments with one plain ``os.write`` on an
unbuffered file descriptor, so they reach the kernel at each flush. It calls
``fdatasync`` at least every ``sync_interval`` seconds while data is unsynced
(also when no more comes). The file's SHA-256 is updated with each write that
succeeded. Waking the thread a few times a second rather than for every fragment
is what makes the writer cheap: handing 25 to 50 fragments a second per camera to
a thread one at a time cost more than writing them (``bench/record.py --overhead``).

The queue is bounded in bytes: :meth:`SegmentWriter.put` refuses a fragment
that would take it over ``max_pending`` (the recorder then drops to the next
keyframe and counts it); opening and closing steps always go in. Nothing here
ever blocks the event loop.

Closing a segment: ``fsync`` the file, rename ``.mp4.part`` to ``.mp4``, ``fsync``
the directory. A write that fails (disk full, read-only, gone) ends the open
segment at its last complete fragment: the file is cut back there, closed like
any other, and the failure is reported; later fragments are thrown away until
the recorder opens a new segment. When even that cleanup fails, the ``.part``
file is left for crash recovery.

Results go to the event loop, one way, through ``call_soon_threadsafe``:
``on_opened(path, meta)`` (the final name), ``on_closed(info)`` and ``on_failed(error)``.

Threads: ``put`` and ``stop`` on the event loop; everything else on the writer thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from streams.packets import CLOCK_RATE
from streams.recording.events import SegmentInfo
from streams.recording.layout import PART_SUFFIX, SegmentMetadata, to_millis
from streams.recording.segmenter import Data, Open, Step
from streams.specs import StreamName

__all__ = ["DEFAULT_MAX_PENDING", "FLUSH_BYTES", "SegmentWriter", "fsync_directory"]

log = logging.getLogger(__name__)

DEFAULT_MAX_PENDING = 8 * 1024 * 1024
"""Bytes of fragments queued for the writer thread at most (16 s of a 4 Mbit/s camera)."""
FLUSH_BYTES = 1024 * 1024
"""Queued fragment bytes that wake the thread before a flush."""
_STOP_TIMEOUT = 10.0


def fsync_directory(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class _File:
    fd: int
    path: Path
    """The final name; the file is ``path + .part`` until it is closed."""
    meta: SegmentMetadata
    hash: hashlib._Hash
    size: int = 0
    complete: int = 0
    """Bytes up to the end of the last whole fragment (or of the head)."""
    fragments: int = 0
    end: int = 0
    synced: bool = True

    @property
    def part(self) -> Path:
        return self.path.with_name(self.path.name + PART_SUFFIX)


class SegmentWriter:
    """One recorder's writer thread. See the module docstring."""

    def __init__(
        self,
        name: str,
        camera_id: str,
        stream: StreamName,
        *,
        sync_interval: float,
        on_opened: Callable[[Path, SegmentMetadata], None],
        on_closed: Callable[[SegmentInfo], None],
        on_failed: Callable[[OSError], None],
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.name = name
        self._camera_id, self._stream = camera_id, stream
        self._sync_interval = sync_interval
        self._on_opened, self._on_closed, self._on_failed = on_opened, on_closed, on_failed
        self._max_pending = max_pending
        self._urgent = False
        """Take what is queued now: flushed, a segment opens or closes, or FLUSH_BYTES are queued."""
        self._steps: collections.deque[Step | None] = collections.deque()
        self._pending = 0
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._file: _File | None = None
        self._last_sync = 0.0
        self.bytes_written = 0
        self.discarded = 0
        """Fragments thrown away on the thread because no segment was open (after a failure)."""

    @property
    def pending(self) -> int:
        """Bytes of fragments queued and not yet written."""
        return self._pending

    def start(self) -> None:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._run, name=f"record {self.name}", daemon=True)
            self._thread.start()

    def put(self, step: Step) -> bool:
        """Queue a step; False (and nothing queued) when a fragment would overfill the queue."""
        size = len(step.data) if isinstance(step, Data) else 0
        with self._cond:
            if size and self._pending + size > self._max_pending:
                return False
            self._pending += size
            self._steps.append(step)
            if not size or self._pending >= FLUSH_BYTES:
                self._urgent = True
                self._cond.notify()
        return True

    def flush(self) -> None:
        """Have the thread write what is queued now."""
        with self._cond:
            if self._steps:
                self._urgent = True
                self._cond.notify()

    async def stop(self) -> None:
        """Write what is queued, close the open segment, end the thread. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        with self._cond:
            self._steps.append(None)
            self._cond.notify()
        await asyncio.to_thread(thread.join, _STOP_TIMEOUT)
        if thread.is_alive():
            log.error("%s: the writer thread did not finish in %.0f s", self.name, _STOP_TIMEOUT)

    # -- the writer thread ------------------------------------------------------

    def _report(self, callback: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                loop.call_soon_threadsafe(callback, *args)

    def _next(self) -> list[Step | None]:
        """The steps queued, once it is time to take them (see the module docstring); an empty
        ``Data`` when nothing came before unsynced data was due: a chance to sync."""
        with self._cond:
            while True:
                file = self._file
                unsynced = file is not None and not file.synced
                due = self._last_sync + self._sync_interval - time.monotonic()
                if self._steps and (self._urgent or (unsynced and due <= 0)):
                    break
                if unsynced and due <= 0:
                    return [Data(b"", None, False)]
                if unsynced or self._steps:  # queued but not flushed: written when due at the latest
                    self._cond.wait(max(due, 0.0) if unsynced else self._sync_interval)
                    if not unsynced and self._steps and not self._urgent:
                        break
                else:
                    self._cond.wait()
            steps = list(self._steps)
            self._steps.clear()
            self._pending = 0
            self._urgent = False
            return steps

    def _run(self) -> None:
        while True:
            steps = self._next()
            fragments: list[Data] = []
            for step in steps:
                if isinstance(step, Data):
                    fragments.append(step)
                    continue
                if fragments:
                    self._guarded(self._write, fragments)
                    fragments = []
                if step is None:
                    self._guarded(self._close)
                    return
                if isinstance(step, Open):
                    self._guarded(self._close)
                    self._guarded(self._open, step)
                else:
                    self._guarded(self._close)
            if fragments:
                self._guarded(self._write, fragments)

    def _guarded(self, action: Callable[..., None], *args: object) -> None:
        try:
            action(*args)
        except OSError as err:
            self._fail(err)

    def _open(self, step: Open) -> None:
        step.path.parent.mkdir(parents=True, exist_ok=True)
        part = step.path.with_name(step.path.name + PART_SUFFIX)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        self._file = file = _File(fd, step.path, step.meta, hashlib.sha256(), end=step.meta.media_start)
        self._append(file, step.head)
        os.fdatasync(fd)
        fsync_directory(part.parent)
        self._last_sync = time.monotonic()
        file.complete = file.size
        self._report(self._on_opened, step.path, step.meta)

    def _append(self, file: _File, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(file.fd, view)
            file.size += written
            self.bytes_written += written
            view = view[written:]
        file.hash.update(data)
        file.synced = False

    def _write(self, steps: list[Data]) -> None:
        """Append fragments (one ``os.write`` for all), then sync if it is time."""
        file = self._file
        data = [step.data for step in steps if step.data]
        if file is None:
            self.discarded += len(data)
            return
        if data:
            self._append(file, data[0] if len(data) == 1 else b"".join(data))
            file.complete = file.size
            file.fragments += len(data)
            ends = [step.end for step in steps if step.end is not None]
            if ends:
                file.end = ends[-1]
        if not file.synced and time.monotonic() - self._last_sync >= self._sync_interval:
            os.fdatasync(file.fd)
            file.synced = True
            self._last_sync = time.monotonic()

    def _close(self) -> None:
        file, self._file = self._file, None
        if file is None:
            return
        try:
            if not file.fragments:  # only the head: nothing recorded
                os.close(file.fd)
                file.fd = -1
                file.part.unlink()
                return
            os.fsync(file.fd)
            os.close(file.fd)
            file.fd = -1
            file.part.rename(file.path)
            fsync_directory(file.path.parent)
        finally:
            if file.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(file.fd)
                file.fd = -1
        meta = file.meta
        end = to_millis(meta.start + timedelta(seconds=(file.end - meta.media_start) / CLOCK_RATE))
        self._report(self._on_closed, SegmentInfo(
            self._camera_id, self._stream, file.path, meta.start, end, file.size,
            meta.codec, meta.audio, file.hash.hexdigest(),
        ))  # fmt: skip

    def _fail(self, err: OSError) -> None:
        """A write failed: keep what was complete, close it, report."""
        file = self._file
        if file is not None and file.fd >= 0:
            try:
                if file.size != file.complete:  # the partial fragment would not match the hash
                    os.ftruncate(file.fd, file.complete)
                    file.size = file.complete
                self._close()
            except OSError as cleanup:
                log.warning("%s: %s left for recovery: %s", self.name, file.part.name, cleanup)
        if file is not None and file.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(file.fd)
            file.fd = -1
        self._file = None
        self._report(self._on_failed, err)
