"""Instances sharing one PostgreSQL database share one guessing budget: failures spread
over them lock after ``max_failures`` in total, the lockout holds and ends on each, and
concurrent failures all count. Real PostgreSQL; each limiter on its own engine, as two
instances would be; and two real apps served by uvicorn on the same database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text

from tests.app_fixtures import ADMIN_PASSWORD, RunningApp, serve_app
from tests.db_fixtures import PostgresServer
from tests.vms.test_login_audit import count_of, until
from vms.audit import AuditLog, AuditQuery
from vms.shared_limiter import SharedLoginLimiter
from vms.storage import Database

postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
async def instances(database_url: str) -> AsyncIterator[tuple[Database, Database]]:
    """Two started databases on one URL: two instances' engines."""
    first, second = Database(database_url), Database(database_url)
    await first.start()
    await second.start()
    try:
        yield first, second
    finally:
        await second.stop()
        await first.stop()


def limiter(
    db: Database, *, max_failures: int = 4, lockout: float = 900, **options: int
) -> SharedLoginLimiter:
    return SharedLoginLimiter(db, max_failures=max_failures, window=900, lockout_seconds=lockout, **options)


async def rows(db: Database) -> dict[str, int]:
    """Each key's failures counted in the table."""
    async with db.engine.connect() as conn:
        result = await conn.execute(text("SELECT key, cardinality(failures) FROM login_limits"))
        return {str(key): int(count) for key, count in result}


@postgresql
async def test_failures_alternating_over_two_instances_lock_both_then_end_on_both(
    instances: tuple[Database, Database],
) -> None:
    a, b = limiter(instances[0], lockout=1.5), limiter(instances[1], lockout=1.5)
    for i, side in enumerate((a, b, a)):
        await side.arecord_failure("Alice", f"192.0.2.{i}", known_user=True)
        assert await a.aretry_after("alice", "198.51.100.1") == 0
        assert await b.aretry_after("alice", "198.51.100.1") == 0
    await b.arecord_failure("alice", "192.0.2.9", known_user=True)  # the fourth in total
    assert 1.0 < await a.aretry_after("alice", "198.51.100.1") <= 1.5
    assert 1.0 < await b.aretry_after("ALICE", None) <= 1.5
    assert a.retry_after("alice", None) > 0  # the lockout a read is held locally too
    assert await a.aretry_after("bob", "192.0.2.0") == 0  # each address failed once only

    async def ended() -> bool:
        return await a.aretry_after("alice", None) == 0 and await b.aretry_after("alice", None) == 0

    await until(ended, within=5)
    # After the lockout the count starts again from nothing.
    await a.arecord_failure("alice", None)
    assert await b.aretry_after("alice", None) == 0
    assert (await rows(instances[0]))["user:alice"] == 1


@postgresql
async def test_concurrent_failures_on_two_instances_all_count(instances: tuple[Database, Database]) -> None:
    a, b = limiter(instances[0], max_failures=30), limiter(instances[1], max_failures=30)
    await asyncio.gather(*((a, b)[i % 2].arecord_failure("alice", f"192.0.2.{i}") for i in range(29)))
    assert (await rows(instances[0]))["user:alice"] == 29
    assert await a.aretry_after("alice", None) == 0
    held = await asyncio.gather(b.arecord_failure("alice", None), a.arecord_failure("alice", None))
    assert sorted(held) == [False, True]  # one starts the lockout, the other finds it begun
    assert await a.aretry_after("alice", None) == pytest.approx(900, abs=1)
    assert await b.aretry_after("alice", None) == pytest.approx(900, abs=1)
    # Failures during the lockout neither count nor extend it.
    assert (await rows(instances[0]))["user:alice"] == 0


@postgresql
async def test_a_success_forgets_the_count_on_every_instance_but_never_a_lockout(
    instances: tuple[Database, Database],
) -> None:
    a, b = limiter(instances[0], max_failures=3), limiter(instances[1], max_failures=3)
    await a.arecord_failure("alice", None)
    await a.arecord_failure("alice", None)
    await b.arecord_success("alice")
    await a.arecord_failure("alice", None)
    assert await b.aretry_after("alice", None) == 0
    for _ in range(2):
        await b.arecord_failure("alice", None)
    await a.arecord_success("alice")
    assert await b.aretry_after("alice", None) > 0


