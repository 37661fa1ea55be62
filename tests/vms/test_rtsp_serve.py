"""RTSP re-serve in the real app: API tokens as Digest passwords, centre visibility, the audit
trail, metrics, and one upstream session for RTSP and MSE viewers together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import av
import httpx
import pytest

from streams import RtspServer
from tests.app_fixtures import RunningApp, serve_app
from tests.rtsp_fixtures import RtspServerFactory
from tests.vms.test_live_ws import open_ws, receive_mse, ws_url

SITE = """
rtsp_server: {{enabled: true, bind: 127.0.0.1, port: 0, session_timeout: 5}}
ingest: {{connect_timeout: 1, backoff_initial: 0.5, backoff_max: 2}}
centres:
  - {{id: meizhou, name: 梅州市政务服务中心, halls: [tax]}}
  - {{id: xingning, name: 兴宁市政务服务中心, halls: all}}
halls:
  - {{id: tax, name: 第一税务分厅}}
  - {{id: legal-services, name: 兴宁市公共法律服务中心}}
cameras:
  - {{id: tax-1, name: 大厅全景, hall: tax, url: "demo://tax-1?size=320x180&gop=25"}}
  - {{id: legal-1, name: 窗口区, hall: legal-services, url: "{upstream}"}}
"""


@pytest.fixture
async def live(rtsp_server: RtspServerFactory) -> AsyncIterator[RunningApp]:
    upstream = rtsp_server({"legal": "640x360@25,800k,gop=25"})
    async with serve_app(SITE.format(upstream=upstream.url("legal"))) as app:
        await app.wait_online("tax-1", "legal-1")
        yield app


async def token_of(client: httpx.AsyncClient) -> str:
    res = await client.post("/api/v1/auth/tokens", json={"name": "nvr", "expires_days": 1})
    assert res.status_code == 201, res.text
    token: str = res.json()["token"]
    return token


def url(app: RunningApp, user: str, token: str, camera: str) -> str:
    server: RtspServer = app.app.state.rtsp
    return f"rtsp://{user}:{token}@127.0.0.1:{server.port}/{camera}"


def frames(address: str, count: int = 5) -> int:
    with av.open(address, options={"rtsp_transport": "tcp"}, timeout=10) as container:
        for index, _frame in enumerate(container.decode(video=0), 1):
            if index >= count:
                return index
    return 0


def first_width(container: av.container.InputContainer) -> int:
    return next(iter(container.decode(video=0))).width


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_token_digest_visibility_audit_and_metrics(live: RunningApp) -> None:
    viewer = await live.user("meizhou", "viewer")
    token = await token_of(viewer)
    assert await asyncio.to_thread(frames, url(live, "viewer-meizhou", token, "tax-1")) == 5
    with pytest.raises(av.error.HTTPNotFoundError):  # another centre's hall: as if it did not exist
        await asyncio.to_thread(frames, url(live, "viewer-meizhou", token, "legal-1"))
    with pytest.raises(av.error.HTTPUnauthorizedError):
        await asyncio.to_thread(frames, url(live, "viewer-meizhou", "hw_wrong", "tax-1"))
    with pytest.raises(av.error.HTTPUnauthorizedError):  # the login password is not the RTSP password
        await asyncio.to_thread(frames, url(live, "viewer-meizhou", "a-user-password-for-tests", "tax-1"))

    operator = await live.user("meizhou", "operator")

    async def audited() -> bool:
        records = (await operator.get("/api/v1/audit", params={"action": "view"})).json()
        return any(r["protocol"] == "rtsp" for r in records)

    await until(audited, "no rtsp view record")
    [record] = [r for r in (await operator.get("/api/v1/audit", params={"action": "view"})).json()]
    assert (record["username"], record["camera_id"], record["protocol"]) == (
        "viewer-meizhou",
        "tax-1",
        "rtsp",
    )
    assert record["bytes"] > 1000 and record["ended_at"] is not None
    revoke = await viewer.get("/api/v1/auth/tokens")
    await viewer.delete(f"/api/v1/auth/tokens/{revoke.json()[0]['id']}")
    with pytest.raises(av.error.HTTPUnauthorizedError):  # a revoked token is refused at once
        await asyncio.to_thread(frames, url(live, "viewer-meizhou", token, "tax-1"))
    metrics = (await live.http.get("/metrics")).text
    assert 'protocol="rtsp"' in metrics


async def test_one_upstream_session_for_rtsp_and_mse_and_a_vanished_client_is_freed(
    live: RunningApp,
) -> None:
    client = await live.user("xingning", "viewer")
    token = await token_of(client)
    address = url(live, "viewer-xingning", token, "legal-1")
    containers = [
        await asyncio.to_thread(av.open, address, options={"rtsp_transport": "tcp"}, timeout=10)
        for _ in range(3)
    ]
    try:
        for container in containers:
            assert await asyncio.to_thread(first_width, container) == 640
        async with open_ws(live, ws_url(live, "legal-1"), client) as ws:
            await receive_mse(ws, 5)
            stats = live.manager.stats("legal-1")
            assert (stats.rtsp_viewers, stats.mse_viewers, stats.sessions_opened) == (3, 1, 1)
    finally:
        for container in containers:
            container.close()

    async def freed() -> bool:
        return live.manager.stats("legal-1").rtsp_viewers == 0

    await until(freed, "RTSP sessions not freed after their clients left")
    assert live.manager.stats("legal-1").sessions_opened == 1
