"""The RTSP source against GStreamer's RTSP server (real RTSP, RTP over TCP and UDP, real H.264).

A recording TCP relay between client and server shows what the client put on
the wire (TEARDOWN, keepalives, no password) without touching either side.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import re
import socket
import time
from collections.abc import Callable

import av
import psutil
import pytest

from streams.codecs import h264
from streams.errors import SourceAuthError, SourceError, SourceUnreachable
from streams.packets import MediaPacket
from streams.sources.base import SourceOptions
from streams.sources.rtsp.auth import Authenticator
from streams.sources.rtsp.source import RtspSource
from tests.rtsp_fixtures import RtspServerFactory

PASSWORD = "s3cr3t-Pa55"


async def take(source: RtspSource, count: int, *, within: float = 10.0) -> list[MediaPacket]:
    out: list[MediaPacket] = []
    async with contextlib.aclosing(source.packets()) as gen:
        async with asyncio.timeout(within):
            async for packet in gen:
                out.append(packet)
                if len(out) >= count:
                    break
    return out


def options(url: str, **kwargs: object) -> SourceOptions:
    defaults: dict[str, object] = {"connect_timeout": 3.0, "read_timeout": 3.0}
    return SourceOptions(url=url, **{**defaults, **kwargs})  # type: ignore[arg-type]


def tcp_connections_to(port: int) -> list[object]:
    return [c for c in psutil.Process().net_connections(kind="tcp") if c.raddr and c.raddr.port == port]


def udp_socket_count() -> int:
    return len(psutil.Process().net_connections(kind="udp"))


async def eventually(check: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


class RecordingRelay:
    """Forwards TCP connections on a free port to ``target_port``, keeping the client's bytes."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = bytearray()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RecordingRelay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        async with asyncio.timeout(5):
            await asyncio.gather(*self._handlers)
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer, True), self._pipe(up_reader, writer, False))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bool) -> None:
        try:
            while data := await reader.read(65536):
                if record:
                    self.sent += data
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def requests(self, method: str) -> int:
        return len(re.findall(rb"^" + method.encode() + rb" ", bytes(self.sent), re.MULTILINE))


