"""Audit rows for refused logins, summed so that a flood cannot flood the trail.

A locked-out address may send thousands of logins a second, each refused; one
audit row apiece filled the trail (3,000 requests, 3,006 rows in 11 s, kept for
months). :class:`RefusalAudit` writes at most one row per key and interval, a key
being (action, source address, targeted account or none, protocol: none for HTTP,
``rtsp`` for RTSP re-serve):

- the first refusal of a key is written at once, so an attack shows immediately;
- later ones within ``interval`` seconds are only counted; when the interval ends
  one summary row carries the count (``detail`` ``{"count": N, "detail": ...}``,
  ``started_at``/``ended_at`` the first and last refusal counted), and the key
  stays open for another interval; an interval with nothing counted closes it;
- memory is bounded: at most ``max_sources`` keys are open, refusals beyond that
  are counted under the key with no address (per action and target).

A refusal aimed at a real account (:class:`Target`) carries that account's centre,
so that centre's audit view shows it; one aimed at no account carries no centre,
and :data:`UNATTRIBUTED_ACTIONS` rows without a centre are shown to every centre's
administrators. Failed password checks are not summed here: the login limiter
bounds them to a few per address and account, and each keeps the name tried.

Event loop only. The summary task is started on the first count and owned here;
``stop()`` writes every pending count and is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from vms.audit import AuditError, AuditLog

log = logging.getLogger(__name__)

UNATTRIBUTED_ACTIONS = frozenset({"login_failure", "login_locked"})
"""Actions whose rows without a centre (aimed at no account) every centre's admins see."""
MAX_SOURCES = 4096
"""Keys with an address counted one by one; more share their action and target's key."""

_Key = tuple[str, str | None, str | None, str | None]


@dataclass(frozen=True, slots=True)
class Target:
    """The account a login aimed at."""

    username: str
    centre_id: str


@dataclass(slots=True)
class _Window:
    opened: float
    target: Target | None
    typed: str | None
    """The name typed, while every refusal counted typed the same (unknown accounts)."""
    detail: str = ""
    count: int = 0
    first: datetime | None = None
    last: datetime | None = None

    def add(self, typed: str, detail: str, at: datetime) -> None:
        if self.count and typed != self.typed:
            self.typed = None
        elif not self.count:
            self.typed = typed
        self.count += 1
        self.detail = detail
        self.first = self.first or at
        self.last = at


class RefusalAudit:
    """See the module docstring."""

    def __init__(
        self,
        audit: AuditLog,
        *,
        interval: float,
        max_sources: int = MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._audit = audit
        self._interval = interval
        self._max_sources = max_sources
        self._clock = clock
        self._windows: OrderedDict[_Key, _Window] = OrderedDict()
        """Open keys, the one whose interval ends first at the front."""
        self._addressed = 0
        """Open keys that name an address (at most ``max_sources``)."""
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def __len__(self) -> int:
        """Keys open (the memory held)."""
        return len(self._windows)

    def pending(self) -> int:
        """Refusals counted and not yet written."""
        return sum(window.count for window in self._windows.values())

    async def refused(
        self,
        action: str,
        *,
        source_addr: str | None,
        target: Target | None,
        typed: str,
        detail: str,
        protocol: str | None = None,
    ) -> None:
        """Note one refused login: written now if its key is new, else counted.
        After :meth:`stop`, every refusal is written at once."""
        now = datetime.now(UTC)
        key: _Key = (action, source_addr, target.username if target else None, protocol)
        if key not in self._windows and source_addr is not None and self._addressed >= self._max_sources:
            key = (action, None, key[2], protocol)
        window = self._windows.get(key)
        if window is not None:
            window.add(typed, detail, now)
            return
        if not self._stopping.is_set():
            self._open(key, _Window(self._clock(), target, typed))
            self._ensure_task()
        try:
            await self._write(key, target, typed, detail)
        except AuditError as err:
            if key not in self._windows:
                raise
            log.warning("%s; counted in the next summary", err)
            self._windows[key].add(typed, detail, now)

    async def stop(self) -> None:
        """Stop the summary task and write every pending count. Idempotent."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                task.cancel()
                raise
        await self._summarize(due_before=None)

    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="login-refusal-audit")

    def _open(self, key: _Key, window: _Window) -> None:
        self._windows[key] = window
        self._addressed += key[1] is not None

    def _close(self, key: _Key) -> _Window:
        self._addressed -= key[1] is not None
        return self._windows.pop(key)

    async def _run(self) -> None:
        while self._windows and not self._stopping.is_set():
            first = next(iter(self._windows.values()))
            delay = first.opened + self._interval - self._clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                continue
            await self._summarize(due_before=self._clock())

    async def _summarize(self, *, due_before: float | None) -> None:
        """Write the summaries of the windows whose interval ended before ``due_before``
        (all of them when None); reopen those that counted, close the others. A window
        leaves only once its summary is written."""
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if due_before is not None and window.opened + self._interval > due_before:
                return
            if window.count:
                try:
                    await self._write_summary(key, window)
                except AuditError as err:
                    if due_before is None:
                        log.error("%s: %d refused logins not recorded", err, window.count)
                    else:
                        log.warning("%s; retrying in %.0f s", err, self._interval)
                        self._close(key)
                        window.opened = self._clock()
                        self._open(key, window)
                        continue
            self._close(key)
            if window.count and due_before is not None:
                self._open(key, _Window(self._clock(), window.target, None))

    async def _write(self, key: _Key, target: Target | None, typed: str | None, detail: str) -> None:
        await self._audit.record(
            key[0],
            username=target.username if target else typed,
            centre_id=target.centre_id if target else None,
            source_addr=key[1],
            protocol=key[3],
            detail=detail,
        )

    async def _write_summary(self, key: _Key, window: _Window) -> None:
        target = window.target
        await self._audit.record(
            key[0],
            username=target.username if target else window.typed,
            centre_id=target.centre_id if target else None,
            source_addr=key[1],
            protocol=key[3],
            started_at=window.first,
            ended_at=window.last,
            detail={"count": window.count, "detail": window.detail},
        )
