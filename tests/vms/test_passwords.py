"""argon2id hashing off the event loop: results, parameter upgrades, bounded concurrency."""

from __future__ import annotations

import asyncio
import logging
import statistics
import threading
import time
from typing import Any, Literal

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from tests.vms.auth_fixtures import PASSWORD, light_passwords, make_config
from vms import users
from vms.audit import AuditLog
from vms.auth import AuthService
from vms.passwords import MAX_LENGTH, PasswordCheckBusy, Passwords, password_problem
from vms.storage import Database
from vms.storage.tables import User


class GatedHasher(PasswordHasher):
    """A real argon2 hasher that records how many checks run at once, and can hold them."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.gate = threading.Event()
        self.gate.set()

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if not self.gate.wait(10):
                raise TimeoutError("the test never opened the gate")
            return super().verify(hash, password)
        finally:
            with self.lock:
                self.active -= 1


async def test_hash_and_verify_with_the_default_profile() -> None:
    passwords = Passwords()
    encoded = await passwords.hash(PASSWORD)
    assert encoded.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PASSWORD not in encoded
    assert await passwords.verify(encoded, PASSWORD)
    assert not await passwords.verify(encoded, PASSWORD + "!")
    assert not passwords.needs_rehash(encoded)


async def test_malformed_hash_is_a_mismatch(caplog: pytest.LogCaptureFixture) -> None:
    passwords = light_passwords()
    assert not await passwords.verify("not-a-hash", PASSWORD)
    assert not await passwords.verify(await passwords.hash(PASSWORD), "x" * (MAX_LENGTH + 1))
    assert "malformed" in caplog.text
    assert passwords.needs_rehash("not-a-hash")


async def test_weaker_hashes_need_a_rehash() -> None:
    weak = await light_passwords().hash(PASSWORD)
    assert Passwords().needs_rehash(weak)
    assert not light_passwords().needs_rehash(weak)


def test_password_policy() -> None:
    assert password_problem("eleven char") is not None
    assert password_problem("twelve chars") is None
    assert password_problem("x" * (MAX_LENGTH + 1)) is not None


async def test_checks_run_in_bounded_threads_and_the_loop_stays_free() -> None:
    hasher = GatedHasher(time_cost=1, memory_cost=16 * 1024, parallelism=1)
    passwords = Passwords(hasher, max_concurrent=2)
    encoded = await passwords.hash(PASSWORD)
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        results = await asyncio.gather(*(passwords.verify(encoded, PASSWORD) for _ in range(8)))
    finally:
        stop.set()
        await tick
    assert results == [True] * 8
    assert hasher.peak == 2
    assert max(gaps) < 0.1, f"the event loop stalled for {max(gaps):.3f} s"


async def test_a_burst_beyond_the_waiting_room_is_refused() -> None:
    hasher = GatedHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    passwords = Passwords(hasher, max_concurrent=1, max_waiting=3)
    encoded = await passwords.hash(PASSWORD)
    hasher.gate.clear()
    checks = [asyncio.create_task(passwords.verify(encoded, PASSWORD)) for _ in range(5)]
    try:
        results = await asyncio.wait_for(asyncio.gather(*checks[3:], return_exceptions=True), 5)
        assert all(isinstance(r, PasswordCheckBusy) for r in results)
    finally:
        hasher.gate.set()
        done = await asyncio.wait_for(asyncio.gather(*checks, return_exceptions=True), 10)
    assert done[:3] == [True, True, True]
    assert await passwords.verify(encoded, PASSWORD)  # the room is free again


async def test_unknown_users_cost_as_much_as_known_ones() -> None:
    passwords = Passwords(PasswordHasher(time_cost=2, memory_cost=16 * 1024, parallelism=1))
    encoded = await passwords.hash(PASSWORD)
    await passwords.prepare()

    async def timed(check: Any) -> float:
        started = time.perf_counter()
        await check
        return time.perf_counter() - started

    known = [await timed(passwords.verify(encoded, "a wrong password")) for _ in range(5)]
    unknown = [await timed(passwords.verify_dummy()) for _ in range(5)]
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 < ratio < 2.0, (known, unknown)


async def test_login_upgrades_an_old_hash(database: Database, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = make_config()
    audit = AuditLog(database, retention_days=30)
    old = AuthService(database, audit, config.auth, config, passwords=light_passwords())
    await users.create_user(
        old, None, username="alice", centre_id="meizhou", role="viewer", password=PASSWORD
    )
    current = AuthService(database, audit, config.auth, config)
    await current.login("alice", PASSWORD, "127.0.0.1")
    async with database.session() as s:
        encoded = await s.scalar(select(User.password_hash).where(User.username == "alice"))
    assert encoded is not None and not current.passwords.needs_rehash(encoded)
    await current.login("alice", PASSWORD, "127.0.0.1")  # still the same password
    assert PASSWORD not in caplog.text
