"""The dashboard's own API against the real app: saved walls (on SQLite and on
PostgreSQL), MJPEG over WebSocket with its refusals and audit record, and the
status bar's figures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from starlette.datastructures import Headers
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from streams import IngestState
from tests.app_fixtures import RunningApp, serve_app
from vms.deps import SESSION_COOKIE
from vms.routes.live_ws import same_origin


def site(database_url: str | None = None) -> str:
    database = f"database:\n  url: {database_url}\n" if database_url else ""
    return (
        database
        + """
ingest:
  connect_timeout: 1
  backoff_initial: 0.5
  backoff_max: 2
pictures:
  mjpeg_max_fps: 10
centres:
  - id: meizhou
    name: 梅州市政务服务中心
    halls: [tax]
  - id: xingning
    name: 兴宁市政务服务中心
    halls: all
halls:
  - id: tax
    name: 国家税务总局兴宁市税务局第一税务分厅办税服务厅
    department: 市税务局
    plate: 兴宁市政务服务中心税务分厅
  - id: legal-services
    name: 兴宁市公共法律服务中心
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1?size=320x180&gop=25
  - id: tax-2
    name: 窗口区
    hall: tax
    url: demo://tax-2?size=320x180&gop=25
    enabled: false
  - id: legal-1
    name: 窗口区
    hall: legal-services
    url: demo://legal-1?size=320x180&gop=25
  - id: legal-2
    name: 门口
    hall: legal-services
    url: rtsp://127.0.0.1:9/offline
