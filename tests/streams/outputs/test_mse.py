"""MSE sessions on a real hub: shared fragments, late joiners, slow viewers, stream changes, caps,
and AAC audio from an audio hub interleaved with the video.

Covers :mod:`streams.outputs.mse` and :mod:`streams.outputs.mse_fragments`, with real
PyAV-encoded H.264 and AAC.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from pathlib import Path

import av
import pytest

from streams.errors import CapacityError
from streams.hub import Hub
from streams.outputs.mse import MseFragment, MseInit, MseMessage, MseOutput, MseSession
from streams.packets import CLOCK_RATE, AudioInfo, MediaPacket
from streams.viewers import ViewerLedger, ViewerLimits
from tests.media import arriving, encode_h264
from tests.streams.formats.test_fmp4_audio import encode_aac

FRAME = CLOCK_RATE // 25
STEP = 2.0
"""Seconds any single wait may take."""


@functools.cache
def stream(width: int = 320, height: int = 240, frames: int = 75) -> tuple[MediaPacket, ...]:
    return tuple(encode_h264(frames, width=width, height=height, gop=25))


async def take(session: MseSession) -> MseMessage:
    return await asyncio.wait_for(anext(session), STEP)


async def ready(session: MseSession) -> list[MseMessage]:
    """Every message the session yields until it would have to wait for a new packet."""
    out: list[MseMessage] = []
    while session.pending():
        out.append(await take(session))
    return out


async def test_sessions_share_fragment_bytes() -> None:
    hub, output = Hub("cam"), MseOutput()
    a, b = output.open("cam", hub), output.open("cam", hub)
    for packet in arriving(stream()[:10]):
        hub.publish(packet)
    got_a, got_b = await ready(a), await ready(b)
    assert isinstance(got_a[0], MseInit) and isinstance(got_b[0], MseInit)
    assert got_a[0].data is got_b[0].data
    assert got_a[0].mime == f'video/mp4; codecs="{got_a[0].codec}"'
    assert (got_a[0].width, got_a[0].height) == (320, 240)
    assert len(got_a) == len(got_b) == 11
    assert all(x is y for x, y in zip(got_a[1:], got_b[1:], strict=True))  # the same objects
    frames = [m for m in got_a if isinstance(m, MseFragment)]
    assert [f.pts for f in frames] == [p.pts for p in stream()[:10]]
    assert frames[0].keyframe and not any(f.keyframe for f in frames[1:])
    shared = output.shared(hub)
    assert shared is not None and shared.muxed == 10  # muxed once for both sessions
    assert a.bytes_sent == sum(len(m.data) for m in got_a) and a.fragments_sent == 10
    await output.stop()


async def test_late_joiner_starts_with_init_and_cached_keyframe() -> None:
    hub, output = Hub("cam"), MseOutput()
    early = output.open("cam", hub)
    packets = arriving(stream())
    for packet in packets[:30]:  # a full GOP and 5 frames of the next
        hub.publish(packet)
    seen = await ready(early)
    late = output.open("cam", hub)
    got = await ready(late)
    assert isinstance(got[0], MseInit) and got[0].data is seen[0].data
    assert isinstance(got[1], MseFragment) and got[1].keyframe and got[1].pts == packets[25].pts
    assert got[1:] == seen[-5:] and all(x is y for x, y in zip(got[1:], seen[-5:], strict=True))
    hub.publish(packets[30])
    assert await take(late) is await take(early)
    await output.stop()


async def test_slow_session_is_skipped_to_a_keyframe_without_stalling_the_other() -> None:
    hub, output = Hub("cam", queue_packets=8), MseOutput()
    fast, slow = output.open("cam", hub), output.open("cam", hub)
    packets = arriving(stream())
    hub.publish(packets[0])
    assert isinstance(await take(slow), MseInit)
    assert (await take(slow)).keyframe  # type: ignore[union-attr]
    fast_got = [await take(fast)]
    for packet in packets[1:56]:  # the slow viewer reads nothing meanwhile
        hub.publish(packet)
        fast_got.append(await take(fast))
    fast_got += await ready(fast)
    assert [m.pts for m in fast_got if isinstance(m, MseFragment)] == [p.pts for p in packets[:56]]

    resumed = await ready(slow)
    assert slow.dropped > 0
    assert isinstance(resumed[0], MseFragment) and resumed[0].keyframe
    assert resumed[0].pts == packets[50].pts  # skipped forward to the latest keyframe
    assert [m.pts for m in resumed if isinstance(m, MseFragment)] == [p.pts for p in packets[50:56]]
    await output.stop()


async def test_resolution_change_yields_a_new_init() -> None:
    hub, output = Hub("cam", queue_packets=1000), MseOutput()
    session = output.open("cam", hub)
    small = stream()[:25]
    large = [p.shifted(25 * FRAME) for p in stream(640, 360, 25)]
    for packet in arriving([*small, *large]):
        hub.publish(packet)
    got = await ready(session)
    inits = [(i, m) for i, m in enumerate(got) if isinstance(m, MseInit)]
    assert [(i, m.width, m.height) for i, m in inits] == [(0, 320, 240), (26, 640, 360)]
    after = got[27]
    assert isinstance(after, MseFragment) and after.keyframe and after.pts == large[0].pts
    assert len(got) == 2 + 50
    await output.stop()


async def test_capacity_limits() -> None:
    hub_a, hub_b = Hub("a"), Hub("b")
    output = MseOutput(viewers=ViewerLedger(ViewerLimits(max_per_camera=2, max_total=3)))
    first = output.open("a", hub_a)
    output.open("a", hub_a)
    with pytest.raises(CapacityError, match=r"^camera a already has 2 viewers \(MSE 2\)$"):
        output.open("a", hub_a)
    output.open("b", hub_b)
    with pytest.raises(CapacityError, match=r"^the relay already serves 3 viewers \(MSE 3\)$"):
        output.open("b", hub_b)
    assert (output.session_count("a"), output.session_count("b"), output.session_count()) == (2, 1, 3)
    first.close()
    first.close()  # idempotent
    assert first.ended is not None and first.end_reason == "closed"
    assert output.session_count("a") == 1 and hub_a.subscriber_count == 1
    output.open("a", hub_a)
    await output.stop()


async def test_stop_and_hub_close_end_sessions() -> None:
    hub, other = Hub("cam"), Hub("other")
    output = MseOutput()
    waiting, on_other = output.open("cam", hub), output.open("other", other)
    pending = asyncio.ensure_future(anext(waiting))
    await asyncio.sleep(0)
    other.close()
    with pytest.raises(StopAsyncIteration):
        await take(on_other)
    assert on_other.end_reason == "camera stream ended" and output.session_count("other") == 0

    await output.stop()
    await output.stop()  # idempotent
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, STEP)
    assert waiting.ended is not None and waiting.end_reason == "relay stopping"
    assert output.session_count() == 0 and hub.subscriber_count == 0
    assert output.shared(hub) is None
    with pytest.raises(CapacityError, match="shutting down"):
        output.open("cam", hub)


# -- audio ----------------------------------------------------------------------


def aac(seconds: float = 3.0) -> tuple[AudioInfo, tuple[MediaPacket, ...]]:
    return encode_aac(seconds, 48_000, 2)


AUDIO_FRAME = 1024 * CLOCK_RATE // 48_000


def live(packets: list[MediaPacket], start: float) -> list[MediaPacket]:
    """``packets`` as if they had arrived in real time from ``start`` (monotonic), merged in
    presentation order: the order a camera's video and audio hubs receive them."""
    stamped = [dataclasses.replace(p, received=start + p.pts / CLOCK_RATE) for p in packets]
    return sorted(stamped, key=lambda p: (p.received, p.is_audio))


