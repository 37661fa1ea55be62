"""Password hashing with argon2id, off the event loop and bounded.

argon2 is deliberately slow and memory-hard (about 0.15 s and 64 MiB per check
with the default RFC 9106 low-memory profile), so every hash and verify runs in a
worker thread through :func:`asyncio.to_thread`, at most ``max_concurrent`` at a
time. Callers beyond that wait on a semaphore; beyond ``max_waiting`` waiters a
burst is refused with :class:`PasswordCheckBusy` instead of queueing without end.
Used from the event loop; the hasher itself is thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

log = logging.getLogger(__name__)

_T = TypeVar("_T")

MIN_LENGTH = 12
MAX_LENGTH = 1024
"""Longer inputs are refused before hashing: they only cost time."""


class PasswordCheckBusy(Exception):
    """Too many password checks are already waiting; try again shortly."""


def password_problem(password: str) -> str | None:
    """Why ``password`` is not acceptable as a new password, or ``None``."""
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"a password may have at most {MAX_LENGTH} characters"
    return None


class Passwords:
    """Hashes and verifies passwords with argon2id in bounded worker threads."""

    def __init__(
        self, hasher: PasswordHasher | None = None, *, max_concurrent: int = 2, max_waiting: int = 32
    ) -> None:
        self._hasher = hasher or PasswordHasher()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._max_waiting = max_waiting
        self._waiting = 0
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        """The encoded argon2id hash of ``password`` (with its salt and parameters)."""
        return await self._run(self._hasher.hash, password)

    async def verify(self, encoded: str, password: str) -> bool:
        """Whether ``password`` matches ``encoded``; a malformed hash is a mismatch."""
        if len(password) > MAX_LENGTH:
            await self.verify_dummy()
            return False
        return await self._run(self._verify_blocking, encoded, password)

    async def prepare(self) -> None:
        """Make the hash that :meth:`verify_dummy` checks against (call at start-up)."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))

    async def verify_dummy(self) -> None:
        """Spend the time of one verification, so an unknown user answers as slowly as a known one."""
        await self.prepare()
        assert self._dummy_hash is not None
        await self._run(self._verify_blocking, self._dummy_hash, secrets.token_urlsafe(16))

    def needs_rehash(self, encoded: str) -> bool:
        """Whether ``encoded`` was made with other parameters than the current ones."""
        try:
            return self._hasher.check_needs_rehash(encoded)
        except InvalidHashError:
            return True

    def _verify_blocking(self, encoded: str, password: str) -> bool:
        try:
            return self._hasher.verify(encoded, password)
        except VerificationError:
            return False
        except InvalidHashError:
            log.warning("a stored password hash is malformed; the login is refused")
            return False

    async def _run(self, func: Callable[..., _T], *args: str) -> _T:
        if self._waiting >= self._max_waiting:
            raise PasswordCheckBusy("too many logins at once; try again in a moment")
        self._waiting += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(func, *args)
        finally:
            self._waiting -= 1
