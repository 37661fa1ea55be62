"""RTSP Digest failures in the audit trail and under the login lockout, like logins over
HTTP: real app, real database, FFmpeg (through PyAV) and a raw RTSP client on real sockets."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import av
import httpx
import pytest

from streams import RtspServer
from tests.app_fixtures import USER_PASSWORD, RunningApp, serve_app
from tests.vms.rtsp_client import RtspClient
from tests.vms.test_rtsp_serve import frames, token_of

SITE = """
auth: {max_failed_logins: 3, lockout_seconds: 600, login_audit_interval: 1}
rtsp_server: {enabled: true, bind: 127.0.0.1, port: 0, session_timeout: 5}
centres:
  - {id: meizhou, name: 梅州市政务服务中心, halls: [tax]}
  - {id: xingning, name: 兴宁市政务服务中心, halls: all}
halls:
  - {id: tax, name: 第一税务分厅}
  - {id: legal-services, name: 兴宁市公共法律服务中心}
cameras:
  - {id: tax-1, name: 大厅全景, hall: tax, url: "demo://tax-1?size=320x180&gop=25"}
  - {id: legal-1, name: 窗口区, hall: legal-services, url: "demo://legal-1?size=320x180&gop=25"}
"""


@pytest.fixture
async def live() -> AsyncIterator[RunningApp]:
    async with serve_app(SITE) as app:
        await app.wait_online("tax-1", "legal-1")
        yield app


def rtsp_port(app: RunningApp) -> int:
    server: RtspServer = app.app.state.rtsp
    return server.port


def address(app: RunningApp, user: str, token: str, camera: str = "tax-1") -> str:
    return f"rtsp://{user}:{token}@127.0.0.1:{rtsp_port(app)}/{camera}"


async def statuses(app: RunningApp, user: str, token: str, camera: str = "tax-1") -> list[int]:
    """What a client that describes as FFmpeg does is answered: without credentials, then with."""
    async with RtspClient("127.0.0.1", rtsp_port(app), f"/{camera}", user, token) as client:
        await client.describe()
        return [answer.status for answer in client.answers]


async def rows(admin: httpx.AsyncClient, action: str) -> list[dict[str, Any]]:
    res = await admin.get("/api/v1/audit", params={"action": action})
    assert res.status_code == 200, res.text
    found: list[dict[str, Any]] = res.json()
    return found


def count_of(row: dict[str, Any]) -> int:
    detail = row["detail"]
    return int(json.loads(detail)["count"]) if detail and detail.startswith("{") else 1


async def test_failures_are_audited_once_each_and_a_normal_client_leaves_none(live: RunningApp) -> None:
    admin = await live.admin("meizhou")
    viewer = await live.user("meizhou", "viewer")
    token = await token_of(viewer)
    assert await asyncio.to_thread(frames, address(live, "viewer-meizhou", token)) == 5
    assert await statuses(live, "viewer-meizhou", token) == [401, 200]  # challenged first, as every client
    assert await rows(admin, "login_failure") == []

    with pytest.raises(av.error.HTTPUnauthorizedError):
        await asyncio.to_thread(frames, address(live, "viewer-meizhou", "hw_wrong"))
    assert await statuses(live, "nobody", token) == [401, 401]
    failures = await rows(admin, "login_failure")
    assert sorted((r["username"], r["centre_id"], r["protocol"], r["detail"]) for r in failures) == [
        ("nobody", None, "rtsp", "unknown user"),
        ("viewer-meizhou", "meizhou", "rtsp", "wrong token"),
    ]
    assert {r["source_addr"] for r in failures} == {"127.0.0.1"}

    with pytest.raises(av.error.HTTPNotFoundError):  # another centre's camera: refused, recorded
        await asyncio.to_thread(frames, address(live, "viewer-meizhou", token, "legal-1"))
    for _ in range(4):  # a recorder retrying the wrong camera: counted, not a row each
        assert await statuses(live, "viewer-meizhou", token, "legal-1") == [401, 404]
    [first] = await rows(admin, "view_refused")
    assert (first["username"], first["centre_id"], first["protocol"]) == ("viewer-meizhou", "meizhou", "rtsp")
    assert "legal-1" in first["detail"]
    deadline = time.monotonic() + 10
    while sum(count_of(r) for r in await rows(admin, "view_refused")) < 5:
        assert time.monotonic() < deadline, "the refusals were not summed"
        await asyncio.sleep(0.1)
    assert len(await rows(admin, "view_refused")) == 2
    assert len(await rows(admin, "login_failure")) == 2  # the right token is still no failure
    assert await asyncio.to_thread(frames, address(live, "viewer-meizhou", token)) == 5


async def test_guessing_over_rtsp_locks_the_address_out_of_rtsp_and_http(live: RunningApp) -> None:
    admin = await live.admin("meizhou")
    viewer = await live.user("meizhou", "viewer")
    token = await token_of(viewer)
    for guess in range(3):
        assert await statuses(live, f"guess-{guess}", f"hw_{guess}") == [401, 401]
    assert len(await rows(admin, "login_failure")) == 3
    # Locked out: the right token is refused too, over RTSP and for an HTTP login.
    with pytest.raises(av.error.HTTPUnauthorizedError):
        await asyncio.to_thread(frames, address(live, "viewer-meizhou", token))
    for _ in range(3):
        assert await statuses(live, "viewer-meizhou", token) == [401, 401]
    async with httpx.AsyncClient(base_url=live.base_url) as browser:
        login = await browser.post(
            "/api/v1/auth/login", json={"username": "viewer-meizhou", "password": USER_PASSWORD}
        )
        assert login.status_code == 429
    assert len(await rows(admin, "login_failure")) == 3  # a refusal while locked is no new failure
    locked = await rows(admin, "login_locked")
    assert sorted(r["protocol"] or "http" for r in locked) == ["http", "rtsp"]  # the rest summed later
    assert {(r["username"], r["centre_id"]) for r in locked} == {("viewer-meizhou", "meizhou")}
