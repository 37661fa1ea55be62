"""Failed-login counting and lockout, per username and per source address.

Sliding windows in memory: each key (a username as typed, lower-cased, or a
source address) keeps the times of its recent failures. ``max_failures`` within
``window`` seconds lock the key for ``lockout_seconds``; while either the
username or the address is locked, every login is refused, even with the right
password. Memory is bounded: stale keys are pruned, and beyond ``max_keys`` the
least recently failed keys are forgotten first. State is per process and lost on
restart, which is acceptable for throttling guessing.

Only touched from the event loop (no locking).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0
    last_failure: float = 0.0

    def stale(self, now: float, window: float) -> bool:
        return self.last_failure <= now - window and self.locked_until <= now


class LoginLimiter:
    """Counts failures per key and answers how long a login must wait."""

    def __init__(
        self,
        *,
        max_failures: int,
        window: float,
        lockout_seconds: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_failures = max_failures
        self._window = window
        self._lockout = lockout_seconds
        self._max_keys = max_keys
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        """Oldest failure first; an entry moves to the end on each failure."""

    @staticmethod
    def keys(username: str, source_addr: str | None) -> list[str]:
        """The counters a login from ``source_addr`` for ``username`` touches."""
        out = [f"user:{username.strip().lower()[:64]}"]
        if source_addr:
            out.append(f"addr:{source_addr}")
        return out

    def retry_after(self, username: str, source_addr: str | None) -> float:
        """Seconds until this login may be tried again; 0 when it may be tried now."""
        now = self._clock()
        waits = [
            entry.locked_until - now
            for key in self.keys(username, source_addr)
            if (entry := self._entries.get(key)) is not None
        ]
        return max([0.0, *waits])

    def record_failure(self, username: str, source_addr: str | None) -> None:
        """Count one failed login; lock any key that reaches the limit."""
        now = self._clock()
        for key in self.keys(username, source_addr):
            entry = self._entries.pop(key, None) or _Entry()
            self._entries[key] = entry
            entry.last_failure = now
            failures = entry.failures
            failures.append(now)
            while failures and failures[0] <= now - self._window:
                failures.popleft()
            if len(failures) >= self._max_failures:
                entry.locked_until = now + self._lockout
                failures.clear()
        self._prune(now)

    def record_success(self, username: str) -> None:
        """Forget the username's failures. The address keeps its count: one good
        account must not reset the guessing budget of a whole address."""
        entry = self._entries.get(self.keys(username, None)[0])
        if entry is not None and entry.locked_until <= self._clock():
            entry.failures.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _prune(self, now: float) -> None:
        while len(self._entries) > self._max_keys:
            self._entries.popitem(last=False)
        # Entries are ordered by last failure, so stale ones gather at the front
        # (a long lockout may shield a few behind it until it ends; max_keys still holds).
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if not entry.stale(now, self._window):
                break
            del self._entries[key]
