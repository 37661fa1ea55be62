"""The hub: GOP cache, bounded queues that skip to keyframes, monotonic timelines."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools

import pytest

from streams.hub import Hub, HubClosed
from streams.packets import MediaPacket
from tests.media import encode_h264


@pytest.fixture(scope="module")
def gop_packets() -> list[MediaPacket]:
    # three GOPs of 10 frames
    return encode_h264(30, width=160, height=120, gop=10)


def test_new_subscriber_starts_at_cached_keyframe(gop_packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    for pkt in gop_packets[:14]:  # one full GOP and four frames of the next
        hub.publish(pkt)
    sub = hub.subscribe()
    first = sub.get_nowait()
    assert first is not None and first.keyframe
    assert first.data == gop_packets[10].data
    assert sub.pending() == 3
    assert hub.info is not None and (hub.info.width, hub.info.height) == (160, 120)


def test_subscriber_without_cache_waits_for_next_keyframe(gop_packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    for pkt in gop_packets[:4]:
        hub.publish(pkt)
    sub = hub.subscribe(from_keyframe=False)
    for pkt in gop_packets[4:11]:
        hub.publish(pkt)
    first = sub.get_nowait()
    assert first is not None and first.data == gop_packets[10].data
    assert sub.dropped == 0, "waiting for the first keyframe is not counted as a loss"


def test_slow_subscriber_skips_to_keyframe_and_fast_one_gets_everything(
    gop_packets: list[MediaPacket],
) -> None:
    hub = Hub("cam", queue_packets=8)
    slow = hub.subscribe()
    fast = hub.subscribe()
    received = []
    published = gop_packets[:25]  # ends five frames into the third GOP
    for pkt in published:
        hub.publish(pkt)
        got = fast.get_nowait()
        assert got is not None
        received.append(got.data)
    assert received == [p.data for p in published]
    assert fast.dropped == 0
    assert slow.skips >= 1 and slow.dropped > 0
    assert hub.stats.dropped == slow.dropped
    # what the slow one still has starts at a keyframe: its video stays decodable
    first = slow.get_nowait()
    assert first is not None and first.keyframe
    assert first.data == published[20].data
    assert slow.pending() == 4


def test_timestamps_continue_across_a_reconnect(gop_packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    sub = hub.subscribe(from_keyframe=False)
    for pkt in gop_packets[:10]:
        hub.publish(pkt)
    hub.discontinuity()
    # the camera restarts with its clock far back
    for pkt in gop_packets[10:20]:
        hub.publish(dataclasses.replace(pkt, pts=pkt.pts - 10_000_000))
    out = [sub.get_nowait() for _ in range(20)]
    pts = [p.pts for p in out if p is not None]
    assert len(pts) == 20
    assert all(b > a for a, b in itertools.pairwise(pts))
    assert pts[10] - pts[9] == pts[9] - pts[8], "the gap is one frame duration"


def test_an_audio_hub_keeps_in_step_with_its_video_across_a_reconnect(
    gop_packets: list[MediaPacket],
) -> None:
    video = Hub("cam")
    audio = Hub("cam/audio", timeline_of=video)
    pictures, sound = video.subscribe(from_keyframe=False), audio.subscribe(from_keyframe=False)
    # The restarted camera's clock is far back, and its sound now lags its picture by 20 ms.
    for session, (clock, lag) in enumerate(((0, 900), (-10_000_000, 1800))):
        video.discontinuity()
        audio.discontinuity()
        for pkt in gop_packets[session * 10 : session * 10 + 10]:
            pts = pkt.pts + clock
            video.publish(dataclasses.replace(pkt, pts=pts))
            audio.publish(MediaPacket(data=b"\xff", pts=pts + lag, keyframe=True, codec="opus"))
    shown = [p.pts for p in iter(pictures.get_nowait, None)]
    heard = [p.pts for p in iter(sound.get_nowait, None)]
    assert len(shown) == len(heard) == 20
    assert all(b > a for a, b in itertools.pairwise(heard))
    # Each sound frame keeps its place against its picture, before and after the reconnect.
    assert [h - s for s, h in zip(shown, heard, strict=True)] == [900] * 10 + [1800] * 10


def test_discontinuity_empties_gop_cache(gop_packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    for pkt in gop_packets[:5]:
        hub.publish(pkt)
    hub.discontinuity()
    assert hub.last_keyframe is None
    sub = hub.subscribe()
    assert sub.get_nowait() is None


def test_after_a_discontinuity_subscribers_resume_at_the_new_sources_first_keyframe(
    gop_packets: list[MediaPacket],
) -> None:
    hub = Hub("cam")
    sub = hub.subscribe()
    for pkt in gop_packets[:5]:
        hub.publish(pkt)
    hub.discontinuity()
    # The new source starts mid-GOP: its first frames refer to pictures this viewer never got.
    for pkt in gop_packets[15:21]:
        hub.publish(pkt)
    got = [p.data for p in iter(sub.get_nowait, None)]
    assert got == [p.data for p in gop_packets[:5]] + [gop_packets[20].data]
    assert sub.dropped == 0


async def test_get_waits_and_close_wakes(gop_packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    sub = hub.subscribe()
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    hub.publish(gop_packets[0])
    assert (await asyncio.wait_for(waiter, 1)).keyframe
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    hub.close()
    with pytest.raises(HubClosed):
        await asyncio.wait_for(waiter, 1)
    assert hub.subscriber_count == 0
    with pytest.raises(HubClosed):
        hub.subscribe()


async def test_async_iteration_ends_when_subscription_closes(gop_packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    for pkt in gop_packets[:3]:
        hub.publish(pkt)
    got = []
    async with hub.subscribe() as sub:
        async for pkt in sub:
            got.append(pkt)
            if len(got) == 3:
                sub.close()
    assert len(got) == 3
    assert hub.subscriber_count == 0


def test_stats_measure_rates(gop_packets: list[MediaPacket]) -> None:
    hub = Hub("cam")
    start = 1000.0
    for i, pkt in enumerate(gop_packets):
        hub.publish(dataclasses.replace(pkt, received=start + i / 25))
    fps, bps = hub.stats.rates(now=start + (len(gop_packets) - 1) / 25)
    assert fps == pytest.approx(25, rel=0.05)
    assert bps > 0
    assert hub.stats.keyframe_interval == pytest.approx(10 / 25)
    assert hub.stats.keyframes == 3


def test_a_subscriber_too_far_behind_in_time_skips_to_the_next_keyframe(
    gop_packets: list[MediaPacket],
) -> None:
    hub = Hub("cam", max_lag=0.5)
    late = hub.subscribe(from_keyframe=False)
    start = 1000.0
    # one frame every 40 ms; the subscriber reads nothing: after 0.5 s it is skipped
    for i, pkt in enumerate(gop_packets[:25]):
        hub.publish(dataclasses.replace(pkt, received=start + i * 0.04))
    assert late.skips == 1
    first = late.get_nowait()
    assert first is not None and first.keyframe
    assert first.data == gop_packets[20].data


def test_the_gop_backlog_is_exempt_from_the_time_bound(gop_packets: list[MediaPacket]) -> None:
    hub = Hub("cam", max_lag=0.5)
    for i, pkt in enumerate(gop_packets[:9]):
        hub.publish(dataclasses.replace(pkt, received=1000.0 + i * 0.04))
    joiner = hub.subscribe()
    assert joiner.backlog == 9
    # a live packet arrives 2 s after the cached keyframe: the backlog still goes out
    hub.publish(dataclasses.replace(gop_packets[9], received=1002.0))
    assert joiner.skips == 0
    got = [joiner.get_nowait() for _ in range(10)]
    assert [p.data for p in got if p is not None] == [p.data for p in gop_packets[:10]]
    assert joiner.backlog == 0
