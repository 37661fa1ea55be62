"""A fresh PostgreSQL database per cluster test, and the members started on it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.db_fixtures import PostgresServer
from tests.vms.cluster.helpers import Members


@pytest.fixture
async def pg_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    postgres_server.start()
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = await postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.start()
        await postgres_server.drop_database(name)


@pytest.fixture
async def members(pg_url: str) -> AsyncIterator[Members]:
    group = Members(pg_url)
    try:
        yield group
    finally:
        await group.close()
