"""RTP fan-out: equal-size packetization, GSO runs, and the fast sender on real sockets.

Covers :mod:`streams.webrtc.packetizer` and :mod:`streams.webrtc.fanout`.

Real H.264 from PyAV, real SRTP (pylibsrtp), real UDP sockets on 127.0.0.1 and
real aiortc viewers (``tests.whep_client``) through
:class:`~streams.webrtc.output.WebRtcOutput`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import functools
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import av
import numpy as np
import pytest
from aiortc.codecs.h264 import H264PayloadDescriptor
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from pylibsrtp import Policy, Session

from streams.codecs import h264
from streams.hub import Hub
from streams.packets import CLOCK_RATE, MediaPacket
from streams.webrtc.fanout import ABS_SEND_TIME_URI, MID_URI, FastRtpSender
from streams.webrtc.output import WebRtcOutput
from streams.webrtc.packetizer import PAYLOAD_MAX, SharedPacketizer, gso_runs, packetize_h264
from tests.media import encode_h264
from tests.streams.webrtc.test_webrtc import LOOPBACK, eventually, feeding, join, normalized

FPS = 25
SO_NO_CHECK = 11  # Linux: UDP without checksums, which the kernel refuses to segment
EXTENSIONS = [
    RTCRtpHeaderExtensionParameters(id=4, uri=MID_URI),
    RTCRtpHeaderExtensionParameters(id=3, uri=ABS_SEND_TIME_URI),
]


@functools.cache
def noisy_stream(frames: int = 50) -> tuple[MediaPacket, ...]:
    """320x240 of moving noise: 10-25 kB per frame in two slices, so every NAL unit is fragmented."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 320, 240, "yuv420p"
    ctx.time_base = fractions.Fraction(1, FPS)
    ctx.framerate = fractions.Fraction(FPS, 1)
    ctx.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "g": "25",
        "bf": "0",
        "crf": "18",
        "threads": "2",
    }
    noise = np.random.default_rng(1).integers(0, 256, (272, 640), dtype=np.uint8)
    encoded: list[av.Packet[Any]] = []
    for i in range(frames):
        luma = noise[i % 32 : i % 32 + 240, (i * 5) % 320 : (i * 5) % 320 + 320]
        img = np.ascontiguousarray(np.dstack([luma, np.roll(luma, 7, 1), 255 - luma]))
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        encoded += ctx.encode(frame)
    encoded += ctx.encode(None)
    return tuple(
        MediaPacket(bytes(p), (p.pts or 0) * CLOCK_RATE // FPS, bool(p.is_keyframe)) for p in encoded
    )


def depacketize(payloads: list[bytes]) -> bytes:
    """Annex-B from RTP payloads, by aiortc's own depacketizer."""
    return b"".join(H264PayloadDescriptor.parse(p)[1] for p in payloads)


def fu_a_sizes(payloads: list[bytes]) -> list[list[int]]:
    """The payload sizes of each fragmented NAL unit, in order."""
    nals: list[list[int]] = []
    for payload in payloads:
        if payload[0] & 0x1F == h264.NAL_FU_A:
            if payload[1] & 0x80:
                nals.append([])
            nals[-1].append(len(payload))
    return nals


def annex_b(*nals: bytes) -> bytes:
    return h264.join_nals(list(nals))


def nal(header: int, size: int) -> bytes:
    """A NAL unit of ``size`` bytes whose body holds no zero byte (so no start code)."""
    return bytes([header]) + bytes(1 + (i * 7) % 255 for i in range(size - 1))


# -- packetization ------------------------------------------------------------


@pytest.mark.parametrize("payload_max", [PAYLOAD_MAX, 200])
def test_fu_a_fragments_are_equal_size_and_reassemble(payload_max: int) -> None:
    fragmented = 0
    for media in noisy_stream() + tuple(encode_h264(10)):
        payloads = packetize_h264(media.data, payload_max)
        assert all(len(p) <= payload_max for p in payloads)
        assert depacketize(payloads) == normalized(media.data)
        for sizes in fu_a_sizes(payloads):
            fragmented += 1
            assert len(sizes) >= 2
            assert set(sizes[:-1]) == {payload_max}
            assert 2 < sizes[-1] <= payload_max
    assert fragmented >= 2 * len(noisy_stream())  # both slices of every frame


@pytest.mark.parametrize(
    "sizes",
    [
        [PAYLOAD_MAX],  # fits exactly: a single NAL unit packet
        [PAYLOAD_MAX + 1],  # the smallest fragmented one
        [1 + 3 * (PAYLOAD_MAX - 2)],  # fragments that all come out full
        [1 + 3 * (PAYLOAD_MAX - 2) + 1],
        [21, 5, 600, 40_000, 3],  # SPS, PPS, SEI aggregated; a slice; a tail on its own
        [700, 700, 700],  # two fit in one STAP-A, the third does not
    ],
)
def test_packetization_edges(sizes: list[int]) -> None:
    headers = [0x67, 0x68, 0x06, 0x65, 0x41]
    data = annex_b(*(nal(headers[i % len(headers)], n) for i, n in enumerate(sizes)))
    payloads = packetize_h264(data)
    assert depacketize(payloads) == data
    assert all(len(p) <= PAYLOAD_MAX for p in payloads)
    for fragments in fu_a_sizes(payloads):
        assert set(fragments[:-1]) == {PAYLOAD_MAX} and fragments[-1] <= PAYLOAD_MAX


def test_stap_a_carries_the_highest_nri() -> None:
    payloads = packetize_h264(annex_b(nal(0x06, 10), nal(0x67, 20), nal(0x28, 5)))
    assert len(payloads) == 1
    assert payloads[0][0] == 0x60 | h264.NAL_STAP_A


def check_runs(payloads: list[bytes], runs: list[tuple[int, int]]) -> None:
    assert [start for start, _ in runs] == [0] + [stop for _, stop in runs[:-1]]
    assert runs[-1][1] == len(payloads)
    for start, stop in runs:
        sizes = [len(p) for p in payloads[start:stop]]
        assert set(sizes[:-1]) <= {sizes[0]} and sizes[-1] <= sizes[0]
        assert len(sizes) <= 64 and len(sizes) * (sizes[0] + 64) <= 64_000


def test_gso_runs_follow_the_equal_size_fragments() -> None:
    for media in noisy_stream():
        payloads = packetize_h264(media.data)
        runs = gso_runs(payloads)
        check_runs(payloads, runs)
        if not media.keyframe:
            # Two slices, each one run: one system call per NAL unit.
            assert len(runs) == len(list(h264.split_nals(media.data))) == 2


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ([5, 10, 10, 3, 10], [(0, 1), (1, 4), (4, 5)]),
        ([10] * 100, [(0, 64), (64, 100)]),
        ([PAYLOAD_MAX] * 100, [(0, 46), (46, 92), (92, 100)]),
        ([7], [(0, 1)]),
    ],
)
def test_gso_runs_respect_the_kernel_limits(sizes: list[int], expected: list[tuple[int, int]]) -> None:
    payloads = [bytes(n) for n in sizes]
    assert gso_runs(payloads) == expected
    check_runs(payloads, expected)


