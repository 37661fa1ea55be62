"""One count of viewers across protocols, in the real app: a camera with
``max_viewers_per_camera: 2`` refuses its third viewer whatever the mix of WebRTC
(an aiortc client), RTSP (PyAV, and a raw client that sees the status), MSE and MJPEG
(WebSockets) and GB/T 28181 live sessions (INVITEs from the test superior), each with the
status its protocol has for it; a freed seat is taken again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import av
import httpx
import pytest

from streams import RtspServer
from tests.app_fixtures import RunningApp, serve_app
from tests.vms.gb28181.superior import PASSWORD, REALM, SERVER_ID, Superior
from tests.vms.gb28181.test_cascade import LOCAL_ID, Harness, _in_dialog, invite, offer
from tests.vms.gb28181.test_live_media import RtpReceiver
from tests.vms.rtsp_client import RtspClient
from tests.vms.test_live_ws import close_code, open_ws, receive_mse, ws_url
from tests.vms.test_rtsp_serve import first_width, token_of
from tests.whep_client import WhepClient
from vms.gb28181 import Cascade

SITE = """
webrtc: {{ice_host_addresses: ["127.0.0.1"], max_viewers_per_camera: 2}}
rtsp_server: {{enabled: true, bind: 127.0.0.1, port: 0, session_timeout: 5}}
ingest: {{connect_timeout: 1, backoff_initial: 0.5, backoff_max: 2}}
centres:
  - {{id: xingning, name: 兴宁市政务服务中心, halls: all}}
halls:
  - {{id: tax, name: 第一税务分厅}}
cameras:
  - {{id: tax-1, name: 大厅全景, hall: tax, url: "demo://tax-1?size=320x180&gop=25"}}
  - {{id: tax-2, name: 窗口区, hall: tax, url: "demo://tax-2?size=320x180&gop=25"}}
gb28181:
  platforms:
    - name: meizhou
      server_id: "{server_id}"
      domain: "{realm}"
      host: 127.0.0.1
      port: {port}
      transport: udp
      local_id: "{local_id}"
      local_host: 127.0.0.1
      local_port: 0
      password: {password}
      keepalive_interval: 0.3
      centre: xingning