"""
    )


async def _until(check: Callable[[], Any], what: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


@pytest.fixture
async def stored(database_url: str) -> AsyncIterator[RunningApp]:
    """The app on each database backend; its cameras need not be online."""
    async with serve_app(site(database_url)) as app:
        yield app


@pytest.fixture
async def live() -> AsyncIterator[RunningApp]:
    """The app on its default SQLite file, with its demo cameras online."""
    async with serve_app(site()) as app:

        async def online() -> bool:
            return all(app.manager.stats(c).state is IngestState.ONLINE for c in ("tax-1", "legal-1"))

        await _until(online, "the demo cameras did not come online")
        yield app


# -- saved walls ---------------------------------------------------------------------


async def _put(client: httpx.AsyncClient, layout: object, tiles: object) -> httpx.Response:
    return await client.put("/api/v1/layouts/current", json={"layout": layout, "tiles": tiles})


async def test_a_wall_is_saved_per_user_checked_and_restored(stored: RunningApp) -> None:
    viewer = await stored.user("meizhou", "viewer")
    first = (await viewer.get("/api/v1/layouts/current")).json()
    assert first == {"layout": 4, "tiles": ["tax-1", "tax-2", None, None], "saved": False, "updated_at": None}

    wall = [None] * 8 + ["tax-1"]
    res = await _put(viewer, 9, wall)
    assert res.status_code == 200, res.text
    assert res.json()["saved"] and res.json()["tiles"] == wall
    wall[0] = "tax-2"
    assert (await _put(viewer, 9, wall)).status_code == 200  # the second save replaces the first

    # Refused, each with a message that says why; the saved wall stays.
    for layout, tiles, says in [
        (5, [None] * 5, "layout must be one of 1, 4, 9, 16"),
        (4, ["tax-1"], "has 4 tiles; 1 were sent"),
        (1, ["legal-1"], "no camera 'legal-1' in the halls your centre may see"),
        (1, ["no-such-camera"], "no camera 'no-such-camera'"),
    ]:
        res = await _put(viewer, layout, tiles)
        assert res.status_code == 422, (layout, tiles)
        assert res.headers["content-type"] == "application/problem+json"
        assert says in res.json()["detail"]
    assert (await _put(viewer, 1, [7])).status_code == 422
    assert (await _put(viewer, 16, [None] * 17)).status_code == 422
    bad = await viewer.put("/api/v1/layouts/current", json={"layout": 1, "tiles": [None], "extra": 1})
    assert bad.status_code == 422
    no_csrf = await viewer.put(
        "/api/v1/layouts/current", json={"layout": 1, "tiles": [None]}, headers={"X-CSRF-Token": "wrong"}
    )
    assert no_csrf.status_code == 403
    assert (
        await stored.http.put("/api/v1/layouts/current", json={"layout": 1, "tiles": [None]})
    ).status_code == 401

    # A new login of the same user gets the wall back.
    again = await stored.login("viewer-meizhou")
    restored = (await again.get("/api/v1/layouts/current")).json()
    assert (restored["layout"], restored["tiles"], restored["saved"]) == (9, wall, True)

    # Another user's wall is their own.
    operator = await stored.user("xingning", "operator")
    assert (await operator.get("/api/v1/layouts/current")).json()["saved"] is False
    assert (await _put(operator, 1, ["legal-1"])).status_code == 200
    assert (await operator.get("/api/v1/layouts/current")).json()["tiles"] == ["legal-1"]
    assert (await again.get("/api/v1/layouts/current")).json()["tiles"] == wall


# -- MJPEG over WebSocket ----------------------------------------------------------------


def _ws_url(app: RunningApp, camera: str) -> str:
    return app.base_url.replace("http://", "ws://") + f"/api/v1/cameras/{camera}/mjpeg.ws"


def _open(
    app: RunningApp, camera: str, client: httpx.AsyncClient | None, origin: str | None = "same"
) -> connect:
    headers = {}
    if client is not None:
        headers["Cookie"] = f"{SESSION_COOKIE}={client.cookies[SESSION_COOKIE]}"
    return connect(
        _ws_url(app, camera),
        origin=Origin(app.base_url if origin == "same" else origin) if origin else None,
        additional_headers=headers,
        open_timeout=5,
        close_timeout=2,
    )


async def _close_code(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(5):
            await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def _jpegs(ws: ClientConnection, count: int) -> list[np.ndarray[Any, Any]]:
    pictures = []
    async with asyncio.timeout(10):
        for _ in range(count):
            message = await ws.recv()
            assert isinstance(message, bytes)
            picture = cv2.imdecode(np.frombuffer(message, np.uint8), cv2.IMREAD_COLOR)
            assert picture is not None
            pictures.append(picture)
    return pictures


async def test_mjpeg_websocket_refusals(live: RunningApp) -> None:
    async with _open(live, "tax-1", None) as ws:
        assert await _close_code(ws) == 4401
    meizhou = await live.user("meizhou", "viewer")
    for camera in ("legal-1", "no-such-camera"):
        async with _open(live, camera, meizhou) as ws:
            assert await _close_code(ws) == 4404
    # A page of another site must not ride the user's cookie: the handshake is refused.
    for origin in ("http://evil.example", "null", "https://127.0.0.1.evil.example"):
        with pytest.raises(InvalidStatus) as refused:
            async with _open(live, "tax-1", meizhou, origin=origin):
                pass
        assert refused.value.response.status_code == 403
    assert live.manager.stats("tax-1").mjpeg_viewers == 0


async def test_mjpeg_websocket_streams_jpegs_and_is_audited(live: RunningApp) -> None:
    operator = await live.user("xingning", "operator")
    async with _open(live, "tax-1", operator) as ws:
        pictures = await _jpegs(ws, 3)
        assert all(p.shape == (180, 320, 3) for p in pictures)
        assert live.manager.stats("tax-1").mjpeg_viewers == 1
        status = (await operator.get("/api/v1/status")).json()
        assert status["viewers"] == 1
    # Leaving stops this viewer's iterator, and with it the shared decoder.

    async def left() -> bool:
        return live.manager.stats("tax-1").mjpeg_viewers == 0

    await _until(left, "the viewer was still counted after it left")

    # So does a client that vanishes without a closing handshake.
    async with _open(live, "tax-1", operator) as ws:
        await _jpegs(ws, 1)
        ws.transport.abort()
        await _until(left, "a vanished viewer was still counted")

    async def audited() -> bool:
        res = await operator.get("/api/v1/audit", params={"action": "view"})
        return len(res.json()) >= 2

    await _until(audited, "no view record")
    records = (await operator.get("/api/v1/audit", params={"action": "view"})).json()
    assert len(records) == 2  # each viewing is one record, however it ended
    for record in records:
        assert (record["username"], record["camera_id"], record["protocol"]) == (
            "operator-xingning",
            "tax-1",
            "mjpeg",
        )
        assert record["bytes"] > 0
        assert record["started_at"] < record["ended_at"]


async def test_mjpeg_websocket_with_an_api_token(live: RunningApp) -> None:
    viewer = await live.user("xingning", "viewer")
    token = (await viewer.post("/api/v1/auth/tokens", json={"name": "wall"})).json()["token"]
    async with connect(
        _ws_url(live, "legal-1"), additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=5
    ) as ws:
        await _jpegs(ws, 1)
    bad = {"Authorization": "Bearer not-a-token"}
    async with connect(_ws_url(live, "legal-1"), additional_headers=bad, open_timeout=5) as ws:
        assert await _close_code(ws) == 4401


def test_same_origin_rule() -> None:
    def check(origin: str | None, host: str) -> bool:
        headers = {"host": host} if origin is None else {"host": host, "origin": origin}
        return same_origin(Headers(headers))

    assert check("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert check("https://VMS.example", "vms.example:443")
    assert check("http://vms.example:80", "vms.example")
    assert check("http://[::1]:8080", "[::1]:8080")
    assert check(None, "vms.example")  # a program, not a page
    assert not check("http://127.0.0.1:8081", "127.0.0.1:8080")
    assert not check("https://vms.example", "vms.example:80")
    assert not check("null", "vms.example")
    assert not check("file://", "vms.example")


# -- status bar -----------------------------------------------------------------------------


async def test_status_counts_only_the_callers_cameras(live: RunningApp) -> None:
    meizhou = await live.user("meizhou", "viewer")
    xingning = await live.admin("xingning")
    assert (await live.http.get("/api/v1/status")).status_code == 401
    assert (await meizhou.get("/api/v1/status")).json() == {
        "online": 1,
        "total": 2,
        "viewers": 0,
        "ready": True,
        "platforms": [],
    }
    assert (await xingning.get("/api/v1/status")).json() == {
        "online": 2,
        "total": 4,
        "viewers": 0,
        "ready": True,
        "platforms": [],  # no superior platform configured
    }
    async with _open(live, "legal-1", xingning) as ws:
        await _jpegs(ws, 1)
        assert (await xingning.get("/api/v1/status")).json()["viewers"] == 1
        assert (await meizhou.get("/api/v1/status")).json()["viewers"] == 0


async def test_the_hall_tree_gets_each_halls_plate(live: RunningApp) -> None:
    meizhou = await live.user("meizhou", "viewer")
    xingning = await live.admin("xingning")
    assert (await meizhou.get("/api/v1/halls")).json() == [
        {
            "id": "tax",
            "name": "国家税务总局兴宁市税务局第一税务分厅办税服务厅",
            "department": "市税务局",
            "plate": "兴宁市政务服务中心税务分厅",
            "cameras": ["tax-1", "tax-2"],
            "online": 1,
            "total": 2,
        }
    ]
    halls = {hall["id"]: hall for hall in (await xingning.get("/api/v1/halls")).json()}
    assert halls["legal-services"]["plate"] == "", "a hall without a plate has none"