@pytest.mark.rtsp
@pytest.mark.parametrize(
    ("transport", "spec", "size", "profile"),
    [
        ("tcp", "640x360@25,800k,gop=10", (640, 360), "Constrained Baseline"),
        ("udp", "320x240@25,400k,gop=10,profile=high", (320, 240), "High"),
    ],
)
async def test_frames_arrive_with_keyframes_and_decode(
    rtsp_server: RtspServerFactory, transport: str, spec: str, size: tuple[int, int], profile: str
) -> None:
    server = rtsp_server(streams={"cam1": spec})
    source = RtspSource(options(server.url("cam1"), transport=transport))
    packets = await take(source, 25)

    assert packets[0].keyframe and packets[0].pts == 0
    keyframes = [p for p in packets if p.keyframe]
    assert len(keyframes) >= 2
    assert all(h264.is_keyframe(p.data) == p.keyframe for p in packets)
    steps = [b.pts - a.pts for a, b in itertools.pairwise(packets)]
    assert all(step > 0 for step in steps) and sorted(steps)[len(steps) // 2] == 3600
    assert all(b.received >= a.received for a, b in itertools.pairwise(packets))
    for key in keyframes:  # parameter sets in-band, giving the real picture size
        info = h264.stream_info(key.data)
        assert info is not None and (info.width, info.height) == size and info.profile == profile
    assert source.info is not None and (source.info.width, source.info.height) == size

    decoder = av.CodecContext.create("h264", "r")
    frames = [f for p in packets for f in decoder.decode(av.Packet(p.data))]
    assert len(frames) >= 20
    assert (frames[0].width, frames[0].height) == size


@pytest.mark.rtsp
@pytest.mark.parametrize("scheme", ["basic", "digest"])
async def test_authentication(rtsp_server: RtspServerFactory, scheme: str) -> None:
    server = rtsp_server(user="viewer", password=PASSWORD, auth=scheme)

    async with RecordingRelay(server.port) as relay:
        relayed = f"rtsp://viewer:{PASSWORD}@127.0.0.1:{relay.port}/cam1"
        packets = await take(RtspSource(options(relayed)), 3)
        assert packets[0].keyframe
    wire = bytes(relay.sent)
    assert PASSWORD.encode() not in wire and b"viewer:" not in wire  # neither in URLs nor in headers
    assert f"Authorization: {scheme.capitalize()} ".encode() in wire

    good = await take(RtspSource(options(server.url(), username="viewer", password=PASSWORD)), 2)
    assert len(good) == 2

    wrong_url = f"rtsp://viewer:{PASSWORD}-nope@127.0.0.1:{server.port}/cam1"
    for opts in (options(server.url(), username="viewer", password=PASSWORD + "-nope"), options(wrong_url)):
        with pytest.raises(SourceAuthError) as caught:
            await take(RtspSource(opts), 1)
        text = f"{caught.value} {caught.value!r} {caught.value.__cause__!r}"
        assert PASSWORD not in text and "refused the credentials" in text
        assert f"127.0.0.1:{server.port}/cam1" in text

    with pytest.raises(SourceAuthError, match="requires credentials"):
        await take(RtspSource(options(server.url())), 1)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def test_digest_answer_follows_rfc_2617() -> None:
    auth = Authenticator("Mufasa", "Circle Of Life")
    auth.learn(
        ['Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd", opaque="5ccc"']
    )
    value = auth.header("DESCRIBE", "rtsp://cam/stream")
    assert value is not None and value.startswith("Digest ")
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', value))
    ha1, ha2 = md5("Mufasa:testrealm@host.com:Circle Of Life"), md5("DESCRIBE:rtsp://cam/stream")
    expected = md5(f"{ha1}:dcd98b7102dd:00000001:{fields['cnonce']}:auth:{ha2}")
    assert fields["response"] == expected and fields["nc"] == "00000001" and fields["opaque"] == "5ccc"
    second = auth.header("PLAY", "rtsp://cam/stream")
    assert second is not None and "nc=00000002" in second

    plain = Authenticator("Mufasa", "Circle Of Life")
    plain.learn(['Basic realm="x"', 'Digest realm="r", nonce="n1"'])
    value = plain.header("OPTIONS", "rtsp://cam/")
    assert value is not None
    ha1, ha2 = md5("Mufasa:r:Circle Of Life"), md5("OPTIONS:rtsp://cam/")
    assert f'response="{md5(f"{ha1}:n1:{ha2}")}"' in value and "qop" not in value


@pytest.mark.rtsp
async def test_closed_port_is_unreachable_quickly() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(SourceUnreachable, match=f"127.0.0.1:{port}"):
        await take(RtspSource(options(f"rtsp://admin:{PASSWORD}@127.0.0.1:{port}/cam1")), 1)
    assert time.monotonic() - started < 1.0


@pytest.mark.rtsp
async def test_frozen_server_bounded_by_connect_and_read_timeouts(rtsp_server: RtspServerFactory) -> None:
    server = rtsp_server(streams={"cam1": "160x96@25,100k,gop=25"})
    server.freeze()
    started = time.monotonic()
    with pytest.raises(SourceUnreachable, match="no answer to OPTIONS"):
        await take(RtspSource(options(server.url(), connect_timeout=0.5)), 1)
    assert time.monotonic() - started < 1.5
    server.thaw()

    async with contextlib.aclosing(RtspSource(options(server.url(), read_timeout=0.6)).packets()) as gen:
        assert (await anext(gen)).keyframe
        server.freeze()
        started = time.monotonic()
        with pytest.raises(SourceError, match=r"no RTP for 0\.6 s"):
            while True:
                await anext(gen)
        assert time.monotonic() - started < 2.5
    await eventually(lambda: not tcp_connections_to(server.port))


@pytest.mark.rtsp
@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_watchdog_cancellation_leaves_no_socket(rtsp_server: RtspServerFactory, transport: str) -> None:
    """The ingest supervisor times out ``anext`` and then closes the generator."""
    server = rtsp_server(streams={"cam1": "160x96@25,100k,gop=25"})
    udp_before = udp_socket_count()
    gen = RtspSource(options(server.url(), transport=transport)).packets()
    assert (await anext(gen)).keyframe
    assert tcp_connections_to(server.port)
    server.freeze()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            while True:
                await anext(gen)
    await gen.aclose()
    await eventually(lambda: not tcp_connections_to(server.port) and udp_socket_count() == udp_before)


@pytest.mark.rtsp
@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_server_gone_mid_stream_then_back_on_the_same_port(
    rtsp_server: RtspServerFactory, how: str
) -> None:
    server = rtsp_server(streams={"cam1": "160x96@25,100k,gop=25"})
    port = server.port
    async with contextlib.aclosing(RtspSource(options(server.url(), read_timeout=2.0)).packets()) as gen:
        await anext(gen)
        getattr(server, how)()
        started = time.monotonic()
        with pytest.raises(SourceError):
            async for _ in gen:
                pass
            raise SourceError("ended")  # ending is fine too
        assert time.monotonic() - started < 3.0
    server.start()
    assert server.port == port
    packets = await take(RtspSource(options(server.url())), 2)
    assert packets[0].keyframe


@pytest.mark.rtsp
@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_keepalive_and_teardown_on_the_wire(rtsp_server: RtspServerFactory, transport: str) -> None:
    server = rtsp_server(streams={"cam1": "160x96@25,100k,gop=25"})
    udp_before = udp_socket_count()
    async with RecordingRelay(server.port) as relay:
        url = f"rtsp://127.0.0.1:{relay.port}/cam1"
        source = RtspSource(options(url, transport=transport, keepalive_interval=0.5))
        async with contextlib.aclosing(source.packets()) as gen:
            started = time.monotonic()
            count = 0
            async for _ in gen:  # keepalive answers arrive among the media frames
                count += 1
                if time.monotonic() - started > 1.8:
                    break
            assert count >= 35
            assert relay.requests("GET_PARAMETER") >= 2
            assert relay.requests("TEARDOWN") == 0
        assert relay.requests("TEARDOWN") == 1
        await eventually(lambda: not tcp_connections_to(relay.port) and udp_socket_count() == udp_before)
    assert re.search(
        rb"^TEARDOWN rtsp://127\.0\.0\.1:\d+/cam1/? RTSP/1\.0\r\n", bytes(relay.sent), re.MULTILINE
    )
    assert b"Session: " in relay.sent

    again = await take(RtspSource(options(server.url(), transport=transport)), 2)  # the server still serves
    assert again[0].keyframe
