"""The RTSP server against independent clients (FFmpeg through PyAV, ffprobe, a raw socket):
demo and real H.265 cameras, TCP and UDP, Digest refusals, sessions freed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import av
import pytest

from streams import CameraSpec, IngestPolicy, RelaySettings, SourceOptions, StreamManager
from streams.rtsp_server import AccessRequest, RtspServer, RtspSettings, RtspViewing, Verdict, ha1
from tests.rtsp_fixtures import RtspServerFactory

USER, PASSWORD = "alice", "correct horse"
POLICY = IngestPolicy(stall_timeout=3, first_packet_timeout=5, backoff_initial=0.3, backoff_max=1.0)


@dataclass
class Gate:
    """An authorizer that knows one user, who may see ``visible`` cameras."""

    visible: set[str]
    ended: list[RtspViewing] = field(default_factory=list)

    async def __call__(self, request: AccessRequest) -> Verdict:
        if request.credentials.username != USER or not request.credentials.matches(ha1(USER, PASSWORD)):
            return Verdict(401)
        if request.camera_id not in self.visible:
            return Verdict(404)
        return Verdict(200, user=USER, on_end=self.ended.append)


@dataclass
class Served:
    manager: StreamManager
    server: RtspServer
    gate: Gate

    def url(self, path: str, *, password: str = PASSWORD) -> str:
        return f"rtsp://{USER}:{password.replace(' ', '%20')}@127.0.0.1:{self.server.port}/{path}"


@pytest.fixture
async def served(rtsp_server: RtspServerFactory) -> AsyncIterator[Served]:
    upstream = rtsp_server({"hevc": "640x360@25,800k,gop=25,codec=h265"})
    cameras = [
        CameraSpec(id="demo", source=SourceOptions(url="demo://demo?size=320x180&fps=25&gop=25")),
        CameraSpec(id="hevc", source=SourceOptions(url=upstream.url("hevc")), policy=POLICY),
        CameraSpec(id="hidden", source=SourceOptions(url="demo://hidden?size=320x180&fps=25&gop=25")),
    ]
    manager = StreamManager(cameras, RelaySettings())
    await manager.start()
    gate = Gate({"demo", "hevc"})
    server = RtspServer(manager, gate, RtspSettings(port=0, session_timeout=5))
    await server.start()
    try:
        yield Served(manager, server, gate)
    finally:
        await server.stop()
        await manager.stop()


def decode(url: str, transport: str, frames: int = 10) -> tuple[str, int, int]:
    """Open ``url`` with FFmpeg and decode ``frames`` pictures: (codec, width, first frame's keyness)."""
    options = {"rtsp_transport": transport, "stimeout": "5000000"}
    with av.open(url, options=options, timeout=10) as container:
        stream = container.streams.video[0]
        decoded = 0
        first_key = -1
        for frame in container.decode(stream):
            if first_key < 0:
                first_key = int(frame.key_frame)
            decoded += 1
            if decoded >= frames:
                return stream.codec_context.name, frame.width, first_key
    raise AssertionError(f"only {decoded} frames")


async def until(check, within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_demo_camera_decodes_over_tcp_and_udp(served: Served, transport: str) -> None:
    codec, width, first_key = await asyncio.to_thread(decode, served.url("demo"), transport)
    assert (codec, width, first_key) == ("h264", 320, 1)
    await until(lambda: served.manager.rtsp.session_count() == 0)
    [viewing] = served.gate.ended
    assert viewing.camera_id == "demo" and viewing.transport == transport and viewing.bytes_sent > 1000


async def test_h265_camera_passes_through_with_parameter_sets(served: Served) -> None:
    codec, width, first_key = await asyncio.to_thread(decode, served.url("hevc"), "tcp")
    assert (codec, width, first_key) == ("hevc", 640, 1)
    assert not served.manager.stats("hevc").transcoding
    assert served.manager.stats("hevc").sessions_opened == 1


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed")
async def test_ffprobe_reads_the_sub_path_and_describe_has_sprop(served: Served) -> None:
    probe = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_streams", "-of", "json",
        served.url("demo/sub"), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(probe.communicate(), 20)
    [stream] = json.loads(out)["streams"]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 320, 180)
    status, _, body = await describe(served, "demo", authorized=True)
    assert status == 200
    assert re.search(r"sprop-parameter-sets=[A-Za-z0-9+/=]+,[A-Za-z0-9+/=]+", body)
    status, _, body = await describe(served, "hevc", authorized=True)
    assert status == 200 and "sprop-vps=" in body and "sprop-sps=" in body and "sprop-pps=" in body


async def describe(
    served: Served, path: str, *, authorized: bool, password: str = PASSWORD
) -> tuple[int, str, str]:
    """DESCRIBE over a raw socket, answering the Digest challenge by hand."""
    reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port)
    url = f"rtsp://127.0.0.1:{served.server.port}/{path}"
    try:
        status, head, body = await _request(reader, writer, f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        if status != 401 or not authorized:
            return status, head, body
        nonce = re.search(r'nonce="([^"]+)"', head)
        assert nonce is not None
        ha2 = hashlib.md5(f"DESCRIBE:{url}".encode()).hexdigest()
        response = hashlib.md5(f"{ha1(USER, password)}:{nonce.group(1)}:{ha2}".encode()).hexdigest()
        fields = f'username="{USER}", realm="Hallwatch", nonce="{nonce.group(1)}", uri="{url}"'
        auth = f'Digest {fields}, response="{response}"'
        return await _request(
            reader, writer, f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 2\r\nAuthorization: {auth}\r\n\r\n"
        )
    finally:
        writer.close()


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, text: str
) -> tuple[int, str, str]:
    writer.write(text.encode())
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
    length = re.search(r"Content-Length: (\d+)", head)
    body = (await reader.readexactly(int(length.group(1)))).decode() if length else ""
    return int(head.split(" ")[1]), head, body


async def test_refusals(served: Served) -> None:
    status, head, _ = await describe(served, "demo", authorized=False)
    assert status == 401 and 'Digest realm="Hallwatch"' in head
    assert (await describe(served, "demo", authorized=True, password="wrong"))[0] == 401
    assert (await describe(served, "hidden", authorized=True))[0] == 404
    assert (await describe(served, "nosuch", authorized=True))[0] == 404
    with pytest.raises(av.error.HTTPUnauthorizedError):
        await asyncio.to_thread(decode, served.url("demo", password="wrong"), "tcp")