def hubs(info: AudioInfo, queue_packets: int = 1000) -> tuple[Hub, Hub]:
    """A camera's video hub and its audio hub, patient enough for a test that publishes
    seconds of media before reading (they would skip a subscriber a second behind)."""
    audio = Hub("cam audio", queue_packets=queue_packets, max_lag=10.0)
    audio.audio = info
    return Hub("cam", queue_packets=queue_packets, max_lag=10.0), audio


def publish(video: Hub, audio: Hub, packets: list[MediaPacket]) -> None:
    for packet in packets:
        (audio if packet.is_audio else video).publish(packet)


async def test_audio_is_interleaved_in_arrival_order_and_shared() -> None:
    info, sound = aac()
    (hub, audio), output = hubs(info), MseOutput()
    a, b = output.open("cam", hub, audio), output.open("cam", hub, audio)
    assert audio.subscriber_count == 2
    early = [p.shifted(-3 * AUDIO_FRAME) for p in sound[:3]]  # audio before the first keyframe
    packets = live(early + list(stream()[:25]) + list(sound[:50]), time.monotonic() - 1.0)
    publish(hub, audio, packets)
    got_a, got_b = await ready(a), await ready(b)
    init = got_a[0]
    assert isinstance(init, MseInit) and init.audio == "mp4a.40.2" and a.audio == info
    assert init.mime == f'video/mp4; codecs="{init.codec}, mp4a.40.2"'
    assert init.data is got_b[0].data and init.data.count(b"mp4a") == 1
    fragments = [m for m in got_a[1:] if isinstance(m, MseFragment)]
    assert len(fragments) == len(got_a) - 1 == 25 + 50
    sent = [p for p in packets if p.pts >= 0]
    assert [(f.audio, f.pts) for f in fragments] == [(p.is_audio, p.pts) for p in sent]  # arrival order
    assert fragments[0].keyframe and not fragments[0].audio
    assert all(x is y for x, y in zip(got_a, got_b, strict=True))  # shared bytes, both tracks
    shared = output.shared_audio(audio)
    assert shared is not None and shared.muxed == 50  # once for both; the early frames not at all
    assert a.audio_sent == 50 and a.fragments_sent == 75

    # A session waiting for either track wakes for the one that comes.
    waiting = asyncio.ensure_future(anext(a))
    await asyncio.sleep(0)
    audio.publish(sound[50])
    frame = await asyncio.wait_for(waiting, STEP)
    assert isinstance(frame, MseFragment) and frame.audio and frame.pts == sound[50].pts
    waiting = asyncio.ensure_future(anext(a))
    await asyncio.sleep(0)
    hub.publish(stream()[25])
    picture = await asyncio.wait_for(waiting, STEP)
    assert isinstance(picture, MseFragment) and not picture.audio and picture.pts == stream()[25].pts
    await output.stop()
    assert audio.subscriber_count == 0 and output.shared_audio(audio) is None


