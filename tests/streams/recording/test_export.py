"""Exports cut from a real recording (a GStreamer RTSP camera with a burnt-in clock and AAC
sound, 2-second segments): one fast-start MP4 that ffprobe accepts, that decodes from its
first frame to its last, that starts at the keyframe at or before the requested start and
covers the range, with sound; a codec change ends it early, and nothing recorded is an error."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import pytest

from streams import StreamManager
from streams.recording import SegmentInfo
from streams.recording.export import ExportError, export_range
from tests.clock_barcode import read_clock
from tests.rtsp_fixtures import RtspTestServer
from tests.streams.recording.export_checks import assert_fast_start, probe
from tests.streams.recording.segment_checks import Events, recording_camera
from tests.streams.test_relay_rtsp import SETTINGS

pytestmark = pytest.mark.rtsp

GOP = 1.0
"""Seconds between the test camera's keyframes (gop=25 at 25 fps)."""
FRAME = 0.04
LAG = 0.25
"""A frame's arrival (the recorded wall clock) after its burnt-in capture time, at most."""


def _record(server: RtspTestServer, directory: Path) -> dict[str, list[SegmentInfo]]:
    cameras = {"clock": server.url("clock"), "plain": server.url("plain")}
    specs = [
        recording_camera(name, url, directory, segment_seconds=2.0, audio=name == "clock")
        for name, url in cameras.items()
    ]

    async def run() -> dict[str, list[SegmentInfo]]:
        events = Events()
        manager = StreamManager(specs, SETTINGS)
        manager.add_output_listener(events)
        await manager.start()
        try:
            await events.wait(
                lambda: sum(info.camera_id == "clock" for info in events.segments()) >= 5, within=30
            )
        finally:
            await manager.stop()
        found: dict[str, list[SegmentInfo]] = {name: [] for name in cameras}
        for info in events.segments():
            found[info.camera_id].append(info)
        return found

    return asyncio.run(run())


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[SegmentInfo]]]:
    """Two cameras recorded at once: ``clock`` (400x240, clock, AAC) and ``plain`` (320x240)."""
    directory = tmp_path_factory.mktemp("recordings")
    streams = {"clock": "400x240@25,400k,gop=25,clock,audio=aac", "plain": "320x240@25,300k,gop=25"}
    with RtspTestServer(streams) as server:
        yield _record(server, directory)


def first_clock_and_frames(path: Path) -> tuple[int | None, int, int]:
    """The clock burnt into the first picture, and the video frames and audio frames decoded."""
    clock, frames, sounds = None, 0, 0
    with av.open(str(path)) as container:
        for packet in container.demux():
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    if frames == 0:
                        plane = frame.to_ndarray(format="gray")
                        clock = read_clock(plane.tobytes(), plane.shape[1])
                    frames += 1
                else:
                    sounds += 1
    return clock, frames, sounds


def test_a_range_over_three_segments_becomes_one_fast_start_mp4(
    recorded: dict[str, list[SegmentInfo]], tmp_path: Path
) -> None:
    segments = recorded["clock"][:4]
    start = segments[0].start + timedelta(seconds=1.3)
    end = segments[2].start + timedelta(seconds=0.7)
    result = export_range([s.path for s in segments], start, end, tmp_path / "out.mp4")

    assert result.path.is_file() and not (tmp_path / "out.mp4.part").exists()
    assert result.bytes == result.path.stat().st_size
    assert_fast_start(result.path)
    info = probe(result.path)
    fmt = info["format"]
    codecs = sorted(s["codec_name"] for s in info["streams"])
    assert codecs == ["aac", "h264"]
    assert abs(float(fmt["duration"]) - (end - start).total_seconds()) < GOP + 2 * FRAME, fmt
    assert abs(result.duration - (result.end - result.start).total_seconds()) < 0.01
    assert start - timedelta(seconds=GOP + FRAME) <= result.start <= start
    assert end - timedelta(seconds=FRAME) <= result.end <= end + timedelta(seconds=FRAME)
    assert [p.name for p in result.segments] == [s.path.name for s in segments[:3]]
    assert result.audio and result.stopped is None

    clock, frames, sounds = first_clock_and_frames(result.path)
    assert frames == result.frames and sounds > 0
    assert clock is not None
    shown = datetime.fromtimestamp(clock / 1000, UTC)
    assert start - timedelta(seconds=GOP + LAG) <= shown <= start, (shown, start)
    assert result.start - timedelta(seconds=LAG) <= shown <= result.start


def test_a_start_before_the_recording_begins_at_its_first_keyframe(
    recorded: dict[str, list[SegmentInfo]], tmp_path: Path
) -> None:
    first = recorded["clock"][0]
    start = first.start - timedelta(seconds=30)
    result = export_range([first.path], start, first.start + timedelta(seconds=1), tmp_path / "a.mp4")
    assert result.start == first.start
    assert 0.9 < result.duration < 1.0 + FRAME


def test_a_codec_change_ends_the_file_at_the_last_segment_before_it(
    recorded: dict[str, list[SegmentInfo]], tmp_path: Path
) -> None:
    clock, plain = recorded["clock"], recorded["plain"]
    later = next(s for s in plain if s.start >= clock[1].end - timedelta(seconds=0.5))
    paths = [clock[0].path, clock[1].path, later.path]
    result = export_range(paths, clock[0].start, later.end, tmp_path / "b.mp4")
    assert result.stopped is not None and "video parameters change" in result.stopped
    assert result.segments == paths[:2]
    assert abs((result.end - clock[1].end).total_seconds()) < FRAME


def test_nothing_in_the_range_is_an_error_and_leaves_no_file(
    recorded: dict[str, list[SegmentInfo]], tmp_path: Path
) -> None:
    last = recorded["clock"][-1]
    start = last.end + timedelta(hours=1)
    with pytest.raises(ExportError, match="nothing is recorded"):
        export_range([last.path], start, start + timedelta(seconds=5), tmp_path / "c.mp4")
    assert list(tmp_path.iterdir()) == []


def test_a_cancelled_export_stops_and_leaves_no_file(
    recorded: dict[str, list[SegmentInfo]], tmp_path: Path
) -> None:
    cancel = threading.Event()
    cancel.set()
    segments = recorded["clock"]
    with pytest.raises(ExportError, match="cancelled"):
        export_range(
            [s.path for s in segments], segments[0].start, segments[-1].end, tmp_path / "d.mp4", cancel=cancel
        )
    assert list(tmp_path.iterdir()) == []


async def test_an_export_in_a_worker_thread_leaves_the_event_loop_responsive(
    recorded: dict[str, list[SegmentInfo]], tmp_path: Path
) -> None:
    """The export holds the GIL between FFmpeg calls; the loop must still run every few ms."""
    segments = recorded["clock"]
    paths = [s.path for s in segments]
    lags: list[float] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - before - 0.005)

    async def exports() -> float:
        began = time.perf_counter()
        for n in range(10):
            await asyncio.to_thread(
                export_range, paths, segments[0].start, segments[-1].end, tmp_path / f"{n}.mp4"
            )
        done.set()
        return time.perf_counter() - began

    _, took = await asyncio.gather(watch(), exports())
    lags.sort()
    p50, worst = lags[len(lags) // 2] * 1000, lags[-1] * 1000
    print(f"10 exports of {len(paths)} segments: {took:.2f} s; loop lag p50 {p50:.1f} ms, max {worst:.1f} ms")
    assert lags[-1] < 0.1
