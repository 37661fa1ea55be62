"""Readiness tells the truth about writes, with real faults: another process holding
SQLite's write lock, a full tmpfs, a read-only file seen by an unprivileged user, a
stopped PostgreSQL; a start-up on an unwritable store stops with a message."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.app_fixtures import USER_PASSWORD
from tests.db_fixtures import PostgresServer
from tests.vms.fault_fixtures import (
    LOCK_WAIT_SITE,
    app_on,
    fill,
    give_to_nobody,
    hold_write_lock,
    log_in,
    run_unprivileged,
    site_config,
    site_on_postgresql,
    small_tmpfs,
)
from vms.config import Config
from vms.storage import faults
from vms.storage.opening import startup_problem
from vms.storage.tables import AuditEvent, User

USERS = "/api/v1/users"
SNAPSHOT = "/api/v1/cameras/tax-1/snapshot.jpg"
WHEP = "/api/v1/cameras/tax-1/whep"
MJPEG = "/api/v1/cameras/tax-1/stream.mjpeg"


@pytest.fixture
def tmpfs_dir(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "small") as where:
        yield where


async def ready_reasons(http: httpx.AsyncClient) -> list[str]:
    answer = await http.get("/readyz")
    if answer.status_code == 200:
        return []
    assert answer.status_code == 503, answer.text
    reasons: list[str] = answer.json()["reasons"]
    return reasons


async def eventually_reasons(http: httpx.AsyncClient, expected: list[str], within: float = 20.0) -> None:
    """Poll ``/readyz`` until it gives ``expected`` (``[]``: ready); fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while (reasons := await ready_reasons(http)) != expected:
        assert time.monotonic() < deadline, f"readiness still {reasons} after {within} s, not {expected}"
        await asyncio.sleep(0.2)


async def eventually_ready(http: httpx.AsyncClient, within: float = 20.0) -> None:
    await eventually_reasons(http, [], within)


async def recorded(app: FastAPI, action: str) -> int:
    async with app.state.db.session() as s:
        rows = await s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action))
    return int(rows or 0)


async def eventually_recorded(app: FastAPI, action: str, count: int, within: float = 20.0) -> None:
    """Wait until exactly ``count`` rows of ``action`` are stored (a journal replays); never more."""
    deadline = time.monotonic() + within
    while (found := await recorded(app, action)) != count:
        assert found < count, f"{found} {action} rows stored, {count} expected: doubled"
        assert time.monotonic() < deadline, f"{found} {action} rows after {within} s, {count} expected"
        await asyncio.sleep(0.2)


async def users_and_creations(app: FastAPI) -> tuple[set[str], int]:
    """Usernames stored, and audit rows recording a user's creation."""
    async with app.state.db.session() as s:
        names = set(await s.scalars(select(User.username)))
        created = await s.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.detail.like("created user %"))
        )
    return names, int(created or 0)


async def create(http: httpx.AsyncClient, name: str) -> int:
    answer = await http.post(USERS, json={"username": name, "role": "viewer", "password": USER_PASSWORD})
    assert answer.status_code in (201, 503), answer.text
    return answer.status_code


async def test_a_write_lock_held_by_another_process(tmp_path: Path) -> None:
    config = site_config(tmp_path, LOCK_WAIT_SITE)
    async with app_on(config) as (app, http):
        await log_in(http)
        assert await ready_reasons(http) == []
        with hold_write_lock(tmp_path / "hallwatch.db"):
            await eventually_reasons(http, [faults.LOCKED])
            statuses = [await create(http, f"locked-{i}") for i in range(2)]
            assert statuses == [503, 503]
            body = {"username": "x1", "role": "viewer", "password": USER_PASSWORD}
            refused = await http.post(USERS, json=body)
            assert faults.LOCKED in refused.json()["detail"]
            # Layout saves and token creation: 503 with the reason, never 500.
            wall = await http.put("/api/v1/layouts/current", json={"layout": 1, "tiles": ["tax-1"]})
            assert wall.status_code == 503 and faults.LOCKED in wall.json()["detail"]
            token = await http.post("/api/v1/auth/tokens", json={"name": "during-lock"})
            assert token.status_code == 503
        await eventually_ready(http)
        assert await create(http, "after-lock") == 201
        names, created = await users_and_creations(app)
        assert "locked-0" not in names and "after-lock" in names
        assert created == len(names)  # every user has its creation record, no record without user


