"""Health, readiness and per-camera probes on the real app with a real database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from streams import IngestState
from tests.app_fixtures import RunningApp, serve_app
from vms.app import create_app
from vms.config_loader import parse_config
from vms.storage import Database

SECRET = "cam-Pa55word-probe"


def site(data_dir: Path) -> str:
    return f"""
server:
  data_dir: {data_dir}
ingest:
  connect_timeout: 1
  stall_timeout: 2
  backoff_initial: 10  # dead-1 stays offline between its attempts while a probe reads it
  backoff_max: 10
halls:
  - id: tax
    name: 税务
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1?size=320x180&gop=25
  - id: dead-1
    name: 窗口区
    hall: tax
    url: rtsp://127.0.0.1:9/x
    credentials:
      username: admin
      password: {SECRET}
"""


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[RunningApp]:
    async with serve_app(site(tmp_path)) as app:
        own: Database | None = None
        if getattr(app.app.state, "db", None) is None:
            # The app opens its own database in its lifespan; until then, give it one.
            own = Database(f"sqlite+aiosqlite:///{tmp_path / 'probe.db'}")
            await own.start()
            app.app.state.db = own
        try:
            yield app
        finally:
            if own is not None:
                await own.stop()


async def wait_state(app: RunningApp, camera: str, state: IngestState, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while app.manager.stats(camera).state is not state:
        assert time.monotonic() < deadline, f"{camera} did not become {state}"
        await asyncio.sleep(0.05)


async def test_healthz(running: RunningApp) -> None:
    res = await running.http.get("/healthz")
    assert (res.status_code, res.json()) == (200, {"status": "ok"})


async def test_camera_probes(running: RunningApp) -> None:
    await wait_state(running, "tax-1", IngestState.ONLINE)
    online = await running.http.get("/api/v1/probe/cameras/tax-1")
    assert (online.status_code, online.json()) == (200, {"camera": "tax-1", "state": "online"})

    await wait_state(running, "dead-1", IngestState.OFFLINE)
    dead = await running.http.get("/api/v1/probe/cameras/dead-1")
    assert (dead.status_code, dead.json()) == (503, {"camera": "dead-1", "state": "offline"})
    # Nothing about the source: no URL, no address, no error text, no credential.
    for secretish in ("rtsp", "127.0.0.1", SECRET, "refused", "error"):
        assert secretish not in dead.text.lower()

    unknown = await running.http.get("/api/v1/probe/cameras/nope")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"


async def test_readyz_follows_the_database(running: RunningApp) -> None:
    ready = await running.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"

    db = running.app.state.db
    await db.stop()
    try:
        down = await running.http.get("/readyz")
        assert down.status_code == 503
        body = down.json()
        assert body["status"] == "not ready"
        assert body["reasons"] == ["the database does not answer"]
    finally:
        await db.start()
    assert (await running.http.get("/readyz")).status_code == 200


async def test_readyz_when_the_ingest_supervisor_stops(running: RunningApp) -> None:
    assert (await running.http.get("/readyz")).status_code == 200
    await running.manager.stop()  # the lifespan's stop afterwards is a no-op
    res = await running.http.get("/readyz")
    assert res.status_code == 503
    assert "the ingest supervisor is not running" in res.json()["reasons"]


async def test_readyz_before_start_up(tmp_path: Path) -> None:
    app = create_app(parse_config(site(tmp_path), "test.yaml"))
    # No lifespan has run: no relay, and no database unless the app opened one.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        res = await http.get("/readyz")
        assert res.status_code == 503
        assert "the relay is starting up" in res.json()["reasons"]
        assert (await http.get("/healthz")).status_code == 200
        probe = await http.get("/api/v1/probe/cameras/tax-1")
        assert (probe.status_code, probe.json()) == (503, {"camera": "tax-1", "state": "starting"})
