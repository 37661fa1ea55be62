"""A viewer that stops reading (a frozen browser, a suspended laptop) is cut within
the write timeout and its viewing recorded, over MJPEG-over-HTTP and over both
WebSockets (MJPEG, MSE).

A raw socket with a small receive buffer asks for the stream, reads the head of the
answer, then reads nothing more; the real app under uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time

import pytest

from tests.app_fixtures import RunningApp, serve_app
from vms.deps import SESSION_COOKIE

SITE = """
server:
  write_timeout: 1
pictures:
  mjpeg_max_fps: 25
  jpeg_quality: 95
centres:
  - id: xingning
    name: 兴宁市政务服务中心
    halls: all
halls:
  - id: tax
    name: 兴宁市税务局办税服务厅
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1?size=640x360&gop=10
"""

CUT_WITHIN = 15.0
"""Seconds after the viewer stops reading by which it must be cut: the write timeout
(1 s) and generous room for a busy machine. Before, an MJPEG viewer was held for
good, an MSE viewer for as long as its slow stream took to fill the buffers."""


def _request(path: str, cookie: str, websocket: bool) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", f"Cookie: {SESSION_COOKIE}={cookie}"]
    if websocket:
        key = base64.b64encode(os.urandom(16)).decode()
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}"]
        lines += ["Sec-WebSocket-Version: 13"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _frozen_viewer(port: int, request: bytes) -> socket.socket:
    """A connection that has read the answer's head and will read nothing more."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    head = sock.recv(1024)
    assert head.startswith((b"HTTP/1.1 200", b"HTTP/1.1 101")), head[:200]
    return sock


def _drained_to_the_end(sock: socket.socket, within: float) -> bool:
    """Read what is left; True when the server has closed the connection."""
    sock.settimeout(1)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if not sock.recv(1 << 16):
                return True
        except TimeoutError:
            continue
        except ConnectionError:
            return True
    return False


async def _views(app: RunningApp, protocol: str) -> list[dict[str, object]]:
    admin = await app.admin("xingning")
    res = await admin.get("/api/v1/audit", params={"action": "view"})
    assert res.status_code == 200, res.text
    return [record for record in res.json() if record["protocol"] == protocol]


@pytest.mark.parametrize(
    ("path", "protocol", "websocket"),
    [
        ("/api/v1/cameras/tax-1/stream.mjpeg", "mjpeg", False),
        ("/api/v1/cameras/tax-1/mjpeg.ws", "mjpeg", True),
        ("/api/v1/cameras/tax-1/mse.ws", "mse", True),
    ],
)
async def test_a_viewer_that_stops_reading_is_cut_and_recorded(
    path: str, protocol: str, websocket: bool
) -> None:
    async with serve_app(SITE) as app:
        await app.wait_online("tax-1")
        viewer = await app.user("xingning", "viewer")
        port = int(app.base_url.rsplit(":", 1)[1])
        request = _request(path, viewer.cookies[SESSION_COOKIE], websocket)
        sock = await asyncio.to_thread(_frozen_viewer, port, request)
        try:
            stopped = time.monotonic()
            while app.manager.stats("tax-1").viewers == 0:
                assert time.monotonic() - stopped < 10, "the viewer never started"
                await asyncio.sleep(0.05)
            while app.manager.stats("tax-1").viewers:
                assert time.monotonic() - stopped < CUT_WITHIN, "the frozen viewer is still held"
                await asyncio.sleep(0.1)
            cut_after = time.monotonic() - stopped
            while not await _views(app, protocol):
                assert time.monotonic() - stopped < CUT_WITHIN + 5, "no view record"
                await asyncio.sleep(0.1)
            assert await asyncio.to_thread(_drained_to_the_end, sock, 20), "the connection is still open"
            assert cut_after < CUT_WITHIN
        finally:
            sock.close()
