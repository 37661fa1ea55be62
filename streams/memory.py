"""Giving memory back to the system once nobody watches.

Viewers make the relay allocate a great deal of short-lived memory: every
WebRTC viewer builds a peer connection (DTLS and SRTP state, ICE sockets,
packets protected for it alone), every MSE viewer its fragments. When they
leave, that memory is freed but not returned: glibc gives a heap's pages back to
the system only from the heap's top, so a few live blocks above the freed ones
keep them all in the process, and reference cycles (aiortc's peer connections
are in several) wait for a full garbage collection that a service with many
long-lived objects runs rarely. The process then stays tens of megabytes above
where it was before the viewers came, for good.

:class:`MemoryTrimmer` watches the relay's viewer count. Once it has been zero for
``settle`` seconds after someone watched, it runs a full garbage collection and
glibc's ``malloc_trim(0)``, which also returns the free pages inside each heap;
once more ``follow_up`` seconds later, then every ``idle_interval`` seconds while
nobody watches. The follow-up is measured, not guessed: the cameras' ingest goes on
allocating and freeing, and its traffic lands anywhere in the freed heap, pulling
trimmed pages back in. In ``bench/soak.py`` (16 cameras after 8 minutes of churning
viewers) RSS stood 1.09 times its level before the viewers 2 s after the first trim,
climbed back to 1.13-1.21 within 10 s with no viewer connected, and a second trim
brought it to 1.04, where it held. Where the C library has no ``malloc_trim`` (musl,
macOS) only the collection runs. With viewers watching it does nothing: a
collection holds the event loop.

One task, owned by :class:`~streams.manager.StreamManager` (``start``, idempotent
``stop``). The collection runs on the event loop; ``malloc_trim`` in a worker
thread (it locks each heap in turn, never the interpreter).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MemoryTrimmer", "Trim", "malloc_trim_available"]

log = logging.getLogger(__name__)

LAST_VIEWER_LEFT = "last viewer left"
IDLE = "idle"


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


_MALLOC_TRIM = _load_malloc_trim()


def malloc_trim_available() -> bool:
    return _MALLOC_TRIM is not None


def _rss_bytes() -> int | None:
    """Resident memory of this process (Linux ``/proc``), or None."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True, slots=True)
class Trim:
    """One trim: why, what the collection found, and the resident memory around it."""

    reason: str
    """``last viewer left`` or ``idle``."""
    collected: int
    """Unreachable objects the full collection found."""
    trimmed: bool
    """True when ``malloc_trim`` ran (it exists in this C library)."""
    rss_before: int | None
    rss_after: int | None
    loop_seconds: float
    """How long the collection held the event loop."""


class MemoryTrimmer:
    """See the module docstring. ``viewers`` returns how many viewers the relay has now."""

    def __init__(
        self,
        viewers: Callable[[], int],
        *,
        settle: float = 2.0,
        follow_up: float = 20.0,
        idle_interval: float = 60.0,
        poll: float = 1.0,
    ) -> None:
        self._viewers = viewers
        self._settle = settle
        self._follow_up = follow_up
        self._idle_interval = idle_interval
        self._poll = min(poll, settle, follow_up, idle_interval)
        self._task: asyncio.Task[None] | None = None
        self._waiters: list[asyncio.Future[Trim]] = []
        self.trims = 0
        self.last: Trim | None = None
        self.watched = False
        """True once a viewer has been seen since the last trim: the next one is due when
        the relay has been without viewers for ``settle`` seconds."""

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="memory-trimmer")

    async def stop(self) -> None:
        """Stop watching. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for waiter in self._waiters:
            waiter.cancel()
        self._waiters.clear()

    async def next_trim(self) -> Trim:
        """Wait for the next trim and return it (for tests and diagnostics)."""
        waiter: asyncio.Future[Trim] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    async def trim(self, reason: str) -> Trim:
        """Collect garbage, then give the free heap pages back to the system; now."""
        before = _rss_bytes()
        started = time.perf_counter()
        collected = gc.collect()
        held = time.perf_counter() - started
        if _MALLOC_TRIM is not None:
            await asyncio.to_thread(_MALLOC_TRIM, 0)
        result = Trim(reason, collected, _MALLOC_TRIM is not None, before, _rss_bytes(), held)
        self.trims += 1
        self.last = result
        if result.rss_before is not None and result.rss_after is not None:
            log.info(
                "memory trimmed (%s): resident %.1f -> %.1f MB; the collection found %d "
                "unreachable objects in %.0f ms",
                reason,
                result.rss_before / 2**20,
                result.rss_after / 2**20,
                collected,
                held * 1000,
            )
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(result)
        return result

    async def _run(self) -> None:
        idle_since: float | None = None
        last_trim = time.monotonic()
        gap = self._idle_interval
        """Seconds from the last trim to the next one while nobody watches."""
        while True:
            await asyncio.sleep(self._poll)
            now = time.monotonic()
            if self._viewers() > 0:
                self.watched, idle_since = True, None
                continue
            if idle_since is None:
                idle_since = now
            if self.watched and now - idle_since >= self._settle:
                self.watched = False
                await self.trim(LAST_VIEWER_LEFT)
                last_trim, gap = time.monotonic(), self._follow_up
            elif not self.watched and now - last_trim >= gap:
                await self.trim(IDLE)
                last_trim, gap = time.monotonic(), self._idle_interval
