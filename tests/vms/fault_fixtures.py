"""Real storage faults for tests: a second process holding SQLite's write lock, a tiny
tmpfs data directory that can be filled, and the service run as an unprivileged user
(root ignores file permissions, so a read-only file needs a process that is not root).

``hold_write_lock`` starts a Python process that opens the file, runs ``BEGIN IMMEDIATE``
and holds the lock until the context ends. ``tmpfs_dir`` mounts a tmpfs of the given
size (skipped, saying why, where mounting is not permitted) and unmounts it after.
``fill`` writes a file until the disk is full. ``run_unprivileged`` runs a Python
snippet as ``nobody``: it imports the service first (the interpreter lives where
``nobody`` may not read), then drops its user and groups.
``app_on`` runs the app's lifespan over a given data directory and talks to it
through ``httpx.ASGITransport``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from tests.app_fixtures import ADMIN_PASSWORD, prepared
from tests.db_fixtures import PostgresServer
from vms.app import create_app
from vms.config import Config
from vms.config_loader import parse_config

NOBODY = 65534

_LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""

SITE = """
centres:
  - id: meizhou
    name: 梅州市政务服务中心
halls:
  - id: tax
    name: 兴宁市税务局办税服务厅
    department: 国家税务总局兴宁市税务局
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1?size=320x180&gop=25
"""

LOCK_WAIT_SITE = (
    SITE
    + """
database:
  sqlite_lock_wait: 1  # a write under another process's lock fails after 1 s, not 5
"""
)


@contextlib.contextmanager
def hold_write_lock(db_file: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holds the SQLite write lock of ``db_file`` while the context runs."""
    locker = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(db_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None
        assert locker.stdout.readline().strip() == "locked"
        yield locker
    finally:
        if locker.stdin is not None:
            locker.stdin.close()
        try:
            locker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            locker.kill()
            locker.wait(timeout=10)
        if locker.stdout is not None:
            locker.stdout.close()


@contextlib.contextmanager
def small_tmpfs(where: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted at ``where`` (created) while the context runs."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): the full-disk test needs one")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True, timeout=30)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until its disk is full; deleting the file frees the space."""
    filler = directory / f"filler-{uuid.uuid4().hex}"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as err:
            assert err.errno == errno.ENOSPC, err
    with contextlib.suppress(OSError), open(filler, "ab", buffering=0) as out:
        while True:  # the last few bytes too
            out.write(b"\0" * 512)
    return filler


_UNPRIVILEGED = """
import os, sys
import vms.app, vms.cli, vms.storage.opening, uvicorn, aiosqlite  # read while still root
import sqlalchemy.dialects.sqlite.aiosqlite, alembic.runtime.migration, alembic.ddl.sqlite
import logging.config, uvicorn.lifespan.on, uvicorn.loops.auto, uvicorn.protocols.http.auto
import encodings.utf_8_sig, encodings.idna, encodings.ascii, encodings.latin_1, tests.vms.test_db_health
import importlib.readers, importlib.resources.readers, importlib.metadata, zipfile, email.parser, uuid, json
import concurrent.futures.thread, asyncio.subprocess, ssl, secrets, hmac, hashlib, argon2, multiprocessing
os.setgroups([])
os.setgid({uid})
os.setuid({uid})
sys.argv = ["hallwatch", *sys.argv[1:]]
{code}
"""


def run_unprivileged(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (after the service's imports) as ``nobody``; its result."""
    if os.geteuid() != 0:
        pytest.skip("dropping to an unprivileged user needs root; already unprivileged: use chmod directly")
    script = _UNPRIVILEGED.format(uid=NOBODY, code=code)
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


def give_to_nobody(path: Path) -> None:
    """``path`` and everything below it owned by ``nobody``."""
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), NOBODY, NOBODY)
    os.chown(path, NOBODY, NOBODY)


def site_config(data_dir: Path, text: str = SITE) -> Config:
    """The one-camera site with its data in ``data_dir`` and known first-admin passwords."""
    return prepared(parse_config(text, "test.yaml"), data_dir)


@contextlib.asynccontextmanager
async def site_on_postgresql(server: PostgresServer, data_dir: Path, name: str) -> AsyncIterator[Config]:
    """The one-camera site on a new PostgreSQL database ``name``, dropped after (the server
    started again first, in case the test stopped it)."""
    url = await server.create_database(name)
    config = site_config(data_dir)
    database = config.database.model_copy(update={"url": SecretStr(url)})
    try:
        yield config.model_copy(update={"database": database})
    finally:
        server.start()
        await server.drop_database(name)


@contextlib.asynccontextmanager
async def app_on(config: Config) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app's lifespan running over ``config``, and an anonymous client of it."""
    app = create_app(config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as http:
            yield app, http


async def log_in(
    http: httpx.AsyncClient, username: str = "admin-meizhou", password: str = ADMIN_PASSWORD
) -> None:
    """Log ``http`` in (it keeps the cookie and sends the CSRF token from now on)."""
    answer = await http.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    http.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
