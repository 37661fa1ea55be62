"""WebRTC audio end to end: real H.264 and real Opus/G.711/AAC frames (PyAV) published
into real hubs at real-time pace, real aiortc viewers over loopback (``tests.whep_client``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import re
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from aiortc import sdp as aiortc_sdp
from aiortc.codecs.g711 import PcmEncoder
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.opus import OpusEncoder

from streams.hub import Hub
from streams.packets import CLOCK_RATE, AudioCodec, MediaPacket
from streams.transcoding.audio_transcoder import AudioTranscoder
from streams.webrtc.output import WebRtcOutput, WhepSession
from tests.audio_media import AudioFeeder, encode_audio, feeding_audio
from tests.media import encode_h264
from tests.whep_client import WhepClient

FPS = 25


@functools.cache
def video() -> tuple[MediaPacket, ...]:
    return tuple(encode_h264(50, gop=25))


@contextlib.asynccontextmanager
async def feeding_video(name: str = "cam") -> AsyncIterator[Hub]:
    hub = Hub(name)

    async def run() -> None:
        start, count = time.monotonic(), 0
        while True:
            template = video()[count % len(video())]
            hub.publish(
                dataclasses.replace(template, pts=count * CLOCK_RATE // FPS, received=time.monotonic())
            )
            count += 1
            await asyncio.sleep(max(0.0, start + count / FPS - time.monotonic()))

    task = asyncio.create_task(run())
    try:
        yield hub
    finally:
        task.cancel()
        await asyncio.wait([task])
        hub.close()


@contextlib.asynccontextmanager
async def feeding(codec: AudioCodec) -> AsyncIterator[tuple[Hub, AudioFeeder]]:
    async with feeding_video() as hub, feeding_audio(Hub("cam-audio"), encode_audio(codec, 1.0)) as audio:
        yield hub, audio


@pytest.fixture(autouse=True)
def no_encoder(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Passthrough proof: any attempt of aiortc to encode a frame is recorded (and fails)."""
    calls: list[str] = []

    def forbidden(name: str):  # type: ignore[no-untyped-def]
        def encode(*args: object, **kwargs: object) -> None:
            calls.append(name)
            raise AssertionError(f"{name} must never run")

        return encode

    for cls in (H264Encoder, OpusEncoder, PcmEncoder):
        monkeypatch.setattr(cls, "encode", forbidden(f"{cls.__name__}.encode"))
    yield calls
    assert calls == []


@pytest.fixture
async def output() -> AsyncIterator[WebRtcOutput]:
    out = WebRtcOutput(ice_host_addresses=["127.0.0.1"], info_timeout=2.0)
    yield out
    await out.stop()
    assert out.session_count() == 0


async def join(
    out: WebRtcOutput, hub: Hub, audio_hub: Hub | None, *, audio: bool = True, drop_pt: int | None = None
) -> tuple[WhepClient, WhepSession]:
    """A viewer; ``drop_pt`` removes that payload type from the offer's audio m-line."""
    client = WhepClient(audio=audio)
    sessions: list[WhepSession] = []

    async def signal(offer: str) -> str:
        if drop_pt is not None:
            offer = without_audio_payload_type(offer, drop_pt)
        sessions.append(await out.create_session(hub.name, hub, offer, audio_hub=audio_hub))
        return sessions[0].answer_sdp

    try:
        await client.connect(signal)
    except BaseException:
        await client.close()
        raise
    return client, sessions[0]


def without_audio_payload_type(offer: str, pt: int) -> str:
    lines = []
    for line in offer.splitlines():
        if line.startswith("m=audio "):
            head, formats = line.split(" ")[:3], line.split(" ")[3:]
            line = " ".join(head + [f for f in formats if f != str(pt)])
        elif re.match(rf"a=(rtpmap|fmtp|rtcp-fb):{pt} ", line):
            continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def audio_media(sdp: str) -> aiortc_sdp.MediaDescription:
    return next(m for m in aiortc_sdp.SessionDescription.parse(sdp).media if m.kind == "audio")


@pytest.mark.parametrize(("codec", "rtp_name"), [("opus", "opus"), ("pcmu", "PCMU"), ("pcma", "PCMA")])
async def test_opus_and_g711_pass_through_byte_exact(
    output: WebRtcOutput, codec: AudioCodec, rtp_name: str
) -> None:
    async with feeding(codec) as (hub, feeder):
        client, session = await join(output, hub, feeder.hub)
        async with client:
            assert session.audio_codec == rtp_name and client.audio_codec == rtp_name
            assert audio_media(session.answer_sdp).direction == "sendonly"
            assert await client.wait_until(lambda: client.audio_frames >= 10, within=10)
            first = client.audio_frames
            assert await client.wait_until(lambda: client.audio_frames >= first + 10, within=5)  # rising
            assert await client.wait_frames(10)  # the video is unaffected
            published = [p.data for p in feeder.published]
            received = client.audio_payloads[:20]
            start = published.index(received[0])
            assert received == published[start : start + len(received)]  # the same bytes, in order
            assert session.audio is not None and session.audio.frames >= len(received)


async def test_aac_reaches_viewers_as_opus_through_one_transcoder(output: WebRtcOutput) -> None:
    async with feeding("aac") as (hub, feeder):
        transcoder = AudioTranscoder(feeder.hub, name="cam-opus", idle_timeout=0.3)
        try:
            assert not transcoder.running
            joined = [await join(output, hub, transcoder.output) for _ in range(3)]
            assert all(session.audio_codec == "opus" for _, session in joined)
            for client, _ in joined:
                assert await client.wait_until(lambda c=client: c.audio_frames >= 10, within=10)  # type: ignore[misc]
            assert transcoder.starts == 1 and transcoder.running
            assert transcoder.decode_errors == 0
            for client, _ in joined:
                await client.close()
            await output.stop()
            deadline = time.monotonic() + 5
            while transcoder.running and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not transcoder.running and transcoder.starts == 1
        finally:
            await transcoder.stop()


async def test_an_offer_without_audio_still_gets_video(output: WebRtcOutput) -> None:
    async with feeding("opus") as (hub, feeder):
        client, session = await join(output, hub, feeder.hub, audio=False)
        async with client:
            assert session.audio is None and session.audio_codec is None
            assert "m=audio" not in session.answer_sdp
            assert await client.wait_frames(10)


@pytest.mark.parametrize("case", ["codec-not-offered", "no-audio-hub", "aac-not-transcoded"])
async def test_audio_that_cannot_be_sent_leaves_the_video(output: WebRtcOutput, case: str) -> None:
    codec: AudioCodec = "aac" if case == "aac-not-transcoded" else "pcmu"
    async with feeding(codec) as (hub, feeder):
        drop_pt = 0 if case == "codec-not-offered" else None  # PCMU's static payload type
        audio_hub = None if case == "no-audio-hub" else feeder.hub
        client, session = await join(output, hub, audio_hub, drop_pt=drop_pt)
        async with client:
            assert session.audio is None
            assert audio_media(session.answer_sdp).direction == "inactive"
            assert client.audio_codec is None
            assert await client.wait_frames(10)
            assert client.audio_payloads == []
