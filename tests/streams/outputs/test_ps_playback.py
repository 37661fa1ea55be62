"""Recorded sound in GB/T 28181 playback: the recording playback tests' clock camera
(GStreamer RTSP, AAC sound, recorded in 2-second segments by a real stream manager), played
back as PS over RTP to a UDP port on 127.0.0.1 and read back by ffprobe and PyAV: AAC and
H.264 in the PSM, the sound the camera's 440 Hz tone, on the video's clock, across segments."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streams import PsPlayback, recorded_packets
from tests.streams.formats import ps_checks
from tests.streams.recording.test_playback import Recorded, ms, recorded, sources
from tests.vms.gb28181.test_live_media import RtpReceiver, ps_payload

pytestmark = pytest.mark.rtsp

SSRC = 1100000066
__all__ = ["recorded"]  # the module fixture, used here


async def test_recorded_sound_is_played_back_in_the_program_stream(
    recorded: Recorded, tmp_path: Path
) -> None:
    segments = recorded.main[:3]
    start, end = ms(segments[0]) + 300, ms(segments[-1], "end")
    transport, receiver = await asyncio.get_running_loop().create_datagram_endpoint(
        RtpReceiver, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    packets = recorded_packets(sources(segments), start, end, origin_ms=start)
    sender = PsPlayback(packets, ("127.0.0.1", port), "udp", SSRC, scale=4.0)
    try:
        await sender.start()
        assert await asyncio.wait_for(sender.wait(), 10) == "end of recording"
        await asyncio.sleep(0.1)
    finally:
        await sender.stop()
        transport.close()
    path = tmp_path / "playback.ps"
    path.write_bytes(ps_payload(receiver.packets, SSRC))
    assert ps_checks.probe_streams(path) == [("audio", "aac"), ("video", "h264")]
    video, audio, _, maps = ps_checks.stream_times(path.read_bytes())
    assert maps and all(ps_checks.psm_streams(m) == [(0x1B, 0xE0), (0x0F, 0xC0)] for m in maps)
    recorded = (end - start) / 1000
    assert (video[-1] - video[0]) / 90_000 == pytest.approx(recorded, abs=1.2)
    assert abs(audio[0] - video[0]) < 0.5 * 90_000 and abs(audio[-1] - video[-1]) < 0.5 * 90_000
    samples, rate = ps_checks.sound_of(path.read_bytes(), "aac")
    assert rate == 48_000 and len(samples) >= (recorded - 1.2) * rate
    assert ps_checks.tone(samples, rate) == pytest.approx(440, rel=0.05)