# -- the sender on real UDP sockets ---------------------------------------------


class Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.datagrams.append(data)
        self.arrived.set()


@contextlib.asynccontextmanager
async def udp_sender(
    *, gso: bool = True, no_checksum: bool = False
) -> AsyncIterator[tuple[FastRtpSender, Hub, Collector, Session]]:
    """A FastRtpSender on a real UDP socket, SRTP-protecting for a collector that holds the keys."""
    loop = asyncio.get_running_loop()
    collector = Collector()
    rx_transport, _ = await loop.create_datagram_endpoint(lambda: collector, local_addr=("127.0.0.1", 0))
    rx_transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    tx_transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    if no_checksum:
        tx_transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    key = os.urandom(30)
    tx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    rx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
    hub = Hub("cam")
    sender = FastRtpSender(
        hub=hub,
        packetizer=SharedPacketizer(),
        payload_type=102,
        ssrc=0x5EED,
        extensions=EXTENSIONS,
        mid="0",
        protect=tx.protect,
        transport=tx_transport,
        address=rx_transport.get_extra_info("sockname"),
        gso=gso,
    )
    task = asyncio.create_task(sender.run())
    try:
        assert await eventually(lambda: hub.subscriber_count == 1, within=2)
        yield sender, hub, collector, rx
    finally:
        task.cancel()
        await asyncio.wait([task])
        hub.close()
        tx_transport.close()
        rx_transport.close()


async def send_and_collect(
    sender: FastRtpSender, hub: Hub, collector: Collector, rx: Session, units: tuple[MediaPacket, ...]
) -> list[RtpPacket]:
    for media in units:
        before = sender.frames
        hub.publish(media)
        assert await eventually(lambda: sender.frames > before, within=2)  # noqa: B023
    assert await eventually(lambda: len(collector.datagrams) >= sender.rtp_packets, within=2)
    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpParameters(headerExtensions=EXTENSIONS))
    return [RtpPacket.parse(rx.unprotect(d), extensions) for d in collector.datagrams]


