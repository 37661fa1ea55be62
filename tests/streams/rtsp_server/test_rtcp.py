"""RTCP of the RTSP re-serve against independent clients: a hand-written RTSP client checks
RTP-Info against the first packets and the sender reports against what arrived; GStreamer's
rtspsrc takes our sender reports; FFmpeg over UDP, its keep-alive requests swallowed, stays
past the session timeout on its receiver reports alone while a silent client is dropped;
an RTCP BYE ends a session."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams import CameraSpec, RelaySettings, SourceOptions, StreamManager
from streams.rtsp_server import RtspServer, RtspSettings
from streams.rtsp_server.session import RtspSession
from tests.rtsp_fixtures import SYSTEM_PYTHON, RtspServerFactory
from tests.streams.rtsp_server import rtsp_client
from tests.streams.rtsp_server.rtsp_client import Arrivals, Client
from tests.streams.rtsp_server.test_server import PASSWORD, POLICY, USER, Gate, until

TIMEOUT = 3.0
"""The server's session timeout here: short, so that a test outlives it several times."""
GST_CLIENT = __file__.replace("test_rtcp.py", "gst_rtcp_client.py")
CLOCKS = {"H264": 90_000, "MPEG4-GENERIC": 48_000}


@dataclass
class Served:
    manager: StreamManager
    server: RtspServer
    gate: Gate

    def url(self, path: str, port: int | None = None) -> str:
        return f"rtsp://{USER}:{PASSWORD.replace(' ', '%20')}@127.0.0.1:{port or self.server.port}/{path}"