"""


class Site:
    def __init__(self, app: RunningApp, superior: Superior, viewer: httpx.AsyncClient, token: str) -> None:
        self.app, self.superior, self.viewer, self.token = app, superior, viewer, token
        cascade: Cascade = app.app.state.gb28181
        self.sip = Harness(superior, cascade, None, {})  # type: ignore[arg-type]
        node = cascade.directory(cascade.platforms[0]).camera_node("tax-1")
        assert node is not None
        self.channel = node.gb_id

    @property
    def rtsp_port(self) -> int:
        server: RtspServer = self.app.app.state.rtsp
        return server.port

    def rtsp(self, camera: str = "tax-1") -> RtspClient:
        return RtspClient("127.0.0.1", self.rtsp_port, f"/{camera}", "viewer-xingning", self.token)

    def viewers(self) -> tuple[int, int, int, int, int]:
        s = self.app.manager.stats("tax-1")
        return s.webrtc_viewers, s.rtsp_viewers, s.mse_viewers, s.mjpeg_viewers, s.gb28181_viewers

    async def invite(self, port: int) -> tuple[str, Any]:
        body = offer(self.channel, ssrc="0100000077").replace(b"m=video 40000", f"m=video {port}".encode())
        return await invite(self.sip, self.channel, body)

    async def refused_everywhere(self, mix: str) -> None:
        """Every protocol refuses a third viewer of tax-1, naming ``mix``."""
        full = f"camera tax-1 already has 2 viewers ({mix})"
        async with WhepClient(decode=False) as whep:
            res = await self.viewer.post(
                "/api/v1/cameras/tax-1/whep",
                content=await whep.create_offer(),
                headers={"content-type": "application/sdp"},
            )
        assert (res.status_code, res.json()["detail"]) == (503, full)
        assert res.headers["retry-after"]
        for kind in ("mse", "mjpeg"):
            async with open_ws(self.app, ws_url(self.app, "tax-1", kind), self.viewer) as ws:
                assert await close_code(ws) == 4503
                assert ws.close_reason == full
        async with self.viewer.stream("GET", "/api/v1/cameras/tax-1/stream.mjpeg") as mjpeg:
            assert mjpeg.status_code == 503
        async with self.rtsp() as rtsp:
            assert (await rtsp.describe()).status == 200  # describing takes no seat
            assert (await rtsp.setup_video()).status == 453
        _, busy = await self.invite(40000)
        assert busy.status == 486 and busy.h("Warning").endswith(f'"{full}"'), busy.h("Warning")


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    superior = Superior("udp")
    await superior.start()
    config = SITE.format(
        server_id=SERVER_ID, realm=REALM, port=superior.port, local_id=LOCAL_ID, password=PASSWORD
    )
    try:
        async with serve_app(config) as app:
            await app.wait_online("tax-1", "tax-2")
            viewer = await app.user("xingning", "viewer")
            site = Site(app, superior, viewer, await token_of(viewer))
            await site.sip.registered(within=10)
            yield site
    finally:
        await superior.stop()


async def until(check: Callable[[], bool | Awaitable[bool]], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        done = check()
        if done if isinstance(done, bool) else await done:
            return
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_the_third_viewer_is_refused_whatever_the_protocols(site: Site) -> None:
    loop = asyncio.get_running_loop()
    transport, receiver = await loop.create_datagram_endpoint(RtpReceiver, local_addr=("127.0.0.1", 0))
    rtsp_url = f"rtsp://viewer-xingning:{site.token}@127.0.0.1:{site.rtsp_port}/tax-1"
    container = await asyncio.to_thread(av.open, rtsp_url, options={"rtsp_transport": "tcp"}, timeout=10)
    whep = WhepClient(decode=False)
    try:
        assert await asyncio.to_thread(first_width, container) == 320
        await whep.connect_http(site.viewer, "/api/v1/cameras/tax-1/whep")
        assert await whep.wait_frames(1, within=10)
        assert site.viewers() == (1, 1, 0, 0, 0)
        await site.refused_everywhere("WebRTC 1, RTSP 1")
        async with site.rtsp("tax-2") as other:  # another camera has its own seats
            assert (await other.describe()).status == 200 and (await other.setup_video()).status == 200

        await whep.close()  # the WebRTC seat, freed, goes to a superior platform
        await until(lambda: site.viewers()[0] == 0, "the WebRTC seat was not freed")
        call_id, answer = await site.invite(transport.get_extra_info("sockname")[1])
        assert answer.status == 200, answer.first
        site.superior.send(_in_dialog(site.sip, "ACK", call_id, answer).replace(b"2 ACK", b"1 ACK"))
        await until(lambda: len(receiver.packets) > 10, "no PS packets for the superior")
        assert site.viewers() == (0, 1, 0, 0, 1)
        metrics = (await site.app.http.get("/metrics")).text
        assert 'hallwatch_viewers{camera="tax-1",hall="tax",protocol="gb28181"} 1.0' in metrics
        await site.refused_everywhere("RTSP 1, GB/T 28181 1")

        site.superior.send(_in_dialog(site.sip, "BYE", call_id, answer))  # the cascade seat, to MSE
        await until(lambda: site.viewers()[4] == 0, "the cascade seat was not freed")
        async with open_ws(site.app, ws_url(site.app, "tax-1"), site.viewer) as ws:
            await receive_mse(ws, 3)
            assert site.viewers() == (0, 1, 1, 0, 0)
            await site.refused_everywhere("MSE 1, RTSP 1")
        await until(lambda: site.viewers()[2] == 0, "the MSE seat was not freed")
    finally:
        await whep.close()
        container.close()
        transport.close()
    await until(lambda: site.viewers() == (0, 0, 0, 0, 0), "the RTSP seat was not freed")
    async with site.viewer.stream("GET", "/api/v1/cameras/tax-1/stream.mjpeg") as mjpeg:
        assert mjpeg.status_code == 200  # every seat free again
        await until(lambda: site.viewers()[3] == 1, "the MJPEG viewer took no seat")
