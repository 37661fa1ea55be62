"""Playback through the whole service: a demo camera recorded in 2-second segments, played
back as a progressive MP4 and over the MSE WebSocket, for each role and centre, audited."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tests.app_fixtures import RunningApp, serve_app
from tests.vms.test_live_ws import close_code, open_ws, until, ws_url

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


class Player:
    """A client of playback.ws: what it received, by generation."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.texts: list[dict[str, Any]] = []
        self.media: dict[int, list[bytes]] = {}
        self.generation = 0

    async def until(self, kind: str, within: float = 10.0) -> dict[str, Any]:
        """Receive until a text message of ``kind``; it."""
        async with asyncio.timeout(within):
            while True:
                message = await self.ws.recv()
                if isinstance(message, bytes):
                    self.media.setdefault(self.generation, []).append(message)
                    continue
                parsed: dict[str, Any] = json.loads(message)
                self.texts.append(parsed)
                if parsed["type"] == "init":
                    self.generation = parsed["generation"]
                if parsed["type"] == kind:
                    return parsed

    async def quiet(self, seconds: float) -> int:
        """Bytes of media received in ``seconds``."""
        before = sum(len(m) for m in self.media.get(self.generation, []))
        with contextlib.suppress(TimeoutError):
            await self.until("never", within=seconds)
        return sum(len(m) for m in self.media.get(self.generation, [])) - before

    def media_seconds(self, path: Path) -> list[float]:
        path.write_bytes(b"".join(self.media[self.generation]))
        return video_times(path)


async def test_ws_playback_seeks_paces_and_is_audited(recording: RunningApp, tmp_path: Path) -> None:
    viewer = await recording.user("xingning", "viewer")  # allowed by auth.viewer_permissions
    me = (await viewer.get("/api/v1/auth/me")).json()
    assert "playback" in me["permissions"] and "snapshot" not in me["permissions"]
    start, _ = await recorded_span(viewer, 7)
    url = ws_url(recording, "tax-1", "playback", start=iso(start + timedelta(seconds=0.5)))
    async with open_ws(recording, url, viewer) as ws:
        player = Player(ws)
        init = await player.until("init")
        assert init["generation"] == 1 and init["codec"].startswith("avc1.") and init["audio"] is False
        assert (init["width"], init["height"]) == (320, 180)
        assert init["mime"] == f'video/mp4; codecs="{init["codec"]}"'
        first_map = await player.until("map")
        assert first_map == {"type": "map", "generation": 1, "media": 0.0, "wall": first_map["wall"]}
        assert datetime.fromisoformat(first_map["wall"]) == start  # the first keyframe recorded
        # The client reports no progress: after the first 4 s (and the batch in flight) nothing more.
        await player.quiet(1.0)
        assert await player.quiet(1.0) == 0
        sent = player.media_seconds(tmp_path / "g1.mp4")
        assert 4.0 <= sent[-1] + 0.04 <= 5.0
        # It plays on: the server follows its position.
        await ws.send(json.dumps({"type": "position", "generation": 1, "media": 3.0}))
        assert await player.quiet(1.0) > 0
        assert player.media_seconds(tmp_path / "g1b.mp4")[-1] + 0.04 >= 6.5
        # A seek starts generation 2 at the keyframe at or before its target.
        target = start + timedelta(seconds=4.5)
        await ws.send(json.dumps({"type": "seek", "to": iso(target)}))
        init2 = await player.until("init")
        assert init2["generation"] == 2
        wall = datetime.fromisoformat((await player.until("map"))["wall"])
        assert target - timedelta(seconds=1.05) <= wall <= target
        await player.quiet(1.0)
        times = player.media_seconds(tmp_path / "g2.mp4")
        assert times[0] == 0 and times == sorted(times)
        # Playing on to the end of what is recorded, at speed 8.
        await ws.send(json.dumps({"type": "speed", "value": 8}))
        await ws.send(json.dumps({"type": "position", "generation": 2, "media": 1000.0}))
        end = await player.until("end")
        assert end["generation"] == 2
        assert datetime.now(UTC) - datetime.fromisoformat(end["wall"]) < timedelta(seconds=3)
        # The generation follows the recording: what is recorded next comes in it, no new init.
        at_end = player.media_seconds(tmp_path / "g2-end.mp4")[-1]
        assert await player.quiet(2.5) > 0
        followed = player.media_seconds(tmp_path / "g2-followed.mp4")
        assert followed[-1] >= at_end + 1.5 and followed == sorted(followed)
        assert [t["type"] for t in player.texts if t["type"] == "init"] == ["init", "init"]
        # Seeking where nothing is recorded ends the new generation at once.
        await ws.send(json.dumps({"type": "seek", "to": iso(datetime.now(UTC) + timedelta(hours=1))}))
        # Generation 2, following the recording, may say "end" again before the seek lands.
        nothing = await player.until("end")
        while nothing["generation"] == 2:
            nothing = await player.until("end")
        assert nothing["generation"] == 3
        assert [t["type"] for t in player.texts[-2:]] == ["end", "end"], player.texts

    admin = await recording.admin("xingning")

    async def audited() -> bool:
        return bool(await audit_records(admin, "mse"))

    await until(audited, "no playback record of the WebSocket")
    (record,) = await audit_records(admin, "mse")
    detail = json.loads(record["detail"])
    assert detail["stream"] == "main" and len(detail["ranges"]) == 2
    (first_from, first_to), (second_from, _) = detail["ranges"]
    assert datetime.fromisoformat(first_from) == start
    assert datetime.fromisoformat(first_to) >= start + timedelta(seconds=6.5)
    assert datetime.fromisoformat(second_from) == wall
    assert record["bytes"] > 10_000 and record["camera_id"] == "tax-1"


async def test_ws_refusals(recording: RunningApp) -> None:
    at = iso(datetime.now(UTC) - timedelta(seconds=5))
    url = ws_url(recording, "tax-1", "playback", start=at)
    async with open_ws(recording, url, None) as ws:
        assert await close_code(ws) == 4401
    for role in ("viewer", "operator"):
        meizhou = await recording.user("meizhou", role)
        async with open_ws(recording, url, meizhou) as ws:
            assert await close_code(ws) == 4404
    operator = await recording.user("xingning", "operator")
    async with open_ws(recording, ws_url(recording, "tax-1", "playback", start="yesterday"), operator) as ws:
        assert await close_code(ws) == 4400
    # Nothing after the start (a start long before the recordings plays from their first moment).
    later = ws_url(recording, "tax-1", "playback", start=iso(datetime.now(UTC) + timedelta(hours=1)))
    async with open_ws(recording, later, operator) as ws:
        message = json.loads(await ws.recv())
        assert message == {"type": "error", "detail": "nothing recorded"}
        assert await close_code(ws) == 4404


async def test_without_the_grant_a_viewer_may_not_play_back() -> None:
    site = SITE.replace("auth:\n  viewer_permissions: [playback]\n", "")
    async with serve_app(site) as app:
        viewer = await app.user("xingning", "viewer")
        me = (await viewer.get("/api/v1/auth/me")).json()
        assert me["permissions"] == ["watch"]
        at = iso(datetime.now(UTC))
        res = await viewer.get("/api/v1/cameras/tax-1/playback.mp4", params={"start": at})
        assert res.status_code == 403
        async with open_ws(app, ws_url(app, "tax-1", "playback", start=at), viewer) as ws:
            assert await close_code(ws) == 4403
