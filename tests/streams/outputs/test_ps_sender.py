"""GB/T 28181 media sessions over real localhost sockets: UDP, TCP active and passive (RFC 4571),
from a hub that already has a keyframe cached; a slow TCP receiver is skipped to a keyframe."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator

import pytest

from streams.hub import Hub
from streams.outputs.ps_sender import PsOutput, PsSender, PsTransport
from streams.packets import MediaPacket
from tests.media import encode_h264
from tests.streams.formats import ps_checks
from tests.streams.outputs.ps_receiver import Receiver

SSRC = 100_000_001
CACHED = 10


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    yield receiver
    await receiver.close()


async def until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("transport", ["udp", "tcp-active", "tcp-passive"])
async def test_a_session_starts_from_the_gop_cache_and_delivers_every_frame(
    transport: PsTransport, receiver: Receiver
) -> None:
    packets = encode_h264(50, width=640, height=480, gop=25)
    hub = Hub("hall-1")
    for packet in packets[:CACHED]:
        hub.publish(packet)
    await receiver.listen(transport)
    output = PsOutput()
    sender = await output.open("hall-1", hub, ("127.0.0.1", receiver.port), transport, SSRC)
    if transport == "tcp-passive":
        sender_port = sender.local_port
        assert sender_port is not None
        await receiver.connect(sender_port)
    await until(lambda: sender.units == CACHED)
    assert sender.started is not None and sender.first_packet is not None
    startup = sender.first_packet - sender.started
    assert startup < 0.3, f"first packet after {startup * 1000:.0f} ms"
    assert output.shared(hub) is not None
    for packet in packets[CACHED:]:
        hub.publish(packet)
        await asyncio.sleep(0)
    await until(lambda: sender.units == len(packets))
    hub.close()
    assert await sender.wait() == "camera stream ended"
    assert output.senders() == [] and output.shared(hub) is None
    if transport == "udp":
        await until(lambda: len(receiver.datagrams) == sender.packets)
    else:
        await asyncio.wait_for(receiver.closed.wait(), 5)
    rtp = receiver.packets()
    assert len(rtp) == sender.packets
    data, stamps = ps_checks.reassemble(rtp, SSRC)
    assert stamps == [p.pts for p in packets]
    assert [pts for pts, _, _ in ps_checks.demux(data)] == [p.pts for p in packets]
    assert len(ps_checks.decode(data)) == len(packets)
    assert sender.bytes == (len(data) + 12 * len(rtp) + (0 if transport == "udp" else 2 * len(rtp)))
    await output.stop()


def padded(packet: MediaPacket, index: int, start: float) -> MediaPacket:
    """The access unit with 100 kB of H.264 filler data, as if received at 25 fps from ``start``."""
    filler = b"\x00\x00\x00\x01\x0c" + b"\xff" * 100_000 + b"\x80"
    return dataclasses.replace(packet, data=packet.data + filler, received=start + index / 25)


async def test_a_slow_tcp_receiver_is_skipped_to_a_keyframe(receiver: Receiver) -> None:
    start = time.monotonic()
    packets = [padded(p, i, start) for i, p in enumerate(encode_h264(150, gop=25))]
    hub = Hub("hall-2", max_lag=1.0)
    hub.publish(packets[0])
    receiver.resume.clear()
    await receiver.listen("tcp-active", rcvbuf=4096)
    sender = PsSender(hub, ("127.0.0.1", receiver.port), "tcp-active", SSRC, send_timeout=30)
    await sender.start()
    await until(lambda: sender.units == 1)
    for packet in packets[1:]:
        hub.publish(packet)
        await asyncio.sleep(0)
    receiver.resume.set()
    await until(lambda: sender.units + sender.dropped == len(packets))
    hub.close()
    assert await sender.wait() == "camera stream ended"
    assert sender.skips >= 1 and sender.dropped > 0
    await asyncio.wait_for(receiver.closed.wait(), 5)
    data, stamps = ps_checks.reassemble(receiver.packets(), SSRC)
    assert len(stamps) == sender.units < len(packets)
    keyframes = {p.pts for p in packets if p.keyframe}
    frame = packets[1].pts - packets[0].pts
    for before, after in itertools.pairwise(stamps):
        assert after - before == frame or after in keyframes, "a gap ends at a keyframe"
    assert len(ps_checks.decode(data)) == len(stamps)