async def test_muxed_session_plays_back(tmp_path: Path) -> None:
    """What one session sends, written to a file, holds both tracks in step."""
    info, sound = aac(2.0)
    (hub, audio), output = hubs(info), MseOutput()
    session = output.open("cam", hub, audio)
    publish(hub, audio, live(list(stream()[:50]) + list(sound), time.monotonic() - 2.0))
    got = await ready(session)
    path = tmp_path / "session.mp4"
    path.write_bytes(b"".join(m.data for m in got))
    with av.open(str(path)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        frames = list(container.decode(video=0, audio=0))
    pictures = [f for f in frames if isinstance(f, av.VideoFrame)]
    samples = [f for f in frames if isinstance(f, av.AudioFrame)]
    assert len(pictures) == 50 and len(samples) == len(sound)
    assert abs(float(samples[0].time or 0) - float(pictures[0].time or 0)) < 1 / 25
    await output.stop()


async def test_slow_session_is_skipped_on_both_tracks() -> None:
    info, sound = aac()
    hub, audio = hubs(info, queue_packets=16)
    output = MseOutput()
    fast, slow = output.open("cam", hub, audio), output.open("cam", hub, audio)
    packets = live(list(stream()[:56]) + list(sound[:105]), time.monotonic() - 3.0)
    publish(hub, audio, packets[:2])
    assert [type(m) for m in await ready(slow)] == [MseInit, MseFragment]
    fast_got: list[MseMessage] = []
    for packet in packets[2:]:  # the slow viewer reads nothing meanwhile
        publish(hub, audio, [packet])
        fast_got += await ready(fast)
    assert len([m for m in fast_got if isinstance(m, MseFragment)]) == len(packets)
    assert slow.dropped > 0 and slow.pending() <= 32
    resumed = [m for m in await ready(slow) if isinstance(m, MseFragment)]
    video = [m for m in resumed if not m.audio]
    assert video[0].keyframe and video[0].pts == stream()[50].pts  # skipped to the latest keyframe
    assert {m.pts for m in resumed} <= {m.pts for m in fast_got if isinstance(m, MseFragment)}
    shared = output.shared_audio(audio)
    assert shared is not None and shared.muxed == 105  # muxed once, whoever reads
    await output.stop()


async def test_new_init_keeps_the_audio_track() -> None:
    info, sound = aac()
    (hub, audio), output = hubs(info), MseOutput()
    session = output.open("cam", hub, audio)
    large = [p.shifted(25 * FRAME) for p in stream(640, 360, 25)]
    publish(hub, audio, live([*stream()[:25], *large, *sound[:100]], time.monotonic() - 2.0))
    inits = [m for m in await ready(session) if isinstance(m, MseInit)]
    assert [(m.width, m.audio) for m in inits] == [(320, "mp4a.40.2"), (640, "mp4a.40.2")]
    assert all(m.mime.endswith(', mp4a.40.2"') for m in inits)
    await output.stop()


async def test_audio_that_is_not_aac_or_not_flowing_is_left_out() -> None:
    info, sound = aac()
    hub, output = Hub("cam"), MseOutput()
    _, opus = hubs(AudioInfo("opus", 48_000, 2))
    session = output.open("cam", hub, opus)
    assert opus.subscriber_count == 0  # never subscribed: an Opus transcoder is not started for nothing
    _, silent = hubs(info)
    other = output.open("cam", hub, silent)
    assert silent.subscriber_count == 1
    hub.publish(stream()[0])
    first, second = await take(session), await take(other)
    assert isinstance(first, MseInit) and isinstance(second, MseInit)
    assert first.audio is second.audio is None and first.data is second.data
    assert first.mime == f'video/mp4; codecs="{first.codec}"' and other.audio is None
    assert silent.subscriber_count == 0  # no audio at the first keyframe: none for this session
    silent.publish(sound[0])
    hub.publish(stream()[1])
    assert [m.pts for m in await ready(other) if isinstance(m, MseFragment)] == [
        stream()[0].pts,
        stream()[1].pts,
    ]
    await output.stop()


async def test_audio_that_stops_changes_or_ends_ends_the_session() -> None:
    info, sound = aac()
    output = MseOutput(audio_timeout=0.2)
    cameras = [hubs(info) for _ in range(3)]
    stopped, changed, closed = (output.open("cam", hub, audio) for hub, audio in cameras)
    for hub, audio in cameras:
        publish(hub, audio, live([*stream()[:5], *sound[:10]], time.monotonic()))
    for session in (stopped, changed, closed):
        assert isinstance((await ready(session))[0], MseInit)

    async def until_ended(session: MseSession) -> str | None:
        with pytest.raises(StopAsyncIteration):
            for _ in range(10):
                await take(session)
        return session.end_reason

    await asyncio.sleep(0.25)  # longer than audio_timeout without audio
    cameras[0][0].publish(stream()[5])
    assert await until_ended(stopped) == "audio stopped"

    cameras[1][1].audio = AudioInfo("aac", 16_000, 1, bytes.fromhex("1408"))
    cameras[1][1].publish(sound[10])
    assert await until_ended(changed) == "audio stream changed"

    cameras[2][1].close()
    assert await until_ended(closed) == "audio stream ended"
    assert output.session_count() == 0
    assert all(hub.subscriber_count == 0 and output.shared_audio(audio) is None for hub, audio in cameras)