@pytest.fixture
async def served(rtsp_server: RtspServerFactory, tmp_path: Path) -> AsyncIterator[Served]:
    snow = tmp_path / "snow.i420"
    snow.write_bytes(random.randbytes(25 * 320 * 180 * 3 // 2))
    upstream = rtsp_server(
        {"sound": "640x360@25,800k,gop=25,audio=aac", "snow": f"320x180@25,3000k,gop=25,scene={snow}"}
    )
    cameras = [
        CameraSpec(id="demo", source=SourceOptions(url="demo://demo?size=320x180&fps=25&gop=25")),
        CameraSpec(id="sound", source=SourceOptions(url=upstream.url("sound"), audio=True), policy=POLICY),
        CameraSpec(id="snow", source=SourceOptions(url=upstream.url("snow")), policy=POLICY),
    ]
    manager = StreamManager(cameras, RelaySettings())
    await manager.start()
    gate = Gate({"demo", "sound", "snow"})
    server = RtspServer(manager, gate, RtspSettings(port=0, session_timeout=TIMEOUT))
    await server.start()
    try:
        yield Served(manager, server, gate)
    finally:
        await server.stop()
        await manager.stop()


@dataclass
class Track:
    url: str
    clock: int
    ssrc: int
    arrivals: Arrivals
    server_ports: tuple[int, int] | None = None
    udp: tuple[rtsp_client.UdpTrack, rtsp_client.UdpTrack] | None = None


async def play(client: Client, path: str, transport: str) -> tuple[list[Track], str]:
    """DESCRIBE, SETUP every track over ``transport``, PLAY: the tracks and the RTP-Info header."""
    status, head, sdp = await client.request("DESCRIBE", f"{client.base}/{path}", Accept="application/sdp")
    assert status == 200
    tracks = []
    for index, codec in enumerate(re.findall(r"a=rtpmap:\d+ ([\w-]+)/", sdp)):
        arrivals = Arrivals()
        url = f"{head['content-base']}trackID={index}"
        udp = None
        if transport == "tcp":
            spec = f"RTP/AVP/TCP;unicast;interleaved={2 * index}-{2 * index + 1}"
        else:
            rtp, rtcp, port = await rtsp_client.udp_pair(arrivals)
            udp = (rtp, rtcp)
            spec = f"RTP/AVP;unicast;client_port={port}-{port + 1}"
        status, answer, _ = await client.request("SETUP", url, Transport=spec)
        assert status == 200, answer
        ssrc = int(re.search(r"ssrc=([0-9A-F]{8})", answer["transport"])[1], 16)  # type: ignore[index]
        ports = re.search(r"server_port=(\d+)-(\d+)", answer["transport"])
        server_ports = (int(ports[1]), int(ports[2])) if ports else None
        tracks.append(Track(url, CLOCKS[codec], ssrc, arrivals, server_ports, udp))
    status, answer, _ = await client.request("PLAY", f"{client.base}/{path}/")
    assert status == 200
    return tracks, answer["rtp-info"]


def send_rtcp(track: Track, packet: bytes) -> None:
    """``packet`` from the track's RTCP socket to the server's RTCP port."""
    assert track.udp is not None and track.udp[1].transport is not None and track.server_ports
    track.udp[1].transport.sendto(packet, ("127.0.0.1", track.server_ports[1]))


def close_udp(tracks: list[Track]) -> None:
    for track in tracks:
        for socket in track.udp or ():
            assert socket.transport is not None
            socket.transport.close()


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_rtp_info_names_the_first_packets_and_sender_reports_match_the_stream(
    served: Served, transport: str
) -> None:
    client = Client(served.server.port, USER, PASSWORD)
    await client.connect()
    tracks, rtp_info = await play(client, "sound", transport)
    try:
        assert len(tracks) == 2, "video and sound"

        def reported() -> bool:
            return all(len(t.arrivals.reports) >= 2 for t in tracks)

        deadline = time.monotonic() + 12
        arrivals = {index: track.arrivals for index, track in enumerate(tracks)}
        while not reported():
            assert time.monotonic() < deadline, "fewer than two sender reports per track"
            if transport == "tcp":
                await client.read_interleaved(arrivals, time.monotonic() + 0.5)
            else:  # receiver reports keep the session past its timeout, as keep-alives would
                for track in tracks:
                    send_rtcp(track, rtsp_client.receiver_report(0x5678, track.ssrc))
                await asyncio.sleep(0.5)
    finally:
        client.close()
        close_udp(tracks)
    entries = [dict(part.split("=", 1) for part in entry.split(";")) for entry in rtp_info.split(",")]
    assert [e["url"] for e in entries] == [t.url for t in tracks]
    for entry, track in zip(entries, tracks, strict=True):
        _, first = track.arrivals.rtp[0]
        assert (first.seq, first.timestamp, first.ssrc) == (
            int(entry["seq"]),
            int(entry["rtptime"]),
            track.ssrc,
        )
        for arrived, report, before in track.arrivals.reports:
            assert report.ssrc == track.ssrc and report.cname
            assert abs(report.wall - arrived) < 0.5, "the NTP time is the wall clock at sending"
            sent = [rtp for _, rtp in track.arrivals.rtp]
            if transport == "tcp":  # one ordered byte stream: the report counts what came before it
                assert report.packets == before and report.octets == sum(p.payload for p in sent[:before])
            else:
                assert before <= report.packets <= len(sent)
            last = sent[report.packets - 1]
            ahead = ((report.rtp_time - last.timestamp + 2**31) % 2**32 - 2**31) / track.clock
            assert -0.1 < ahead < 1.5, "the report's RTP time is at or a little after its last packet's"
        first_report, last_report = track.arrivals.reports[0][1], track.arrivals.reports[-1][1]
        media = ((last_report.rtp_time - first_report.rtp_time) % 2**32) / track.clock
        assert abs(media - (last_report.wall - first_report.wall)) < 0.3, "RTP time runs with the wall clock"
        assert last_report.wall - first_report.wall > 1.0
    if transport == "udp":
        for track in tracks:
            assert track.udp is not None and track.server_ports is not None
            assert track.udp[1].senders == {("127.0.0.1", track.server_ports[1])}, "from our RTCP port"
            assert track.udp[0].senders == {("127.0.0.1", track.server_ports[0])}


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_an_rtcp_bye_ends_the_session(served: Served, transport: str) -> None:
    client = Client(served.server.port, USER, PASSWORD)
    await client.connect()
    [track], _ = await play(client, "demo", transport)
    try:
        if transport == "tcp":
            await client.read_interleaved({0: track.arrivals}, time.monotonic() + 0.3)
            assert client.writer is not None
            bye = rtsp_client.bye(0x1234)
            client.writer.write(b"$\x01" + len(bye).to_bytes(2, "big") + bye)
        else:
            await until(lambda: bool(track.arrivals.rtp))
            send_rtcp(track, rtsp_client.bye(0x1234))
        await until(lambda: served.manager.rtsp.session_count() == 0, 5)
        [viewing] = served.gate.ended
        assert viewing.reason == "client sent RTCP BYE"
    finally:
        client.close()
        close_udp([track])


@pytest.mark.skipif(not shutil.which("gst-launch-1.0"), reason="GStreamer not installed")
@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_gstreamer_takes_our_sender_reports(served: Served, transport: str) -> None:
    started = time.time()
    process = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON, GST_CLIENT, served.url("demo"), transport, "6", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    result = json.loads(out)
    assert result["error"] is None and result["frames"] >= 100, result
    [sender] = result["senders"]
    assert sender["have_sr"], "rtspsrc took a sender report"
    assert started < sender["sr_wall"] < sender["received_at"]
    assert 0 < sender["sr_packets"] <= sender["packets_received"]
    assert sender["sr_octets"] > 1000


class SwallowingProxy:
    """Between an RTSP client and the server: forwards everything until the client's PLAY,
    then forwards only the server's bytes and keeps the client's later requests to itself."""

    def __init__(self, server_port: int) -> None:
        self._server_port = server_port
        self.swallowed = bytearray()
        self._listener: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0

    async def start(self) -> None:
        self._listener = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._listener.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._server_port)
        self._tasks.append(asyncio.create_task(self._copy(upstream_reader, writer)))
        played = False
        while chunk := await reader.read(65536):
            if played:
                self.swallowed += chunk
                continue
            upstream_writer.write(chunk)
            played = chunk.startswith(b"PLAY ")
        upstream_writer.close()
        writer.close()

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")
async def test_ffmpeg_over_udp_stays_on_receiver_reports_alone_and_a_silent_client_goes(
    served: Served,
) -> None:
    proxy = SwallowingProxy(served.server.port)
    await proxy.start()
    silent = Client(served.server.port, USER, PASSWORD)
    await silent.connect()
    seconds = 4 * TIMEOUT
    ffmpeg = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-hide_banner", "-rtsp_transport", "udp", "-i", served.url("snow", proxy.port),
        "-c", "copy", "-t", str(seconds), "-f", "null", "-",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    silent_tracks: list[Track] = []
    try:
        silent_tracks, _ = await play(silent, "demo", "udp")
        await until(lambda: served.manager.rtsp.session_count() == 2, 10)
        began = time.monotonic()
        await until(lambda: bool(served.gate.ended), 2 * TIMEOUT)
        [dropped] = served.gate.ended
        assert (dropped.camera_id, dropped.reason) == ("demo", "keep-alive timeout")
        assert time.monotonic() - began >= TIMEOUT - 0.5
        [kept] = served.manager.rtsp.sessions()
        assert isinstance(kept, RtspSession) and kept.rtcp_reports >= 3, "ffmpeg's receiver reports came"
        _, err = await asyncio.wait_for(ffmpeg.communicate(), seconds + 20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            ffmpeg.kill()
        await ffmpeg.wait()
        silent.close()
        close_udp(silent_tracks)
        await proxy.stop()
    assert ffmpeg.returncode == 0, err.decode()[-2000:]
    frames = [int(n) for n in re.findall(rb"frame=\s*(\d+)", err)]
    assert frames and frames[-1] >= 25 * (seconds - 1), "ffmpeg received the whole stream"
    assert proxy.swallowed.count(b"RTSP/1.0") >= 3, "ffmpeg's keep-alives never reached the server"
    await until(lambda: served.manager.rtsp.session_count() == 0, 5)
    viewing = served.gate.ended[1]
    assert viewing.camera_id == "snow" and viewing.reason == "client left"
    assert viewing.ended - viewing.started >= seconds - 1, "the session lasted as long as ffmpeg watched"
