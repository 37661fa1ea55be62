"""MSE over WebSocket, sub-streams and B-frame routing against the real app.

The fragments a viewer receives are written to a file and decoded by PyAV: what a
browser's Media Source would get must be a playable MP4. Cameras are demo
sources, a real H.264 file with B-frames, and (in ``test_playback_h265``) a real
RTSP server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from tests.app_fixtures import RunningApp, serve_app
from tests.media import write_mp4
from tests.whep_client import WhepClient
from vms.deps import SESSION_COOKIE

SITE = """
webrtc:
  ice_host_addresses: [127.0.0.1]
ingest:
  connect_timeout: 1
  backoff_initial: 0.5
  backoff_max: 2
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
  - id: legal-services
    name: 兴宁市公共法律服务中心
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1?size=320x180&gop=25
    sub_url: demo://tax-1-sub?size=160x90&gop=25
  - id: legal-1
    name: 窗口区
    hall: legal-services
    url: {bframes_url}
"""


@pytest.fixture(scope="module")
def bframes_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mp4(tmp_path_factory.mktemp("media") / "bframes.mp4", 2.0, bframes=2)


@pytest.fixture
async def live(bframes_file: Path) -> AsyncIterator[RunningApp]:
    async with serve_app(SITE.format(bframes_url=bframes_file.as_uri())) as app:
        await app.wait_online("tax-1", "legal-1")
        yield app


def ws_url(app: RunningApp, camera: str, kind: str = "mse", **query: str) -> str:
    base = app.base_url.replace("http://", "ws://", 1)
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{base}/api/v1/cameras/{camera}/{kind}.ws" + (f"?{params}" if params else "")


def open_ws(
    app: RunningApp, url: str, client: httpx.AsyncClient | None, origin: str | None = "same"
) -> connect:
    headers = {}
    if client is not None:
        headers["Cookie"] = f"{SESSION_COOKIE}={client.cookies[SESSION_COOKIE]}"
    return connect(
        url,
        origin=Origin(app.base_url if origin == "same" else origin) if origin else None,
        additional_headers=headers,
        open_timeout=5,
        close_timeout=2,
        max_size=None,
    )


async def close_code(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(5):
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


@dataclass
class MseCapture:
    """What an MSE viewer received: the init message, the init segment, the fragments."""

    init: dict[str, Any] = field(default_factory=dict)
    segments: list[bytes] = field(default_factory=list)
    first_fragment_after: float | None = None

    def decode(self, path: Path) -> list[av.VideoFrame]:
        path.write_bytes(b"".join(self.segments))
        with av.open(str(path)) as container:
            return list(container.decode(video=0))


async def receive_mse(ws: ClientConnection, fragments: int, within: float = 10.0) -> MseCapture:
    capture = MseCapture()
    opened = time.monotonic()
    async with asyncio.timeout(within):
        text = await ws.recv()
        assert isinstance(text, str), "the first message must be the init description"
        capture.init = json.loads(text)
        init = await ws.recv()
        assert isinstance(init, bytes) and init[4:8] == b"ftyp"
        capture.segments.append(init)
        while len(capture.segments) <= fragments:
            message = await ws.recv()
            assert isinstance(message, bytes), "no second init expected from a steady camera"
            assert message[4:8] == b"moof"
            if capture.first_fragment_after is None:
                capture.first_fragment_after = time.monotonic() - opened
            capture.segments.append(message)
    return capture


async def test_mse_websocket_sends_playable_fragmented_mp4_and_is_audited(
    live: RunningApp, tmp_path: Path
) -> None:
    operator = await live.user("xingning", "operator")
    async with open_ws(live, ws_url(live, "tax-1"), operator) as ws:
        # The client offers compression, as browsers do; the service declines it, since
        # compressing video fragments once per viewer costs much and saves nothing.
        assert "permessage-deflate" in (ws.request.headers.get("Sec-WebSocket-Extensions") or "")
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        capture = await receive_mse(ws, 40)
        assert live.manager.stats("tax-1").mse_viewers == 1
    init = capture.init
    assert init["type"] == "init" and init["transcoded"] is False
    assert (init["width"], init["height"]) == (320, 180)
    assert init["codec"].startswith("avc1.")
    assert init["mime"] == f'video/mp4; codecs="{init["codec"]}"'
    # The GOP cache is sent at once: the first fragment comes without waiting a GOP.
    assert capture.first_fragment_after is not None and capture.first_fragment_after < 0.5
    frames = capture.decode(tmp_path / "mse.mp4")
    assert len(frames) == 40
    assert {(f.width, f.height) for f in frames} == {(320, 180)}
    assert frames[0].key_frame

    async def left() -> bool:
        return live.manager.stats("tax-1").mse_viewers == 0

    await until(left, "the MSE viewer was still counted after it left")

    async def audited() -> bool:  # the record is written by the audit's own writer task
        return bool((await operator.get("/api/v1/audit", params={"action": "view"})).json())

    await until(audited, "no view record")
    records = (await operator.get("/api/v1/audit", params={"action": "view"})).json()
    assert [(r["camera_id"], r["protocol"]) for r in records] == [("tax-1", "mse")]
    assert records[0]["bytes"] >= sum(len(s) for s in capture.segments)


async def test_mse_websocket_refusals(live: RunningApp) -> None:
    async with open_ws(live, ws_url(live, "tax-1"), None) as ws:
        assert await close_code(ws) == 4401
    meizhou = await live.user("meizhou", "viewer")
    for camera in ("legal-1", "no-such-camera"):
        async with open_ws(live, ws_url(live, camera), meizhou) as ws:
            assert await close_code(ws) == 4404
    with pytest.raises(InvalidStatus) as refused:
        async with open_ws(live, ws_url(live, "tax-1"), meizhou, origin="http://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    with pytest.raises((InvalidStatus, ConnectionClosed)):
        async with open_ws(live, ws_url(live, "tax-1", stream="third"), meizhou) as ws:
            await close_code(ws)
    assert live.manager.stats("tax-1").mse_viewers == 0


async def test_sub_stream_is_pulled_once_and_served_on_request(live: RunningApp, tmp_path: Path) -> None:
    viewer = await live.user("xingning", "viewer")
    camera = (await viewer.get("/api/v1/cameras/tax-1")).json()
    assert camera["streams"] == ["main", "sub"]
    assert camera["live"]["sub"]["state"] == "online"
    async with (
        open_ws(live, ws_url(live, "tax-1", stream="sub"), viewer) as sub_ws,
        open_ws(live, ws_url(live, "tax-1", stream="sub"), viewer) as sub_ws2,
        open_ws(live, ws_url(live, "tax-1"), viewer) as main_ws,
    ):
        sub = await receive_mse(sub_ws, 10)
        await receive_mse(sub_ws2, 10)
        main = await receive_mse(main_ws, 10)
        assert (sub.init["width"], sub.init["height"]) == (160, 90)
        assert (main.init["width"], main.init["height"]) == (320, 180)
        live_state = (await viewer.get("/api/v1/cameras/tax-1")).json()["live"]
        assert live_state["mse_viewers"] == 3
        assert live_state["sub"]["viewers"] == 2
    assert {(f.width, f.height) for f in sub.decode(tmp_path / "sub.mp4")} == {(160, 90)}

    # WebRTC plays the sub-stream too.
    client = WhepClient(ice_host_addresses=["127.0.0.1"])
    async with client:
        await client.connect_http(viewer, "/api/v1/cameras/tax-1/whep?stream=sub")
        assert await client.wait_frames(5, within=10)
        assert (client.frames[0].width, client.frames[0].height) == (160, 90)
    # Each source still has exactly one session, however many viewers came and went.
    stats = live.manager.stats("tax-1")
    assert stats.sessions_opened == 1
    assert stats.sub is not None and stats.sub.sessions_opened == 1


async def test_b_frames_are_refused_over_webrtc_and_played_over_mse(live: RunningApp, tmp_path: Path) -> None:
    viewer = await live.user("xingning", "viewer")

    async def reorders() -> bool:
        return bool((await viewer.get("/api/v1/cameras/legal-1")).json()["live"]["reorders"])

    await until(reorders, "the B-frames were not noticed")
    async with WhepClient() as client:
        offer = await client.create_offer()
    answer = await viewer.post(
        "/api/v1/cameras/legal-1/whep", content=offer, headers={"Content-Type": "application/sdp"}
    )
    assert answer.status_code == 409, answer.text
    assert "MSE" in answer.json()["detail"]

    async with open_ws(live, ws_url(live, "legal-1"), viewer) as ws:
        capture = await receive_mse(ws, 30)
    assert capture.init["codec"].startswith("avc1.64")  # High profile, announced as such
    frames = capture.decode(tmp_path / "bframes.mp4")
    assert len(frames) >= 25
    times = [f.pts for f in frames]
    assert times == sorted(times) and len(set(times)) == len(times)


async def until(check: Any, what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)
