"""The memory trimmer: after the last viewer of the relay leaves, and while nobody watches.

The trimmer itself runs the real ``gc.collect`` and glibc's ``malloc_trim``; the
relay test joins a real aiortc viewer (``tests.whep_client``) to a demo camera.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from streams import CameraSpec, IngestState, RelaySettings, SourceOptions, StreamManager
from streams.memory import IDLE, LAST_VIEWER_LEFT, MemoryTrimmer, malloc_trim_available
from tests.whep_client import WhepClient


class Audience:
    """How many viewers the trimmer under test is told there are."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


async def seen(trimmer: MemoryTrimmer, within: float = 5.0) -> None:
    """Until the trimmer has seen a viewer."""
    deadline = time.monotonic() + within
    while not trimmer.watched:
        assert time.monotonic() < deadline, "the trimmer never looked at the viewers"
        await asyncio.sleep(0.01)


async def test_trims_once_the_last_viewer_has_left_then_while_idle() -> None:
    audience = Audience()
    audience.count = 3
    trimmer = MemoryTrimmer(audience, settle=0.05, follow_up=0.2, idle_interval=0.2, poll=0.01)
    trimmer.start()
    try:
        await seen(trimmer)
        audience.count = 0
        first = await asyncio.wait_for(trimmer.next_trim(), 5)
        assert first.reason == LAST_VIEWER_LEFT
        assert first.trimmed == malloc_trim_available()
        assert first.rss_before is not None and first.rss_after is not None
        assert first.loop_seconds >= 0
        second = await asyncio.wait_for(trimmer.next_trim(), 5)
        assert second.reason == IDLE
        assert trimmer.trims == 2 and trimmer.last is second
    finally:
        await trimmer.stop()
        await trimmer.stop()  # idempotent


async def test_a_follow_up_trim_comes_soon_after_the_first_then_the_idle_pace() -> None:
    audience = Audience()
    audience.count = 1
    trimmer = MemoryTrimmer(audience, settle=0.02, follow_up=0.1, idle_interval=30, poll=0.01)
    trimmer.start()
    try:
        await seen(trimmer)
        audience.count = 0
        assert (await asyncio.wait_for(trimmer.next_trim(), 5)).reason == LAST_VIEWER_LEFT
        started = time.monotonic()
        assert (await asyncio.wait_for(trimmer.next_trim(), 5)).reason == IDLE  # long before 30 s
        assert time.monotonic() - started >= 0.1
        with pytest.raises(TimeoutError):  # then the idle pace: nothing for 30 s
            await asyncio.wait_for(trimmer.next_trim(), 0.5)
    finally:
        await trimmer.stop()


async def test_no_trim_while_anyone_watches() -> None:
    audience = Audience()
    audience.count = 1
    trimmer = MemoryTrimmer(audience, settle=0.01, idle_interval=0.01, poll=0.01)
    trimmer.start()
    try:
        waiting = asyncio.ensure_future(trimmer.next_trim())
        await seen(trimmer)
        done, _ = await asyncio.wait([waiting], timeout=0.3)  # many polls, each with a viewer
        assert not done and trimmer.trims == 0
        audience.count = 0
        assert (await asyncio.wait_for(waiting, 5)).reason == LAST_VIEWER_LEFT
    finally:
        await trimmer.stop()


def test_malloc_trim_is_found_on_glibc() -> None:
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    assert malloc_trim_available()


async def test_the_relay_trims_after_its_last_webrtc_viewer_leaves() -> None:
    camera = CameraSpec(id="tax-1", source=SourceOptions(url="demo://tax-1?size=320x180&gop=25"))
    settings = RelaySettings(ice_host_addresses=("127.0.0.1",), trim_settle=0.1, trim_idle_interval=3600)
    manager = StreamManager([camera], settings)
    await manager.start()
    try:
        deadline = time.monotonic() + 15
        while manager.stats("tax-1").state is not IngestState.ONLINE:
            assert time.monotonic() < deadline, "the demo camera did not come online"
            await asyncio.sleep(0.05)
        sessions: list[str] = []

        async def offer(sdp: str) -> str:
            session = await manager.whep_offer("tax-1", sdp)
            sessions.append(session.id)
            return session.answer_sdp

        async with WhepClient(decode=False) as viewer:
            await viewer.connect(offer)
            assert await viewer.wait_frames(3, within=10)
            assert manager.viewer_count() == 1
            await seen(manager.trimmer)
            trimmed = asyncio.ensure_future(manager.trimmer.next_trim())
            assert await manager.whep_close(sessions[0])
        trim = await asyncio.wait_for(trimmed, 10)
        assert trim.reason == LAST_VIEWER_LEFT
        assert manager.viewer_count() == 0 and manager.webrtc.busy_count() == 0
    finally:
        await manager.stop()
    assert manager.trimmer.trims == 1  # stopped with the relay: no idle trim came after
