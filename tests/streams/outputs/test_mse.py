"""MSE sessions on a real hub: shared fragments, late joiners, slow viewers, stream changes, caps.

Covers :mod:`streams.outputs.mse`, with real PyAV-encoded H.264.
"""

from __future__ import annotations

import asyncio
import functools

import pytest

from streams.errors import CapacityError
from streams.hub import Hub
from streams.outputs.mse import MseFragment, MseInit, MseMessage, MseOutput, MseSession
from streams.packets import CLOCK_RATE, MediaPacket
from tests.media import encode_h264

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
    for packet in stream()[:10]:
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
    packets = stream()
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
    packets = stream()
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
    for packet in [*small, *large]:
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
    output = MseOutput(max_sessions_per_camera=2, max_sessions_total=3)
    first = output.open("a", hub_a)
    output.open("a", hub_a)
    with pytest.raises(CapacityError, match="camera a"):
        output.open("a", hub_a)
    output.open("b", hub_b)
    with pytest.raises(CapacityError, match="3 MSE viewers"):
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