def check_units(packets: list[RtpPacket], units: tuple[MediaPacket, ...]) -> None:
    """Consecutive sequence numbers, one timestamp and a final marker per unit, exact bytes."""
    assert [(p.sequence_number - packets[0].sequence_number) & 0xFFFF for p in packets] == list(
        range(len(packets))
    )
    received: list[list[RtpPacket]] = []
    for packet in packets:
        assert packet.payload_type == 102
        if not received or received[-1][-1].marker:
            received.append([packet])
        else:
            assert packet.timestamp == received[-1][0].timestamp
            received[-1].append(packet)
    assert [normalized(m.data) for m in units] == [depacketize([p.payload for p in u]) for u in received]
    assert all(p.extensions.mid == "0" and p.extensions.abs_send_time is not None for p in packets)


@pytest.mark.parametrize("gso", [True, False], ids=["gso", "sendto"])
async def test_sender_delivers_every_packet_in_order(gso: bool) -> None:
    units = noisy_stream()[:30]
    async with udp_sender(gso=gso) as (sender, hub, collector, rx):
        packets = await send_and_collect(sender, hub, collector, rx, units)
        check_units(packets, units)
        assert len(packets) == sender.rtp_packets
        if gso:
            # One system call per NAL unit: far fewer than packets.
            assert 30 <= sender.gso_sends <= 2 * len(units)
        else:
            assert sender.gso_sends == 0


async def test_sender_falls_back_when_the_kernel_refuses_gso() -> None:
    units = noisy_stream()[:5]
    async with udp_sender(no_checksum=True) as (sender, hub, collector, rx):
        packets = await send_and_collect(sender, hub, collector, rx, units)
        check_units(packets, units)
        assert sender.gso_sends == 0 and sender._socket is None


async def test_retransmission_resends_the_protected_packet() -> None:
    units = noisy_stream()[:3]
    async with udp_sender() as (sender, hub, collector, rx):
        first = (await send_and_collect(sender, hub, collector, rx, units))[0].sequence_number
        sent = list(collector.datagrams)
        sender.retransmit([(first + 5) & 0xFFFF, (first + 7) & 0xFFFF, (first - 1) & 0xFFFF])
        assert await eventually(lambda: len(collector.datagrams) == len(sent) + 2, within=2)
        assert collector.datagrams[len(sent) :] == [sent[5], sent[7]]
        assert sender.retransmitted == 2


# -- real aiortc viewers ----------------------------------------------------------


@pytest.fixture
async def output() -> AsyncIterator[WebRtcOutput]:
    out = WebRtcOutput(ice_host_addresses=LOOPBACK, info_timeout=2.0)
    yield out
    await out.stop()


def fanout_of(out: WebRtcOutput) -> FastRtpSender:
    feed = out.sessions()[0]._feed
    assert isinstance(feed, FastRtpSender)
    return feed


async def test_viewer_gets_gso_sent_units_byte_exact(output: WebRtcOutput) -> None:
    async with feeding(noisy_stream()) as feeder:
        client = await join(output, feeder, capture=True)
        async with client:
            assert await client.wait_frames(20, within=10)
            assert {(f.width, f.height) for f in client.frames} == {(320, 240)}
            published = {normalized(p.data) for p in feeder.packets}
            assert len(client.units) >= 20
            assert all(u.data in published for u in client.units)
            assert fanout_of(output).gso_sends > 0


async def test_nacks_are_answered_with_gso(output: WebRtcOutput) -> None:
    dropped: set[int] = set()

    def lose(ssrc: int, sequence_number: int) -> bool:
        if sequence_number % 10 == 0 and sequence_number not in dropped:
            dropped.add(sequence_number)
            return True
        return False

    async with feeding(noisy_stream()) as feeder:
        client = await join(output, feeder, lose=lose, capture=True)
        async with client:
            assert await client.wait_frames(30, within=10)
            fanout = fanout_of(output)
            assert fanout.gso_sends > 0 and client.lost >= 10
            assert fanout.retransmitted >= client.lost - 2  # the last losses may still be in flight
            assert {(f.width, f.height) for f in client.frames} == {(320, 240)}


async def test_viewer_is_served_without_gso(output: WebRtcOutput, monkeypatch: pytest.MonkeyPatch) -> None:
    bind = FastRtpSender.from_transceiver

    def without_gso(*args: object) -> FastRtpSender:
        return bind(*args, gso=False)  # type: ignore[arg-type]

    monkeypatch.setattr(FastRtpSender, "from_transceiver", without_gso)
    async with feeding(noisy_stream()) as feeder:
        client = await join(output, feeder, capture=True)
        async with client:
            assert await client.wait_frames(20, within=10)
            published = {normalized(p.data) for p in feeder.packets}
            assert all(u.data in published for u in client.units)
            fanout = fanout_of(output)
            assert fanout.gso_sends == 0 and fanout.rtp_packets > 0
