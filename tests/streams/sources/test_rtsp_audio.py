"""A camera's audio over RTSP, against GStreamer's RTSP server (real G.711, Opus and AAC
encoders and payloaders), over TCP and UDP."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import re
import time

import av
import pytest

from streams.packets import CLOCK_RATE, AudioInfo, MediaPacket
from streams.sources.base import SourceOptions
from streams.sources.rtsp.source import RtspSource
from tests.rtsp_fixtures import RtspServerFactory
from tests.streams.sources.test_rtsp import RecordingRelay

pytestmark = pytest.mark.rtsp

CAMERAS = {
    "pcmu": "320x240@25,300k,gop=25,audio=pcmu",
    "opus": "320x240@25,300k,gop=25,audio=opus",
    "aac": "320x240@25,300k,gop=25,audio=aac",
}
FRAMES_PER_SECOND = {"pcmu": 50.0, "opus": 50.0, "aac": 48000 / 1024}
DECODERS = {"pcmu": "pcm_mulaw", "opus": "libopus", "aac": "aac"}
SECONDS = 1.5


def options(url: str, **kwargs: object) -> SourceOptions:
    defaults: dict[str, object] = {"connect_timeout": 3.0, "read_timeout": 3.0}
    return SourceOptions(url=url, **{**defaults, **kwargs})  # type: ignore[arg-type]


async def record(source: RtspSource, seconds: float = SECONDS) -> tuple[list[MediaPacket], list[MediaPacket]]:
    """Video and audio packets from ``seconds`` after the first video frame."""
    video: list[MediaPacket] = []
    audio: list[MediaPacket] = []
    async with contextlib.aclosing(source.packets()) as gen, asyncio.timeout(seconds + 8):
        async for packet in gen:
            (audio if packet.is_audio else video).append(packet)
            if video and time.monotonic() - video[0].received >= seconds:
                break
    return video, audio


def decoded_samples(packets: list[MediaPacket], decoder: str, info: AudioInfo) -> int:
    ctx = av.CodecContext.create(decoder, "r")
    assert isinstance(ctx, av.AudioCodecContext)
    if info.config:
        ctx.extradata = info.config
    ctx.sample_rate = info.sample_rate
    ctx.layout = "mono" if info.channels == 1 else "stereo"
    samples = 0
    for packet in packets:
        av_packet = av.Packet(packet.data)
        av_packet.pts, av_packet.time_base = packet.pts, fractions.Fraction(1, CLOCK_RATE)
        samples += sum(frame.samples for frame in ctx.decode(av_packet))
    return samples


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_audio_frames_in_real_time_on_the_video_timeline(
    rtsp_server: RtspServerFactory, transport: str
) -> None:
    server = rtsp_server(CAMERAS)
    sources = {
        codec: RtspSource(options(server.url(codec), transport=transport, audio=True)) for codec in CAMERAS
    }
    results = await asyncio.gather(*(record(source) for source in sources.values()))
    for (codec, source), (video, audio) in zip(sources.items(), results, strict=True):
        info = source.audio_info
        assert info is not None and info.codec == codec, codec
        assert video and audio, codec
        assert all(p.codec == codec and p.keyframe for p in audio)
        # As many frames as real time makes, none lost, with evenly spaced timestamps.
        span = audio[-1].received - audio[0].received
        rate = FRAMES_PER_SECOND[codec]
        assert abs(len(audio) - 1 - span * rate) <= 0.15 * SECONDS * rate + 2, (codec, len(audio), span)
        ticks = round(CLOCK_RATE / rate)
        assert audio[-1].pts - audio[0].pts == pytest.approx((len(audio) - 1) * ticks, abs=len(audio)), codec
        # Audio and video of one instant carry the same pts: both are as late against their pts.
        video_lateness = video[-1].received - video[-1].pts / CLOCK_RATE
        audio_lateness = audio[-1].received - audio[-1].pts / CLOCK_RATE
        assert abs(audio_lateness - video_lateness) < 0.08, codec
        assert audio[0].pts >= video[0].pts
        # The frames decode, AAC with the AudioSpecificConfig from the SDP.
        samples = decoded_samples(audio, DECODERS[codec], info)
        per_frame = info.sample_rate / rate
        assert samples >= (len(audio) - 2) * per_frame, codec
    aac = sources["aac"].audio_info
    assert aac is not None and aac.config == bytes.fromhex("1190") and aac.channels == 2
    assert aac.codec_string == "mp4a.40.2"


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_without_audio_option_one_track_and_no_audio(
    rtsp_server: RtspServerFactory, transport: str
) -> None:
    server = rtsp_server({"cam": CAMERAS["opus"]})
    async with RecordingRelay(server.port) as relay:
        url = f"rtsp://127.0.0.1:{relay.port}/cam"
        plain = RtspSource(options(url, transport=transport))
        video, audio = await record(plain, 0.5)
        assert video and not audio and plain.audio_info is None
        assert relay.requests("SETUP") == 1
        with_audio = RtspSource(options(url, transport=transport, audio=True))
        video, audio = await record(with_audio, 0.5)
        assert video and audio and with_audio.audio_info is not None
        assert relay.requests("SETUP") == 3
    setups = re.findall(rb"^Transport: (.*)\r$", bytes(relay.sent), re.MULTILINE)
    if transport == "tcp":
        assert setups == [b"RTP/AVP/TCP;unicast;interleaved=0-1"] * 2 + [
            b"RTP/AVP/TCP;unicast;interleaved=2-3"
        ]
    else:
        ports = [re.search(rb"client_port=(\d+)", s) for s in setups]
        assert all(ports) and len({p[1] for p in ports[1:] if p}) == 2  # audio on a port pair of its own


async def test_audio_we_cannot_relay_leaves_the_video_playing(
    rtsp_server: RtspServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = rtsp_server({"latm": "320x240@25,300k,gop=25,audio=latm"})
    source = RtspSource(options(server.url("latm"), audio=True))
    with caplog.at_level(logging.INFO, logger="streams.sources.rtsp.audio"):
        video, audio = await record(source, 0.5)
    assert video and not audio and source.audio_info is None
    refusals = [r.getMessage() for r in caplog.records if r.name == "streams.sources.rtsp.audio"]
    assert len(refusals) == 1 and "MP4A-LATM/48000" in refusals[0]
