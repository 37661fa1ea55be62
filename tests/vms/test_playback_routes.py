"""Playback through the whole service: a demo camera recorded in 2-second segments, played
back as a progressive MP4 and over the MSE WebSocket, for each role and centre, audited."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tests.app_fixtures import RunningApp, serve_app
from tests.vms.test_live_ws import until

SITE = """
webrtc:
  ice_host_addresses: ["127.0.0.1"]
recording:
  record: true
  segment_seconds: 2
auth:
  viewer_permissions: [playback]
centres:
  - id: meizhou
    name: 梅州市政务服务中心
    halls: [legal-services]
  - id: xingning
    name: 兴宁市政务服务中心
    halls: all
halls:
  - id: tax
    name: 国家税务总局兴宁市税务局第一税务分厅办税服务厅
  - id: legal-services
    name: 兴宁市公共法律服务中心
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1?size=320x180&gop=25
  - id: legal-1
    name: 窗口区
    hall: legal-services
    url: demo://legal-1?size=320x180&gop=25
    record: false
"""


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
async def recording() -> AsyncIterator[RunningApp]:
    async with serve_app(SITE) as app:
        await app.wait_online("tax-1", within=30)
        yield app


async def recorded_span(client: httpx.AsyncClient, seconds: float) -> tuple[datetime, datetime]:
    """Wait until ``seconds`` are recorded; the first span."""
    for _ in range(300):
        listed = (await client.get("/api/v1/cameras/tax-1/recordings")).json()
        spans = listed["spans"]
        if spans:
            start, end = datetime.fromisoformat(spans[0]["start"]), datetime.fromisoformat(spans[0]["end"])
            if (end - start).total_seconds() >= seconds:
                return start, end
        await asyncio.sleep(0.1)
    raise AssertionError(f"{seconds} s were not recorded in 30 s")


def video_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(f.time) for f in container.decode(video=0) if f.time is not None]


async def audit_records(client: httpx.AsyncClient, protocol: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = (await client.get("/api/v1/audit", params={"action": "playback"})).json()
    return [r for r in records if r["protocol"] == protocol]


async def test_mp4_playback_for_each_role_and_centre(recording: RunningApp, tmp_path: Path) -> None:
    operator = await recording.user("xingning", "operator")
    start, end = await recorded_span(operator, 5)
    # While the camera records, the span already covers the segment being written.
    assert datetime.now(UTC) - end < timedelta(seconds=1.5)
    asked = start + timedelta(seconds=1.5)
    query = {"start": iso(asked), "duration": "3"}
    clients = {
        ("xingning", "operator"): operator,
        ("xingning", "admin"): await recording.admin("xingning"),
        ("xingning", "viewer"): await recording.user("xingning", "viewer"),
    }
    for (centre, role), client in clients.items():
        res = await client.get("/api/v1/cameras/tax-1/playback.mp4", params=query)
        assert res.status_code == 200, (centre, role, res.text)
        assert res.headers["content-type"] == "video/mp4"
        media_zero = datetime.fromisoformat(res.headers["x-playback-start"])
        assert asked - timedelta(seconds=1.05) <= media_zero <= asked  # a keyframe each second
        path = tmp_path / f"{role}.mp4"
        path.write_bytes(res.content)
        times = video_times(path)
        assert times[0] == 0 and times == sorted(times)
        assert 3 <= times[-1] + 0.04 <= 4.1
    for role in ("viewer", "operator", "admin"):
        other = await recording.user("meizhou", role) if role != "admin" else await recording.admin("meizhou")
        res = await other.get("/api/v1/cameras/tax-1/playback.mp4", params=query)
        assert res.status_code == 404, (role, res.text)
    assert (await recording.http.get("/api/v1/cameras/tax-1/playback.mp4", params=query)).status_code == 401
    nothing = await operator.get(
        "/api/v1/cameras/tax-1/playback.mp4", params={"start": iso(start - timedelta(hours=2))}
    )
    assert nothing.status_code == 404 and nothing.json()["detail"] == "nothing recorded"
    unrecorded = await operator.get("/api/v1/cameras/legal-1/playback.mp4", params=query)
    assert unrecorded.status_code == 404
    too_long = await operator.get("/api/v1/cameras/tax-1/playback.mp4", params={**query, "duration": "3601"})
    assert too_long.status_code == 422

    async def three_records() -> bool:
        return len(await audit_records(operator, "mp4")) == 3

    await until(three_records, "each mp4 playback leaves one record")
    for record in await audit_records(operator, "mp4"):
        detail = json.loads(record["detail"])
        assert detail["stream"] == "main"
        assert datetime.fromisoformat(detail["from"]) == media_zero
        assert datetime.fromisoformat(detail["to"]) >= asked + timedelta(seconds=3)
        assert record["camera_id"] == "tax-1" and record["bytes"] > 10_000