async def test_a_full_disk(tmpfs_dir: Path) -> None:
    config = site_config(tmpfs_dir)
    async with app_on(config) as (app, http):
        await log_in(http)
        assert await ready_reasons(http) == []
        filler = fill(tmpfs_dir)
        try:
            await eventually_reasons(http, [faults.DISK_FULL])
            last_bytes = fill(tmpfs_dir)  # whatever SQLite freed meanwhile
            snapshot = await http.get(SNAPSHOT)
            # Neither the database nor the journal (same disk) can record it: refused, not served.
            assert snapshot.status_code == 503, snapshot.text
            assert faults.DISK_FULL in snapshot.json()["detail"]
            # Nor can a new live viewing be recorded: it is not started.
            for live in (
                http.post(WHEP, content=b"v=0", headers={"Content-Type": "application/sdp"}),
                http.get(MJPEG),
            ):
                async with asyncio.timeout(10):  # an MJPEG stream that started would never end
                    refused = await live
                assert refused.status_code == 503, refused.text
                assert faults.DISK_FULL in refused.json()["detail"]
            last_bytes.unlink()
            os.truncate(filler, filler.stat().st_size - 64 * 1024)
            # Room for the journal (not for the database): served, and kept in the journal.
            assert (await http.get(SNAPSHOT)).status_code == 200
        finally:
            filler.unlink()
        await eventually_ready(http)
        assert (await http.get(SNAPSHOT)).status_code == 200
        await eventually_recorded(app, "snapshot", 2)


def serve_command(config_file: Path) -> list[str]:
    return [sys.executable, "-m", "vms", "serve", "--config", str(config_file), "--port", "0"]


def write_config(config: Config, where: Path) -> Path:
    """``config`` as a YAML file (its data directory and first-admin secrets included)."""
    data = json.loads(config.model_dump_json())
    path = where / "site.yaml"
    path.write_text(json.dumps(data), encoding="utf-8")  # JSON is YAML
    return path


async def test_start_on_a_full_disk_stops_with_a_message(tmpfs_dir: Path, tmp_path: Path) -> None:
    config = site_config(tmpfs_dir)
    async with app_on(config):
        pass  # a store that worked
    filler = fill(tmpfs_dir)
    try:
        problem = await asyncio.to_thread(startup_problem, config)
        assert problem is not None and faults.DISK_FULL in problem and str(tmpfs_dir) in problem
        command = serve_command(write_config(config, tmp_path))
        result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60)
    finally:
        filler.unlink()
    assert result.returncode != 0
    assert "disk is full" in result.stderr and str(tmpfs_dir) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def nobodys_dir() -> Iterator[Path]:
    """A data directory ``nobody`` may reach (pytest's own temp dirs are root's alone)."""
    where = Path(tempfile.mkdtemp(prefix="hallwatch-nobody-"))
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


async def test_start_on_a_read_only_file_as_an_unprivileged_user(nobodys_dir: Path) -> None:
    config = site_config(nobodys_dir)
    async with app_on(config):
        pass
    config_file = write_config(config, nobodys_dir)
    give_to_nobody(nobodys_dir)
    os.chmod(nobodys_dir / "hallwatch.db", 0o444)
    serve = ("serve", "--config", str(config_file), "--port", "0")
    result = await asyncio.to_thread(run_unprivileged, "sys.exit(vms.cli.main())", *serve)
    assert result.returncode != 0, result.stderr
    assert "read-only" in result.stderr and str(nobodys_dir / "hallwatch.db") in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


_READ_ONLY_SCENARIO = """
import asyncio, json
from pathlib import Path
from tests.vms import test_db_health as scenario
print(json.dumps(asyncio.run(scenario.read_only_while_running(Path(sys.argv[1])))))
"""


async def read_only_while_running(data_dir: Path) -> dict[str, object]:
    """Run as ``nobody``: the file turns read-only under the running service, then writable again."""
    config = site_config(data_dir)
    db_file = data_dir / "hallwatch.db"
    seen: dict[str, object] = {}
    async with app_on(config) as (app, http):
        await log_in(http)
        seen["ready_before"] = await ready_reasons(http)
        os.chmod(db_file, 0o444)
        await eventually_reasons(http, [faults.READ_ONLY])
        seen["ready_during"] = await ready_reasons(http)
        seen["create_during"] = [await create(http, f"ro-{i}") for i in range(3)]
        os.chmod(db_file, 0o644)
        await eventually_ready(http)
        seen["create_after"] = await create(http, "after-ro")
        names, created = await users_and_creations(app)
        seen["users"], seen["creations"] = sorted(names), created
    return seen


async def test_a_read_only_file_while_running_as_an_unprivileged_user(nobodys_dir: Path) -> None:
    give_to_nobody(nobodys_dir)
    result = await asyncio.to_thread(run_unprivileged, _READ_ONLY_SCENARIO, str(nobodys_dir), timeout=100)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["ready_before"] == []
    assert seen["ready_during"] == [faults.READ_ONLY]
    # SQLite may still write through descriptors opened before the change; whatever happened,
    # no user exists without the record of its creation.
    assert all(status in (201, 503) for status in seen["create_during"])
    # The pool opened during the fault does not outlive it: writes work again.
    assert seen["create_after"] == 201
    assert "after-ro" in seen["users"]
    assert seen["creations"] == len(seen["users"])


async def test_a_stopped_postgresql(postgres_server: PostgresServer, tmp_path: Path) -> None:
    async with (
        site_on_postgresql(postgres_server, tmp_path, "t_readiness_stop") as config,
        app_on(config) as (_, http),
    ):
        await log_in(http)
        assert await ready_reasons(http) == []
        postgres_server.stop()
        try:
            await eventually_reasons(http, [faults.NO_ANSWER])
        finally:
            postgres_server.start()
        await eventually_ready(http)
