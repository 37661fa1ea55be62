"""No audit record is lost and no privileged change happens without one: the change and
its record commit together; viewing records the database cannot take go to the local
journal and are replayed once, on SQLite (another process holding the write lock) and
on PostgreSQL (the server stopped mid-run)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from tests.app_fixtures import USER_PASSWORD
from tests.db_fixtures import PostgresServer
from tests.vms.fault_fixtures import app_on, hold_write_lock, log_in, site_config, site_on_postgresql
from tests.vms.test_db_health import (
    SNAPSHOT,
    USERS,
    eventually_ready,
    eventually_recorded,
    users_and_creations,
)
from vms.audit import AuditLog, AuditQuery
from vms.storage import Database
from vms.storage.journal import CURRENT, Journal
from vms.storage.tables import AuditEvent
from vms.viewing import RecordRefused, ViewingRecorder

REFUSE_AUDIT = (
    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events WHEN {when} "
    "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
)
"""A SQLite trigger that fails audit inserts the way a full disk does."""


async def snapshots(http: httpx.AsyncClient, count: int) -> int:
    """Ask for ``count`` snapshots; how many were served."""
    served = 0
    for _ in range(count):
        answer = await http.get(SNAPSHOT)
        assert answer.status_code in (200, 503), answer.text
        served += answer.status_code == 200
    return served


async def test_snapshots_during_a_write_lock_are_all_recorded_once(tmp_path: Path) -> None:
    async with app_on(site_config(tmp_path)) as (app, http):
        await log_in(http)
        assert (await http.get(SNAPSHOT)).status_code == 200  # the camera has a picture
        started = time.monotonic()
        with hold_write_lock(tmp_path / "hallwatch.db"):
            served = await snapshots(http, 3)
            while time.monotonic() - started < 15:  # the lock is held for 15 s
                await asyncio.sleep(0.5)
        assert served == 3
        assert app.state.viewing.journaled >= 1
        await eventually_ready(http)
        await eventually_recorded(app, "snapshot", 1 + served)
        assert not (tmp_path / "audit-journal" / CURRENT).exists()


async def test_a_user_and_its_record_commit_together(tmp_path: Path) -> None:
    """The audit insert fails inside the database (a trigger), after the user's insert went
    through: the user must not exist either."""
    async with app_on(site_config(tmp_path)) as (app, http):
        await log_in(http)
        async with app.state.db.engine.begin() as conn:
            await conn.execute(text(REFUSE_AUDIT.format(when="NEW.action = 'admin_change'")))
        body = {"username": "no-record", "role": "admin", "password": USER_PASSWORD}
        # Refused (SQLite reports a trigger's abort as a constraint): no 201, no 500.
        assert (await http.post(USERS, json=body)).status_code in (409, 503)
        names, created = await users_and_creations(app)
        assert "no-record" not in names
        assert created == len(names)


async def test_stopping_postgresql_mid_run_loses_and_doubles_nothing(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with (
        site_on_postgresql(postgres_server, tmp_path, "t_journal_stop") as config,
        app_on(config) as running,
    ):
        app, http = running
        await log_in(http)
        assert (await http.get(SNAPSHOT)).status_code == 200
        postgres_server.stop()
        try:
            # Authentication needs the database: nothing is served, nothing goes unrecorded.
            assert (await http.get(SNAPSHOT)).status_code == 503
            body = {"username": "pg-down", "role": "viewer", "password": USER_PASSWORD}
            assert (await http.post(USERS, json=body)).status_code == 503
        finally:
            postgres_server.start()
        await eventually_ready(http)
        assert await snapshots(http, 2) == 2
        await eventually_recorded(app, "snapshot", 3)
        names, creations = await users_and_creations(app)
        assert "pg-down" not in names and creations == len(names)


async def test_the_journal_takes_what_a_stopped_postgresql_cannot(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """View records that end while PostgreSQL is down are journaled, then replayed once."""
    name = "t_journal_views"
    url = await postgres_server.create_database(name)
    db = Database(url)
    await db.start()
    journal = Journal(tmp_path / "journal")
    journal.open()
    audit = AuditLog(db, retention_days=1)
    viewing = ViewingRecorder(audit, journal=journal)
    viewing.start()
    try:
        postgres_server.stop()
        try:
            for index in range(5):
                viewing.record_soon("view", camera_id=f"cam-{index}", protocol="mjpeg", bytes=index)
            await viewing.stop()  # writes what is queued
            assert viewing.journaled == 5 and viewing.lost == 0
        finally:
            postgres_server.start()
        assert await viewing.replay() == 5
        assert await viewing.replay() == 0
        rows = await audit.query(AuditQuery(action="view", limit=None))
        assert sorted(row.camera_id or "" for row in rows) == [f"cam-{i}" for i in range(5)]
    finally:
        await viewing.stop()
        await db.stop()
        postgres_server.start()
        await postgres_server.drop_database(name)


async def test_a_replay_cut_short_is_run_again_without_doubles(database: Database, tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    journal.open()
    audit = AuditLog(database, retention_days=1)
    viewing = ViewingRecorder(audit, journal=journal)
    rows = [audit.event("snapshot", camera_id=f"cam-{i}", bytes=i, at=datetime.now(UTC)) for i in range(3)]
    for row in rows:
        journal.append({key: value.isoformat() if key == "at" else value for key, value in row.items()})
    # A crash after the insert, before the segment was deleted: the same records again.
    segment = journal.take()[0]
    await audit.insert([{**row} for row in rows[:2]])
    (tmp_path / "journal" / CURRENT).write_bytes(segment.read_bytes() + b'{"torn": tr')
    assert await viewing.replay() == 3 + 3  # both files read; stored rows are skipped
    async with database.session() as s:
        stored = await s.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "snapshot")
        )
    assert stored == 3
    assert not journal.pending()


async def test_neither_database_nor_journal_refuses_the_record(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'hallwatch.db'}")
    await database.start()
    try:
        async with database.engine.begin() as conn:
            await conn.execute(text(REFUSE_AUDIT.format(when="1")))
        journal = Journal(tmp_path / "gone")  # never opened: its directory does not exist
        viewing = ViewingRecorder(AuditLog(database, retention_days=1), journal=journal)
        with pytest.raises(RecordRefused):
            await viewing.record_now("snapshot", camera_id="tax-1")
    finally:
        await database.stop()
