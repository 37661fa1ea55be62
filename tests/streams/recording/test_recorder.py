"""The recorder against a real RTSP camera (GStreamer): H.264 with AAC sound, and H.265, recorded
into short segments that each decode from start to end, join without overlap and follow the
wall clock."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from streams import StreamManager
from streams.recording import RecordingFailed, SegmentInfo
from tests.rtsp_fixtures import RtspServerFactory
from tests.streams.recording.segment_checks import (
    Events,
    check_segment,
    now,
    part_files,
    recording_camera,
)
from tests.streams.test_relay_rtsp import SETTINGS

pytestmark = pytest.mark.rtsp

FRAME = 0.04


def check_joined(segments: list[SegmentInfo]) -> None:
    """Consecutive segments of an uninterrupted recording: no overlap, no hole."""
    for before, after in itertools.pairwise(segments):
        assert abs((after.start - before.end).total_seconds()) <= 0.002, (before, after)


async def record(
    url: str, directory: Path, segments: int, *, audio: bool = False
) -> tuple[list[SegmentInfo], float, float, dict[str, object]]:
    events = Events()
    manager = StreamManager(
        [recording_camera("cam", url, directory, segment_seconds=2.0, audio=audio)], SETTINGS
    )
    manager.add_output_listener(events)
    began = now()
    await manager.start()
    try:
        await events.wait(lambda: len(events.segments()) >= segments, within=8 + 2.5 * segments)
        stats = manager.output_statistics("cam")["main"]["recorder"]
    finally:
        await manager.stop()
    return events.segments(), began, now(), stats


async def test_h264_with_aac_sound_is_recorded_in_segments_that_decode_and_join(
    rtsp_server: RtspServerFactory, tmp_path: Path
) -> None:
    server = rtsp_server({"cam": "400x240@25,400k,gop=25,clock,audio=aac"})
    segments, began, ended, stats = await record(server.url("cam"), tmp_path, 3, audio=True)
    assert len(segments) >= 4  # three while running, the last one closed by stop()
    assert stats["recording"] is True and stats["errors"] == 0 and stats["segments"] == 3
    check_joined(segments)
    for info in segments:
        decoded = check_segment(info)
        assert info.codec.startswith("avc1.") and info.audio == "mp4a.40.2"
        assert decoded.audio_frames > 0 or info.duration < 0.2  # stop() may end one a frame after it began
        assert began - 2.0 < info.start.timestamp() and info.end.timestamp() < ended + 2 * FRAME
        assert info.path.parent.parent == tmp_path and not info.recovered
        if info is not segments[-1]:
            assert 1.9 < info.duration < 2.1 + 1.0  # split at the first keyframe (1 s apart) after 2 s
    # The first picture of the first segment was made at its burnt-in clock and received a
    # little later: the segment's start is the receiving time.
    first = check_segment(segments[0])
    assert first.first_clock_ms is not None
    lag = segments[0].start.timestamp() - first.first_clock_ms / 1000
    assert -0.005 <= lag < FRAME + 0.1, lag
    assert part_files(tmp_path) == []


async def test_h265_is_recorded_as_it_arrives(rtsp_server: RtspServerFactory, tmp_path: Path) -> None:
    server = rtsp_server({"cam": "320x240@25,300k,gop=25,codec=h265"})
    segments, _, _, _ = await record(server.url("cam"), tmp_path, 2)
    assert len(segments) >= 3
    check_joined(segments)
    for info in segments:
        check_segment(info)
        assert info.codec.startswith("hvc1.") and info.audio is None


async def test_a_recorder_whose_instance_lost_the_camera_ends_its_segment_and_writes_no_more(
    rtsp_server: RtspServerFactory, tmp_path: Path
) -> None:
    """In a cluster, ``holds`` turns false when another instance took the camera over: the
    segment ends at once, nothing more is written, and the end of writing is no fault."""
    server = rtsp_server({"cam": "320x240@25,300k,gop=25"})
    events = Events()
    manager = StreamManager(
        [recording_camera("cam", server.url("cam"), tmp_path, segment_seconds=60)], SETTINGS
    )
    manager.add_output_listener(events)
    held = True
    manager.holds = lambda camera_id: held
    await manager.start()
    try:
        await events.wait(lambda: bool(part_files(tmp_path)), within=10)
        await asyncio.sleep(1.5)
        held = False
        lost = now()
        await events.wait(lambda: len(events.segments()) == 1, within=3)
        [info] = events.segments()
        assert info.end.timestamp() < lost + 0.6  # what came after the loss was not written
        await asyncio.sleep(1.5)  # frames keep arriving: none is recorded
        assert part_files(tmp_path) == [] and len(events.segments()) == 1
        stats = manager.output_statistics("cam")["main"]["recorder"]
        assert stats["recording"] is False and stats["errors"] == 0
    finally:
        await manager.stop()
    assert events.of(RecordingFailed) == [] and check_segment(info).frames >= 25
