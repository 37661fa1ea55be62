"""A data directory removed while running is noticed, and a store that vanished is never
silently replaced by a new one with new first administrators."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.db_fixtures import PostgresServer
from tests.vms.fault_fixtures import app_on, log_in, site_config, site_on_postgresql
from tests.vms.test_db_health import eventually_reasons
from vms.config import Config
from vms.storage import Database, database_url, faults
from vms.storage.identity import MARKER_NAME, StoreLost, claim_store
from vms.storage.opening import startup_problem
from vms.storage.tables import User


async def user_count(config: Config) -> int:
    db = Database(database_url(config))
    await db.start()
    try:
        async with db.session() as s:
            return int(await s.scalar(select(func.count()).select_from(User)) or 0)
    finally:
        await db.stop()


async def test_a_data_directory_removed_while_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = site_config(data_dir)
    async with app_on(config) as (_app, http):
        await log_in(http)
        shutil.rmtree(data_dir)
        await eventually_reasons(http, [faults.GONE])
        # The running service left its marker where the store was.
        assert (data_dir / MARKER_NAME).is_file()
    problem = await asyncio.to_thread(startup_problem, config)
    assert problem is not None
    assert "Refusing to start" in problem and str(data_dir / MARKER_NAME) in problem
    with pytest.raises(StoreLost):
        async with app_on(config):
            pass
    assert await user_count(config) == 0  # no first administrator created over the lost store
    (data_dir / MARKER_NAME).unlink()  # the operator's explicit choice: start afresh
    async with app_on(site_config(data_dir)) as (_app, http):
        await log_in(http)


async def test_a_marker_outside_catches_a_removal_while_stopped(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = site_config(data_dir)
    outside = tmp_path / "etc" / "store-id"
    config = config.model_copy(update={"server": config.server.model_copy(update={"store_marker": outside})})
    async with app_on(config):
        pass
    store_id = outside.read_text().strip()
    assert (data_dir / MARKER_NAME).read_text().strip() == store_id
    shutil.rmtree(data_dir)
    data_dir.mkdir()
    problem = await asyncio.to_thread(startup_problem, config)
    assert problem is not None and str(outside) in problem and store_id in problem


async def test_a_dropped_postgresql_database_is_not_bootstrapped_over(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with site_on_postgresql(postgres_server, tmp_path, "t_store_dropped") as config:
        async with app_on(config):
            pass
        await postgres_server.drop_database("t_store_dropped")
        await postgres_server.create_database("t_store_dropped")
        with pytest.raises(StoreLost, match="Refusing to start"):
            async with app_on(config):
                pass
        assert await user_count(config) == 0


async def test_instances_starting_together_on_an_empty_postgresql_share_one_store(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """Several instances of one cluster may start at the same moment: each gets the same
    store id, none fails on the store row's key."""
    async with site_on_postgresql(postgres_server, tmp_path, "t_store_together") as config:
        databases = [Database(database_url(config)) for _ in range(4)]
        await asyncio.gather(*(db.start() for db in databases))
        try:
            ids = await asyncio.gather(
                *(claim_store(db, [tmp_path / f"marker-{i}"]) for i, db in enumerate(databases))
            )
        finally:
            await asyncio.gather(*(db.stop() for db in databases))
        assert len(set(ids)) == 1


async def test_restarts_of_the_same_store_start(tmp_path: Path) -> None:
    config = site_config(tmp_path)
    for _ in range(2):
        async with app_on(config) as (_app, http):
            await log_in(http)
    assert await user_count(config) == 1
