"""Real encoded audio for tests, by PyAV: a sine as AAC, Opus or G.711 frames, and a
feeder that publishes them into a hub at real-time pace, as an audio ingest would."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fractions
import time
from collections.abc import AsyncIterator

import av
import numpy as np

from streams.hub import Hub
from streams.packets import CLOCK_RATE, AudioCodec, AudioInfo, MediaPacket

_ENCODERS: dict[AudioCodec, tuple[str, str, int]] = {
    # codec -> (PyAV encoder, sample format, samples per frame; 0: the encoder's own)
    "aac": ("aac", "fltp", 0),
    "opus": ("libopus", "s16", 960),
    "pcmu": ("pcm_mulaw", "s16", 160),
    "pcma": ("pcm_alaw", "s16", 160),
}


@dataclasses.dataclass(frozen=True)
class EncodedAudio:
    packets: list[MediaPacket]
    info: AudioInfo
    frame_ticks: int
    """90 kHz ticks per frame."""


def encode_audio(
    codec: AudioCodec, seconds: float = 1.0, *, sample_rate: int | None = None, channels: int = 1
) -> EncodedAudio:
    """``seconds`` of a 440 Hz sine as frames of ``codec`` (raw AAC access units, no ADTS)."""
    name, fmt, frame_size = _ENCODERS[codec]
    rate = sample_rate or {"aac": 16_000, "opus": 48_000}.get(codec, 8_000)
    ctx = av.CodecContext.create(name, "w")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate = rate
    ctx.layout = "mono" if channels == 1 else "stereo"
    ctx.format = fmt
    ctx.time_base = fractions.Fraction(1, rate)
    if codec in ("aac", "opus"):
        ctx.bit_rate = 32_000 * channels
    ctx.open()
    frame_size = frame_size or ctx.frame_size
    total = int(seconds * rate) // frame_size * frame_size
    t = np.arange(total) / rate
    wave = 0.3 * np.sin(2 * np.pi * 440 * t)
    samples = np.repeat(wave[None, :], channels, axis=0)
    encoded: list[bytes] = []
    for start in range(0, total, frame_size):
        chunk = samples[:, start : start + frame_size]
        if fmt == "s16":
            array = (chunk * 32767).astype(np.int16).T.reshape(1, -1)  # packed
        else:
            array = chunk.astype(np.float32)  # planar
        frame = av.AudioFrame.from_ndarray(array, format=fmt, layout=ctx.layout.name)
        frame.sample_rate = rate
        frame.pts = start
        encoded += [bytes(p) for p in ctx.encode(frame)]
    encoded += [bytes(p) for p in ctx.encode(None)]
    ticks = frame_size * CLOCK_RATE // rate
    packets = [
        MediaPacket(data=data, pts=i * ticks, keyframe=True, codec=codec) for i, data in enumerate(encoded)
    ]
    config = bytes(ctx.extradata or b"") if codec == "aac" else b""
    return EncodedAudio(packets, AudioInfo(codec, rate, channels, config), ticks)


class AudioFeeder:
    """Publishes the frames in a loop at real-time pace; remembers what it published."""

    def __init__(self, hub: Hub, audio: EncodedAudio, start_pts: int = 0) -> None:
        self.hub, self.audio, self.start_pts = hub, audio, start_pts
        hub.audio = audio.info
        self.published: list[MediaPacket] = []
        self.count = 0

    def publish_next(self) -> MediaPacket:
        source = self.audio.packets[self.count % len(self.audio.packets)]
        packet = dataclasses.replace(
            source, pts=self.start_pts + self.count * self.audio.frame_ticks, received=time.monotonic()
        )
        self.hub.publish(packet)
        self.published.append(packet)
        self.count += 1
        return packet

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start, first = loop.time(), self.count
        period = self.audio.frame_ticks / CLOCK_RATE
        while True:
            self.publish_next()
            await asyncio.sleep(max(0.0, start + (self.count - first) * period - loop.time()))


@contextlib.asynccontextmanager
async def feeding_audio(hub: Hub, audio: EncodedAudio) -> AsyncIterator[AudioFeeder]:
    feeder = AudioFeeder(hub, audio)
    task = asyncio.create_task(feeder.run())
    try:
        yield feeder
    finally:
        task.cancel()
        await asyncio.wait([task])
