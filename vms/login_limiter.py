"""Failed-login counting and lockout, per username and per source address.

Sliding windows in memory: each key (a username as typed, lower-cased, or a
source address) keeps the times of its recent failures. ``max_failures`` within
``window`` seconds lock the key for ``lockout_seconds``; while either the
username or the address is locked, every login is refused, even with the right
password. State is per process and lost on restart, which is acceptable for
throttling guessing.

Memory is bounded without ever forgetting an active lockout. At most ``max_keys``
keys are tracked one by one; when a new key needs a place:

1. stale keys go first (no failure within the window, no lockout);
2. then the least recently failed key that is only counting, unless it is the
   username of a real account (``known_user``): a flood of fresh names and
   addresses cannot reset the count against an account, nor any lockout;
3. when every tracked key is a lockout or a real account's count, the new key is
   not tracked alone but counted in one of ``overflow_slots`` shared buckets,
   chosen by a hash keyed with a per-process secret (so an attacker cannot aim at
   a bucket). A bucket locks like a key, so an untracked username or address still
   gets at most ``max_failures`` per window, sooner when it shares its bucket.
   Buckets are checked for untracked keys only, so a tracked key is never refused
   because of others.

Callers await :meth:`LoginLimiter.aretry_after`, :meth:`LoginLimiter.arecord_failure`
and :meth:`LoginLimiter.arecord_success`: here they are the plain methods, and
:class:`vms.shared_limiter.SharedLoginLimiter` (several instances on one PostgreSQL)
counts through the database behind the same names.

Only touched from the event loop (no locking).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_MAX_KEYS = 10_000
DEFAULT_OVERFLOW_SLOTS = 4096


@dataclass(slots=True)
class _Count:
    """Recent failures of one key (or one shared bucket) and its lockout, if any."""

    failures: list[float] = field(default_factory=list)
    """At most ``max_failures`` times, oldest first (a short list is smaller than a deque)."""
    locked_until: float = 0.0
    protected: bool = False
    """The username of a real account: never evicted while it counts."""

    def fail(self, now: float, window: float, limit: int, lockout: float) -> bool:
        """Count one failure at ``now``; True when this failure starts a lockout."""
        if self.locked_until > now:
            return False  # late failures of checks already running do not extend a lockout
        failures = self.failures
        failures.append(now)
        while failures and failures[0] <= now - window:
            del failures[0]
        if len(failures) < limit:
            return False
        failures.clear()
        self.locked_until = now + lockout
        return True

    def wait(self, now: float) -> float:
        return max(0.0, self.locked_until - now)

    def stale(self, now: float, window: float) -> bool:
        """Neither locked nor holding a failure within the window."""
        return self.locked_until <= now and not (self.failures and self.failures[-1] > now - window)


class LoginLimiter:
    """Counts failures per key and answers how long a login must wait."""

    def __init__(
        self,
        *,
        max_failures: int,
        window: float,
        lockout_seconds: float,
        max_keys: int = DEFAULT_MAX_KEYS,
        overflow_slots: int = DEFAULT_OVERFLOW_SLOTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_keys < 1 or overflow_slots < 1:
            raise ValueError("max_keys and overflow_slots must be at least 1")
        self._max_failures = max_failures
        self._window = window
        self._lockout = lockout_seconds
        self._max_keys = max_keys
        self._clock = clock
        self._counting: OrderedDict[str, _Count] = OrderedDict()
        """Keys with failures and no lockout, least recently failed first."""
        self._locked: OrderedDict[str, _Count] = OrderedDict()
        """Keys under a lockout, in the order they were locked: the lockout lasts the same
        for every key, so this is also the order in which they end."""
        self._slots: dict[int, _Count] = {}
        """The shared buckets in use, by number (at most ``overflow_slots``)."""
        self._overflow_slots = overflow_slots
        self._salt = secrets.token_bytes(16)

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
        return max([0.0, *(self._wait(key, now) for key in self.keys(username, source_addr))])

    def record_failure(self, username: str, source_addr: str | None, *, known_user: bool = False) -> None:
        """Count one failed login; lock any key that reaches the limit. ``known_user``: the
        username is a real account's, whose count is never evicted to make room."""
        now = self._clock()
        self._prune(now)
        user_key, *addr_key = self.keys(username, source_addr)
        self._fail(user_key, now, protect=known_user)
        for key in addr_key:
            self._fail(key, now, protect=False)

    def record_success(self, username: str) -> None:
        """Forget the username's failures. The address keeps its count: one good
        account must not reset the guessing budget of a whole address."""
        self._counting.pop(self.keys(username, None)[0], None)

    async def aretry_after(self, username: str, source_addr: str | None) -> float:
        """:meth:`retry_after`, for callers that also serve a limiter shared through a database."""
        return self.retry_after(username, source_addr)

    async def arecord_failure(
        self, username: str, source_addr: str | None, *, known_user: bool = False
    ) -> bool:
        """:meth:`record_failure`, for callers that also serve a limiter shared through a
        database. True when a lockout already held the username or the address: the
        failure came from a check that ran while the lockout began, and deserves the
        lockout's answer rather than a verdict on the password."""
        held = self.retry_after(username, source_addr) > 0
        self.record_failure(username, source_addr, known_user=known_user)
        return held

    async def arecord_success(self, username: str) -> None:
        """:meth:`record_success`, for callers that also serve a limiter shared through a database."""
        self.record_success(username)

    def __len__(self) -> int:
        """Keys tracked one by one (the shared buckets are not counted)."""
        return len(self._counting) + len(self._locked)

    def _wait(self, key: str, now: float) -> float:
        if (locked := self._locked.get(key)) is not None:
            return locked.wait(now)
        if key in self._counting:
            return 0.0
        slot = self._slots.get(self._slot_of(key))
        return 0.0 if slot is None else slot.wait(now)

    def _fail(self, key: str, now: float, *, protect: bool) -> None:
        if (locked := self._locked.get(key)) is not None and locked.wait(now) > 0:
            return
        count = self._counting.pop(key, None)
        if count is None:
            if not self._make_room():
                slot = self._slots.setdefault(self._slot_of(key), _Count())
                slot.fail(now, self._window, self._max_failures, self._lockout)
                return
            count = _Count()
        count.protected = count.protected or protect
        if count.fail(now, self._window, self._max_failures, self._lockout):
            self._locked.pop(key, None)
            self._locked[key] = count
        else:
            self._counting[key] = count

    def _make_room(self) -> bool:
        """Free a place for a new key if one is needed; False when none can be freed."""
        if len(self) < self._max_keys:
            return True
        # The protected counts are at most the number of accounts: a short scan.
        victim = next((key for key, count in self._counting.items() if not count.protected), None)
        if victim is None:
            return False
        del self._counting[victim]
        return True

    def _prune(self, now: float) -> None:
        while self._locked:
            key, count = next(iter(self._locked.items()))
            if count.wait(now) > 0:
                break
            del self._locked[key]
        # Ordered by last failure: stale counts gather at the front.
        while self._counting:
            key, count = next(iter(self._counting.items()))
            if not count.stale(now, self._window):
                break
            del self._counting[key]
        if self._slots and len(self) < self._max_keys:
            # Out of saturation: drop the buckets that neither lock nor count any more.
            self._slots = {n: c for n, c in self._slots.items() if not c.stale(now, self._window)}

    def _slot_of(self, key: str) -> int:
        digest = hashlib.blake2b(key.encode(), key=self._salt, digest_size=8).digest()
        return int.from_bytes(digest, "big") % self._overflow_slots
