"""A live GB/T 28181 session end to end: a superior platform on 127.0.0.1 invites a demo
camera of a real stream manager, and what arrives on its UDP port is MPEG-PS over RTP that
PyAV demuxes and decodes, starting at once from the GOP cache."""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path

import av

from streams import IngestState
from tests.vms.gb28181.superior import Superior
from tests.vms.gb28181.test_cascade import Harness, _in_dialog, invite, offer, site
from vms.gb28181 import Cascade
from vms.gb28181.ps_media import PsMedia
from vms.relay import build_manager


class RtpReceiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[bytes] = []
        self.first_at: float | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.first_at is None:
            self.first_at = time.monotonic()
        self.packets.append(data)


def ps_payload(packets: list[bytes], ssrc: int) -> bytes:
    """The RTP payloads in sequence order, checked to be PS (payload type 96) of ``ssrc``."""
    ordered = []
    for packet in packets:
        version_flags, marker_pt, seq, _ts, their_ssrc = struct.unpack("!BBHII", packet[:12])
        assert version_flags >> 6 == 2 and marker_pt & 0x7F == 96 and their_ssrc == ssrc
        ordered.append((seq, packet[12:]))
    ordered.sort()
    return b"".join(payload for _, payload in ordered)


async def test_a_superior_receives_decodable_ps_from_the_gop_cache(tmp_path: Path) -> None:
    superior = Superior("udp")
    await superior.start()
    config = site("udp", superior.port, cameras=2)
    manager = build_manager(config)
    media = PsMedia(manager)
    cascade = Cascade(
        config,
        online=lambda cid: manager.stats(cid).state is IngestState.ONLINE,
        recording=lambda cid: False,
        media=media,
        record=lambda action, **fields: None,
    )
    loop = asyncio.get_running_loop()
    transport, receiver = await loop.create_datagram_endpoint(RtpReceiver, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    await manager.start()
    cascade.start()
    try:
        h = Harness(superior, cascade, None, {})  # type: ignore[arg-type]
        await h.registered()
        async with asyncio.timeout(15):
            while manager.hub("cam1").last_keyframe is None:
                await asyncio.sleep(0.05)
        camera = cascade.directory(cascade.platforms[0]).camera_node("cam1")
        assert camera is not None
        body = offer(camera.gb_id, ssrc="0100000077").replace(b"m=video 40000", f"m=video {port}".encode())
        call_id, answer = await invite(h, camera.gb_id, body)
        assert answer.status == 200, answer.first
        acked = time.monotonic()
        superior.send(_in_dialog(h, "ACK", call_id, answer).replace(b"2 ACK", b"1 ACK"))
        async with asyncio.timeout(10):
            while receiver.first_at is None or len(receiver.packets) < 60:
                await asyncio.sleep(0.05)
        assert receiver.first_at - acked < 0.3, "the first packet comes from the GOP cache at once"
        superior.send(_in_dialog(h, "BYE", call_id, answer))
        async with asyncio.timeout(5):
            while cascade.live.count():
                await asyncio.sleep(0.05)
        stream = tmp_path / "received.ps"
        stream.write_bytes(ps_payload(receiver.packets, 100000077))
        with av.open(str(stream), format="mpeg") as container:
            frames = list(container.decode(video=0))
        assert len(frames) >= 5 and frames[0].key_frame
        assert (frames[0].width, frames[0].height) == (640, 360)
    finally:
        transport.close()
        await cascade.stop()
        await media.stop()
        await manager.stop()
        await superior.stop()
