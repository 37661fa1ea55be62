"""Camera sound in a live GB/T 28181 session: real RTSP cameras (GStreamer) with AAC, G.711
A-law and µ-law and Opus sound, relayed by a real stream manager and sent as PS over RTP to a
UDP port on 127.0.0.1. What arrives is depacketized and read back by ffprobe and PyAV: the
audio stream in the PSM and system header with GB/T 28181's stream type, audio PES on the
video's clock; Opus, which a program stream cannot carry, leaves the session video only.

FFmpeg's ``mpeg`` demuxer knows AAC by its PSM stream type but not GB/T 28181's G.711
types (0x90, 0x91): it calls any stream 0xC0 it cannot type MPEG audio (``mp2``). The
G.711 bytes are therefore taken from the PES packets and decoded by PyAV's G.711
decoder, and must be the camera's 440 Hz tone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import av
import pytest

from streams import IngestState, StreamManager
from tests.rtsp_fixtures import RtspServerFactory
from tests.streams.formats import ps_checks
from tests.vms.gb28181.test_live_media import RtpReceiver, ps_payload
from vms.config_loader import parse_config
from vms.gb28181.media import MediaTarget
from vms.gb28181.ps_media import PsMedia
from vms.relay import build_manager

pytestmark = pytest.mark.rtsp

SSRC = 100000055
CODECS = {"aac": (0x0F, "aac"), "pcma": (0x90, "pcm_alaw"), "pcmu": (0x91, "pcm_mulaw")}
"""Camera sound: its PSM stream type and FFmpeg's decoder."""
TONE = 440
"""Hz of the test camera's sine."""


@pytest.fixture
async def manager(rtsp_server: RtspServerFactory) -> AsyncIterator[StreamManager]:
    codecs = [*CODECS, "opus"]
    server = rtsp_server({c: f"320x180@25,300k,gop=25,audio={c}" for c in codecs})
    cameras = "".join(
        f"  - {{id: {c}, name: 窗口{i}, hall: tax, url: '{server.url(c)}', audio: true}}\n"
        for i, c in enumerate(codecs)
    )
    config = parse_config(
        "centres:\n  - {id: xingning, name: 兴宁市政务服务中心, halls: all}\n"
        "halls:\n  - {id: tax, name: 兴宁市税务服务大厅}\n"
        f"cameras:\n{cameras}"
    )
    manager = build_manager(config)
    await manager.start()
    try:
        async with asyncio.timeout(20):
            for camera in codecs:
                _, audio_hub = manager.rtsp_media(camera)
                while (
                    manager.stats(camera).state is not IngestState.ONLINE
                    or audio_hub is None
                    or audio_hub.audio is None
                ):
                    await asyncio.sleep(0.05)
        yield manager
    finally:
        await manager.stop()


async def capture(media: PsMedia, camera: str, seconds: float, tmp_path: Path) -> Path:
    """``seconds`` of a live session of ``camera``, its program stream written to a file."""
    transport, receiver = await asyncio.get_running_loop().create_datagram_endpoint(
        RtpReceiver, local_addr=("127.0.0.1", 0)
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        session = await media.open(camera, MediaTarget("127.0.0.1", port, "udp", SSRC))
        await session.start()
        await asyncio.sleep(seconds)
        await session.stop()
        await asyncio.sleep(0.1)
    finally:
        transport.close()
    path = tmp_path / f"{camera}.ps"
    path.write_bytes(ps_payload(receiver.packets, SSRC))
    return path


@pytest.mark.parametrize("codec", list(CODECS))
async def test_the_camera_sound_travels_in_the_program_stream(
    manager: StreamManager, codec: str, tmp_path: Path
) -> None:
    media = PsMedia(manager)
    try:
        path = await capture(media, codec, 3.0, tmp_path)
    finally:
        await media.stop()
    stream_type, decoder = CODECS[codec]
    assert ps_checks.probe_streams(path) == [("audio", "aac" if codec == "aac" else "mp2"), ("video", "h264")]
    video, audio, systems, maps = ps_checks.stream_times(path.read_bytes())
    assert maps and all(ps_checks.psm_streams(m) == [(0x1B, 0xE0), (stream_type, 0xC0)] for m in maps)
    assert systems and all(s[12] == 0xE0 and s[15] == 0xC0 for s in systems), "both streams listed"
    assert len(audio) >= 2 * 25, "at least 2 s of sound (20 to 64 ms frames)"
    assert abs(audio[-1] - video[-1]) < 0.5 * 90_000, "sound and picture on one clock"
    with av.open(str(path), format="mpeg") as container:
        pictures = list(container.decode(video=0))
    assert len(pictures) >= 50 and pictures[0].key_frame
    samples, rate = ps_checks.sound_of(path.read_bytes(), decoder)
    assert rate == (48_000 if codec == "aac" else 8_000)
    assert len(samples) >= 2.5 * rate
    assert ps_checks.tone(samples, rate) == pytest.approx(TONE, rel=0.05)


async def test_opus_sound_is_left_out_and_said_once(
    manager: StreamManager, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    media = PsMedia(manager)
    try:
        with caplog.at_level(logging.WARNING, logger="streams.outputs.ps_sender"):
            first = await capture(media, "opus", 1.0, tmp_path)
            await capture(media, "opus", 0.5, tmp_path / "..")
    finally:
        await media.stop()
    said = [r.getMessage() for r in caplog.records if "cannot be carried" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("opus/audio: opus sound cannot be carried")
    assert ps_checks.probe_streams(first) == [("video", "h264")]
    _, audio, _, maps = ps_checks.stream_times(first.read_bytes())
    assert not audio and all(ps_checks.psm_streams(m) == [(0x1B, 0xE0)] for m in maps)
