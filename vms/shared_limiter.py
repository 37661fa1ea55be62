"""Failed-login counting shared by the instances of one PostgreSQL database.

Instances that each counted in memory would give an attacker one guessing budget per
instance. :class:`SharedLoginLimiter` counts in the table ``login_limits`` instead: one
row per key (:meth:`LoginLimiter.keys`) holding the failures within the window and the
lockout, changed by one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` per failed
login. The row is locked while it changes, so failures arriving together on two
instances are both counted and one of them starts the lockout. Windows and lockouts run
on the database's clock (``now()``): instances whose clocks disagree still agree on a
lockout, and what an instance keeps is only the remaining wait, on its monotonic clock.

Lockouts seen by this instance are cached and enforced without a query until they end.
Nothing shortens a lockout (a success forgets counts, never a lockout), so the cache is
never wrong, and a locked-out flood of refused logins costs the database nothing. The
cache holds at most ``max_keys`` entries; when full, the entry cached first goes (every
lockout lasts the same, so it ends first), which costs one query, never a lockout.

A database error, or a statement slower than ``timeout``, falls back to the in-memory
limiter this class extends, with its bounded memory: the failure is counted locally and
the check answers from the local counts and the cache. The fault locks nobody out, and
guessing stays within the local budget of each instance while it lasts. Failing closed
instead would turn a slow limiter statement into a lockout of whoever it touched, and
guard little: a password cannot be checked without the database that holds its hash.
While the database answers nothing is counted in memory: a success on another instance
forgets the username's shared count, and a local count unaware of it could lock out a
user who had just logged in.

The synchronous methods inherited from :class:`LoginLimiter` stay local (plus the cached
lockouts); the awaited ones (``aretry_after``, ``arecord_failure``, ``arecord_success``)
go through the database. Rows whose lockout ended and whose failures left the window are
deleted, at most ``prune_batch`` at a time, before every ``prune_every``-th failure
counted here: a failure adds at most two rows, so the deletions keep up.

Event loop only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.exc import SQLAlchemyError

from vms.config_access import AuthSettings
from vms.login_limiter import DEFAULT_MAX_KEYS, LoginLimiter
from vms.storage import Database

log = logging.getLogger(__name__)

QUERY_TIMEOUT = 2.0
"""Seconds a limiter statement may take before the local limiter answers instead."""
PRUNE_EVERY = 100
PRUNE_BATCH = 1000

_FAIL = text(
    """
    INSERT INTO login_limits AS l (key, failures, locked_until, expires_at)
    SELECT k,
           CASE WHEN :limit <= 1 THEN '{}' ELSE ARRAY[now()] END,
           CASE WHEN :limit <= 1 THEN now() + CAST(:lockout AS interval) END,
           now() + CASE WHEN :limit <= 1 THEN CAST(:lockout AS interval) ELSE CAST(:window AS interval) END
    FROM unnest(CAST(:keys AS varchar[])) AS k
    ON CONFLICT (key) DO UPDATE SET (failures, locked_until, expires_at) = (
        SELECT CASE WHEN l.locked_until > now() THEN l.failures
                    WHEN cardinality(c.kept) + 1 >= :limit THEN '{}'
                    ELSE c.kept || now() END,
               CASE WHEN l.locked_until > now() THEN l.locked_until
                    WHEN cardinality(c.kept) + 1 >= :limit THEN now() + CAST(:lockout AS interval) END,
               CASE WHEN l.locked_until > now() THEN l.expires_at
                    WHEN cardinality(c.kept) + 1 >= :limit THEN now() + CAST(:lockout AS interval)
                    ELSE now() + CAST(:window AS interval) END
        FROM (
            SELECT ARRAY(
                SELECT t FROM unnest(l.failures) AS t WHERE t > now() - CAST(:window AS interval)
            ) AS kept
        ) AS c
    )
    RETURNING key,
              CAST(EXTRACT(EPOCH FROM l.locked_until - now()) AS float8),
              l.locked_until = now() + CAST(:lockout AS interval)
    """
)
"""Count one failure against each key; return each key's remaining lockout (NULL or
negative: none) and whether this failure started it. Failures during a lockout neither
count nor extend it, as in memory."""

_WAITS = text(
    """
    SELECT key, CAST(EXTRACT(EPOCH FROM locked_until - now()) AS float8) FROM login_limits
    WHERE key = ANY(CAST(:keys AS varchar[])) AND locked_until > now()
    """
)
_FORGET = text(
    "DELETE FROM login_limits WHERE key = :key AND (locked_until IS NULL OR locked_until <= now())"
)
_PRUNE = text(
    """
    DELETE FROM login_limits WHERE key IN (
        SELECT key FROM login_limits WHERE expires_at <= now()
        ORDER BY expires_at LIMIT :batch FOR UPDATE SKIP LOCKED
    )
    """
)


class SharedLoginLimiter(LoginLimiter):
    """A :class:`LoginLimiter` whose awaited methods count in the shared database."""

    def __init__(
        self,
        db: Database,
        *,
        max_failures: int,
        window: float,
        lockout_seconds: float,
        max_keys: int = DEFAULT_MAX_KEYS,
        timeout: float = QUERY_TIMEOUT,
        prune_every: int = PRUNE_EVERY,
        prune_batch: int = PRUNE_BATCH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            max_failures=max_failures,
            window=window,
            lockout_seconds=lockout_seconds,
            max_keys=max_keys,
            clock=clock,
        )
        self._db = db
        self._limits = {
            "limit": max_failures,
            "window": timedelta(seconds=window),
            "lockout": timedelta(seconds=lockout_seconds),
        }
        self._timeout = timeout
        self._prune_every = prune_every
        self._prune_batch = prune_batch
        self._cache_size = max_keys
        self._seen: OrderedDict[str, float] = OrderedDict()
        """Lockouts read from the database: key to the end on this instance's clock."""
        self._counted = 0
        self._answering = True

    def retry_after(self, username: str, source_addr: str | None) -> float:
        """Seconds to wait by the local counts and the lockouts seen in the database."""
        now = self._clock()
        seen = (self._seen.get(key, now) - now for key in self.keys(username, source_addr))
        return max(super().retry_after(username, source_addr), *seen, 0.0)

    async def aretry_after(self, username: str, source_addr: str | None) -> float:
        """Seconds until this login may be tried again, asking the database unless a
        lockout is already known here."""
        wait = self.retry_after(username, source_addr)
        if wait > 0:
            return wait
        rows = await self._query(_WAITS, {"keys": self.keys(username, source_addr)})
        return wait if rows is None else self._remember([(key, left) for key, left in rows])

    async def arecord_failure(
        self, username: str, source_addr: str | None, *, known_user: bool = False
    ) -> bool:
        """Count one failed login in the database (locally when it cannot be reached); True
        when a lockout begun by an earlier failure already held (see the base class)."""
        if self._counted % self._prune_every == 0:
            await self._query(_PRUNE, {"batch": self._prune_batch})
        self._counted += 1
        rows = await self._query(_FAIL, {**self._limits, "keys": self.keys(username, source_addr)})
        if rows is None:
            return await super().arecord_failure(username, source_addr, known_user=known_user)
        self._remember([(key, left) for key, left, _ in rows])
        return any(left is not None and left > 0 and not started for _, left, started in rows)

    async def arecord_success(self, username: str) -> None:
        """Forget the username's failures, here and in the database (never a lockout)."""
        self.record_success(username)
        await self._query(_FORGET, {"key": self.keys(username, None)[0]})

    def __len__(self) -> int:
        """Keys held one by one: the local counts and the cached lockouts."""
        return super().__len__() + len(self._seen)

    def _remember(self, rows: Sequence[tuple[str, float | None]]) -> float:
        """Cache the lockouts among ``rows`` (key, seconds left); the longest wait."""
        now = self._clock()
        longest = 0.0
        for key, left in rows:
            if left is None or left <= 0:
                continue
            longest = max(longest, left)
            self._seen.pop(key, None)
            self._seen[key] = now + left
        while self._seen and (len(self._seen) > self._cache_size or next(iter(self._seen.values())) <= now):
            self._seen.popitem(last=False)
        return longest

    async def _query(self, statement: TextClause, params: Mapping[str, object]) -> list[Any] | None:
        """The rows ``statement`` returns (none for a DELETE); None when the database failed."""
        try:
            async with asyncio.timeout(self._timeout), self._db.engine.begin() as conn:
                result = await conn.execute(statement, params)
                rows = [tuple(row) for row in result] if result.returns_rows else []
        except (SQLAlchemyError, OSError, TimeoutError) as err:
            if self._answering:
                log.warning("login limits: the database failed (%s); counting locally", type(err).__name__)
            self._answering = False
            return None
        if not self._answering:
            log.info("login limits: the database answers again; counting there")
        self._answering = True
        return rows


def login_limiter(db: Database, settings: AuthSettings) -> LoginLimiter:
    """The limiter for ``db``: shared through the database on PostgreSQL, in memory on SQLite."""
    if db.dialect == "postgresql":
        return SharedLoginLimiter(
            db,
            max_failures=settings.max_failed_logins,
            window=settings.failure_window,
            lockout_seconds=settings.lockout_seconds,
        )
    return LoginLimiter(
        max_failures=settings.max_failed_logins,
        window=settings.failure_window,
        lockout_seconds=settings.lockout_seconds,
    )