@postgresql
async def test_the_cache_of_lockouts_is_bounded_and_what_it_forgets_the_database_keeps(
    instances: tuple[Database, Database],
) -> None:
    a = SharedLoginLimiter(instances[0], max_failures=1, window=900, lockout_seconds=900, max_keys=5)
    for i in range(20):
        await a.arecord_failure(f"user-{i}", f"192.0.2.{i}")
    assert len(a) == 5
    assert a.retry_after("user-0", None) == 0  # forgotten here...
    assert await a.aretry_after("user-0", None) > 800  # ...but not by the database
    assert all([await a.aretry_after(f"user-{i}", None) > 800 for i in range(20)])
    assert len(a) == 5


@postgresql
async def test_expired_rows_are_pruned_in_bounded_batches(instances: tuple[Database, Database]) -> None:
    def short(prune_every: int) -> SharedLoginLimiter:
        return SharedLoginLimiter(
            instances[0],
            max_failures=5,
            window=0.2,
            lockout_seconds=0.2,
            prune_every=prune_every,
            prune_batch=10,
        )

    filler, pruner = short(prune_every=1000), short(prune_every=1)
    for i in range(30):
        await filler.arecord_failure(f"nobody-{i}", None)
    assert len(await rows(instances[0])) == 30
    await asyncio.sleep(0.3)  # every row is past the window now
    await pruner.arecord_failure("fresh", None)
    assert len(await rows(instances[0])) == 30 - 10 + 1
    for _ in range(2):
        await pruner.arecord_failure("fresh", None)
    assert set(await rows(instances[0])) == {"user:fresh"}


@postgresql
async def test_without_the_database_known_lockouts_hold_and_guessing_stays_bounded(
    instances: tuple[Database, Database], postgres_server: PostgresServer
) -> None:
    a, b = limiter(instances[0], max_failures=3), limiter(instances[1], max_failures=3)
    for _ in range(3):
        await b.arecord_failure("alice", None)
    assert await a.aretry_after("alice", None) > 0
    postgres_server.stop()
    try:
        # The lockout a has seen holds without a query; nobody else is locked out.
        assert await a.aretry_after("alice", "192.0.2.1") > 0
        assert await a.aretry_after("bob", "192.0.2.1") == 0
        # Failures are counted locally: the local budget still bounds guessing.
        for _ in range(3):
            await a.arecord_failure("bob", "192.0.2.1")
        assert await a.aretry_after("bob", None) > 0
        assert await a.aretry_after("carol", "192.0.2.1") > 0
    finally:
        postgres_server.start()
    # The database answers again: counting goes back there.
    await a.arecord_failure("dave", None)
    assert (await rows(instances[0]))["user:dave"] == 1


SITE = """
database:
  url: {url}
auth:
  max_failed_logins: 3
  lockout_seconds: 3
  login_audit_interval: 600
centres:
  - id: meizhou
    name: 梅州市政务服务中心
    halls: all
halls:
  - id: tax
    name: 兴宁市税务局办税服务厅
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1?size=160x90&gop=25
"""


async def login(app: RunningApp, address: str, password: str) -> httpx.Response:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=app.base_url, transport=transport, timeout=10) as client:
        return await client.post(
            "/api/v1/auth/login", json={"username": "admin-meizhou", "password": password}
        )


@postgresql
async def test_two_apps_on_one_database_lock_an_account_after_failures_spread_over_both(
    database_url: str,
) -> None:
    config = SITE.format(url=database_url)
    refused = 0
    async with serve_app(config) as first, serve_app(config) as second:
        for i, app in enumerate((first, second, first)):
            assert (await login(app, f"127.0.0.{i + 3}", "guess")).status_code == 401
        started = time.monotonic()
        for app in (first, second, first, second):
            answer = await login(app, "127.0.0.9", ADMIN_PASSWORD)
            assert answer.status_code == 429
            assert 0 < int(answer.headers["retry-after"]) <= 3
            refused += 1
        await asyncio.sleep(max(0.0, started + 3.2 - time.monotonic()))
        for app in (second, first):
            assert (await login(app, "127.0.0.9", ADMIN_PASSWORD)).status_code == 200
    db = Database(database_url)
    await db.start()
    try:
        audit = AuditLog(db, retention_days=180)
        failures = await audit.query(AuditQuery(action="login_failure", limit=None))
        locked = await audit.query(AuditQuery(action="login_locked", limit=None))
    finally:
        await db.stop()
    # Each failure and each refusal is in the trail once, whichever instance saw it.
    assert sorted(r.source_addr or "" for r in failures) == ["127.0.0.3", "127.0.0.4", "127.0.0.5"]
    assert sum(count_of(r) for r in locked) == refused
    assert {r.username for r in locked} == {"admin-meizhou"}
