"""Database fixtures: a throwaway PostgreSQL cluster and a fresh database per test.

``postgres_server`` (session scope) runs Debian's ``initdb`` and ``pg_ctl`` as the
``postgres`` OS user (through ``runuser`` when the tests run as root) in a temp
dir, listening on 127.0.0.1 and a free port with trust authentication, and
deletes everything at the end of the session. It is a :class:`PostgresServer`:
a test may call ``.stop()`` to make the database go away and ``.start()`` to
bring it back on the same port and data (``database_url`` restarts it too, so a
test that fails midway does not break the next).

``database_url`` is parametrized ``sqlite`` / ``postgresql``: an empty SQLite file
in ``tmp_path``, or a new PostgreSQL database dropped after the test.
``database`` is a started :class:`vms.storage.Database` on that URL.

PostgreSQL missing is a failure, not a skip: ``scripts/install-test-deps.sh``
installs it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.app_fixtures import free_port
from vms.storage import Database

PG_USER = "postgres"
SESSION_DB = "hallwatch_test"
_TIMEOUT = 60


def _pg_bin_dir() -> Path | None:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


class PostgresServer:
    """A PostgreSQL cluster in a temp dir on 127.0.0.1; ``stop()`` and ``start()`` keep port and data."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="hallwatch-pg-"))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log_file = self.root / "server.log"
        self.port = free_port()
        self.running = False
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, user=PG_USER, group=PG_USER)

    def _run(self, *argv: str) -> None:
        command = [str(self.bin_dir / argv[0]), *argv[1:]]
        if self._as_root:
            command = ["runuser", "-u", PG_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
        if result.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}\n{log}")

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            PG_USER,
            "--auth=trust",
            "--no-sync",
            "--no-locale",
            "--encoding=UTF8",
        )
        self.socket_dir.mkdir()
        if self._as_root:
            shutil.chown(self.socket_dir, user=PG_USER, group=PG_USER)

    def start(self) -> None:
        """Start the cluster (waits until it accepts connections). Idempotent."""
        if self.running:
            return
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-o", options, "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster; every client connection breaks. Idempotent."""
        if not self.running:
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")
        self.running = False

    def url(self, database: str = SESSION_DB) -> str:
        return f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    async def _admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            host="127.0.0.1", port=self.port, user=PG_USER, database="postgres", timeout=10
        )

    async def create_database(self, name: str) -> str:
        """Create an empty database; returns its SQLAlchemy URL."""
        conn = await self._admin()
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    async def drop_database(self, name: str) -> None:
        conn = await self._admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    def destroy(self) -> None:
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = _pg_bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        pytest.fail(
            "PostgreSQL is not installed (no initdb/pg_ctl): run scripts/install-test-deps.sh as root",
            pytrace=False,
        )
    server = PostgresServer(bin_dir)
    try:
        server.init()
        server.start()
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U", PG_USER, SESSION_DB],
            check=True,
            capture_output=True,
            timeout=_TIMEOUT,
        )
        yield server
    finally:
        server.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database per test, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'hallwatch.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    server.start()
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = await server.create_database(name)
    try:
        yield url
    finally:
        server.start()
        await server.drop_database(name)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A started :class:`Database` (schema at head) on ``database_url``; stopped after."""
    db = Database(database_url)
    await db.start()
    try:
        yield db
    finally:
        await db.stop()
