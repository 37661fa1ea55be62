"""The audio transcoder: real AAC (PyAV) published into a real hub at real-time pace,
transcoded to Opus by a real worker thread, checked by decoding the output with libopus."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable

import av
import numpy as np
import pytest

from streams.hub import Hub, HubClosed, Subscription
from streams.packets import CLOCK_RATE, AudioInfo, MediaPacket
from streams.transcoding.audio_transcoder import OPUS_FRAME_SAMPLES, AudioTranscoder
from tests.audio_media import AudioFeeder, EncodedAudio, encode_audio, feeding_audio

OPUS_TICKS = OPUS_FRAME_SAMPLES * CLOCK_RATE // 48_000


@pytest.fixture(scope="module")
def aac() -> EncodedAudio:
    return encode_audio("aac", 1.0, sample_rate=16_000)


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def take(sub: Subscription, count: int, within: float = 10.0) -> list[MediaPacket]:
    async with asyncio.timeout(within):
        return [await sub.get() for _ in range(count)]


def decode_opus(packets: list[MediaPacket], channels: int) -> np.ndarray:
    """Every packet decoded by a fresh libopus decoder: (channels, samples) floats."""
    ctx = av.CodecContext.create("libopus", "r")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate = 48_000
    ctx.layout = "mono" if channels == 1 else "stereo"
    chunks = []
    for packet in packets:
        frames = ctx.decode(av.Packet(packet.data))
        assert len(frames) == 1 and frames[0].samples == OPUS_FRAME_SAMPLES
        chunks.append(frames[0].to_ndarray().reshape(channels, -1, order="F").astype(np.float64))
    return np.concatenate(chunks, axis=1)


def dominant_hz(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[int(np.argmax(spectrum))])


def worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("transcode-audio ")]


@pytest.mark.parametrize(("rate", "channels"), [(16_000, 1), (44_100, 2)], ids=["16k-mono", "44k-stereo"])
async def test_aac_becomes_20ms_opus_at_48k_on_the_source_timeline(rate: int, channels: int) -> None:
    source = Hub("mic")
    audio = encode_audio("aac", 1.0, sample_rate=rate, channels=channels)
    transcoder = AudioTranscoder(source, name="mic")
    async with feeding_audio(source, audio) as feeder:
        await wait_until(lambda: feeder.count > 0)
        sub = transcoder.subscribe()
        out = await take(sub, 40)
        assert transcoder.running and worker_threads()[0] is not threading.current_thread()
    await transcoder.stop()

    assert transcoder.output.audio == AudioInfo("opus", 48_000, channels)
    assert all(p.codec == "opus" and p.keyframe for p in out)
    assert {b.pts - a.pts for a, b in itertools.pairwise(out)} == {OPUS_TICKS}
    # The first frame's timestamp is where the source's audio was when the run began
    # (less the encoder's look-ahead, a few milliseconds).
    first_source = next(p.pts for p in feeder.published if p.pts + CLOCK_RATE // 50 >= out[0].pts)
    assert abs(out[0].pts - first_source) < CLOCK_RATE // 50
    pcm = decode_opus(out, channels)
    assert abs(dominant_hz(pcm[0, 4800:], 48_000) - 440) < 10  # the sine survived
    assert transcoder.starts == 1 and transcoder.decode_errors == 0 and transcoder.failures == 0
    assert transcoder.frames_in > 0 and transcoder.frames_out >= 40
    assert worker_threads() == []


async def test_one_start_for_many_listeners_and_stops_when_idle(aac: EncodedAudio) -> None:
    source = Hub("mic-idle")
    transcoder = AudioTranscoder(source, name="mic", idle_timeout=0.3)
    async with feeding_audio(source, aac):
        await asyncio.sleep(0.1)
        assert not transcoder.running and transcoder.starts == 0  # nobody listens yet
        subs = [transcoder.subscribe() for _ in range(3)]
        for sub in subs:
            await take(sub, 5)
        assert transcoder.starts == 1 and len(worker_threads()) == 1
        for sub in subs:
            sub.close()
        closed_at = time.monotonic()
        await wait_until(lambda: not transcoder.running)
        assert 0.25 <= time.monotonic() - closed_at < 2.0
        assert worker_threads() == []
        again = transcoder.subscribe()  # the next listener starts it again
        await take(again, 5)
        assert transcoder.starts == 2
    await transcoder.stop()


async def test_a_gap_in_the_source_re_anchors_the_output(aac: EncodedAudio) -> None:
    source = Hub("mic-gap")
    transcoder = AudioTranscoder(source, name="mic")
    feeder = AudioFeeder(source, aac)
    sub = transcoder.subscribe()
    out: list[MediaPacket] = []

    async def publish(frames: int) -> None:
        for _ in range(frames):
            feeder.publish_next()
            await asyncio.sleep(aac.frame_ticks / CLOCK_RATE)
            while (packet := sub.get_nowait()) is not None:
                out.append(packet)

    await publish(10)
    gap_at = len(out)
    feeder.start_pts += 5 * CLOCK_RATE  # five seconds of silence from the camera
    await publish(10)
    resumed = feeder.published[10].pts
    async with asyncio.timeout(5):
        while out[-1].pts < resumed + CLOCK_RATE // 4:
            out.append(await sub.get())
    await transcoder.stop()
    before, after = out[:gap_at], out[gap_at:]
    assert before and after[-1].pts > resumed
    late = [p for p in after if p.pts > before[-1].pts + CLOCK_RATE]
    assert late and abs(late[0].pts - resumed) < CLOCK_RATE // 50
    assert transcoder.starts == 1 and transcoder.decode_errors == 0


async def test_stop_is_prompt_idempotent_and_ends_listeners(aac: EncodedAudio) -> None:
    source = Hub("mic-stop")
    transcoder = AudioTranscoder(source, name="mic", idle_timeout=30.0)
    async with feeding_audio(source, aac):
        sub = transcoder.subscribe()
        await take(sub, 3)
        thread = transcoder.worker_thread
        assert thread is not None
        started = time.monotonic()
        await transcoder.stop()
        assert time.monotonic() - started < 2.0
        await transcoder.stop()
    assert not transcoder.running and not thread.is_alive()
    with pytest.raises(HubClosed):
        while True:
            await sub.get()
    with pytest.raises(HubClosed):
        transcoder.subscribe()


async def test_garbage_costs_a_frame_not_the_worker(aac: EncodedAudio) -> None:
    source = Hub("mic-garbage")
    transcoder = AudioTranscoder(source, name="mic")
    feeder = AudioFeeder(source, aac)
    sub = transcoder.subscribe()
    feeder.publish_next()
    source.publish(MediaPacket(b"\xff" * 40, pts=feeder.published[-1].pts + 1, keyframe=True, codec="aac"))
    async with feeding_audio(source, aac):
        out = await take(sub, 10)
    await transcoder.stop()
    assert transcoder.starts == 1 and transcoder.failures == 0
    assert len(decode_opus(out, 1)[0]) == 10 * OPUS_FRAME_SAMPLES
