"""Playback of real recorded segments (a GStreamer RTSP clock camera with AAC sound, cut into
2-second segments): one continuous fragmented MP4 from a keyframe, across segments, through
gaps, up to a change of parameters and into the segment still being written."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import pytest

from streams import StreamManager
from streams.recording import SegmentInfo, segment_file
from streams.recording.layout import PART_SUFFIX
from streams.recording.playback import (
    PlaybackInit,
    PlaybackItem,
    PlaybackJump,
    PlaybackMedia,
    PlaybackStop,
    SourceSegment,
    play,
)
from streams.recording.segment_file import SegmentFile, recorded_end
from tests.clock_barcode import read_clock
from tests.rtsp_fixtures import RtspTestServer, check_gstreamer
from tests.streams.recording.segment_checks import Events, ffprobe_errors, recording_camera
from tests.streams.test_relay_rtsp import SETTINGS

pytestmark = pytest.mark.rtsp

GOP_MS = 1000
FRAME = 0.04


@dataclass(frozen=True)
class Recorded:
    main: list[SegmentInfo]
    """Consecutive segments of the clock camera, with sound."""
    other: list[SegmentInfo]
    """Segments of a camera with another picture size."""


async def _record(directory: Path) -> Recorded:
    with RtspTestServer(
        {"cam": "400x240@25,400k,gop=25,clock,audio=aac", "other": "160x120@25,200k,gop=25"}
    ) as server:
        events = Events()
        manager = StreamManager(
            [
                recording_camera("cam", server.url("cam"), directory / "cam", audio=True),
                recording_camera("other", server.url("other"), directory / "other"),
            ],
            SETTINGS,
        )
        manager.add_output_listener(events)
        await manager.start()
        try:
            await events.wait(
                lambda: sum(1 for s in events.segments() if s.camera_id == "cam") >= 5, within=30
            )
        finally:
            await manager.stop()
    closed = events.segments()
    return Recorded(
        [s for s in closed if s.camera_id == "cam"][:5], [s for s in closed if s.camera_id == "other"]
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    check_gstreamer()
    directory = tmp_path_factory.mktemp("recorded")
    yield asyncio.run(_record(directory))
    shutil.rmtree(directory, ignore_errors=True)


def ms(info: SegmentInfo, attr: str = "start") -> int:
    return round(getattr(info, attr).timestamp() * 1000)


async def sources(segments: Sequence[SegmentInfo | SourceSegment]) -> AsyncIterator[SourceSegment]:
    for segment in segments:
        yield segment if isinstance(segment, SourceSegment) else SourceSegment(segment.path, ms(segment))


async def collect(
    segments: Sequence[SegmentInfo | SourceSegment], start_ms: int, end_ms: int | None = None
) -> list[PlaybackItem]:
    return [item async for item in play(sources(segments), start_ms, end_ms)]


@dataclass
class Decoded:
    times: list[float]
    """Presentation times of the video frames, in seconds."""
    first_clock_ms: int | None
    audio_frames: int


def decode(items: list[PlaybackItem], path: Path) -> Decoded:
    init = items[0]
    assert isinstance(init, PlaybackInit)
    path.write_bytes(init.data + b"".join(i.data for i in items if isinstance(i, PlaybackMedia)))
    assert ffprobe_errors(path) == ""
    times: list[float] = []
    clock = None
    audio = 0
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.stream.type == "audio":
                audio += len(packet.decode())
                continue
            for frame in packet.decode():
                if not times:
                    assert frame.key_frame
                    plane = frame.to_ndarray(format="gray")
                    clock = read_clock(plane.tobytes(), plane.shape[1])
                times.append(float((frame.pts or 0) * (frame.time_base or Fraction(1, 90_000))))
    return Decoded(times, clock, audio)


def assert_continuous(times: list[float]) -> None:
    assert times[0] == pytest.approx(0, abs=0.001)
    steps = [b - a for a, b in itertools.pairwise(times)]
    assert min(steps) > 0, "timestamps must increase"
    assert max(steps) < 2.5 * FRAME, f"a jump of {max(steps):.3f} s in the media timeline"


async def test_playback_from_mid_segment_starts_at_a_keyframe_and_runs_across_segments(
    recorded: Recorded, tmp_path: Path
) -> None:
    segments = recorded.main
    asked = ms(segments[0]) + 1500  # mid-segment, half a second after a keyframe
    items = await collect(segments, asked)
    init = items[0]
    assert isinstance(init, PlaybackInit)
    assert asked - GOP_MS - 50 <= init.wall_ms <= asked
    assert (
        init.codec.startswith("avc1.")
        and init.audio == "mp4a.40.2"
        and (init.width, init.height) == (400, 240)
    )
    stop = items[-1]
    assert isinstance(stop, PlaybackStop) and stop.reason == "recorded"
    assert abs(stop.wall_ms - ms(segments[-1], "end")) <= 2
    assert not [i for i in items if isinstance(i, PlaybackJump)], "consecutive segments leave no gap"
    decoded = decode(items, tmp_path / "played.mp4")
    assert_continuous(decoded.times)
    expected = (ms(segments[-1], "end") - init.wall_ms) / 1000
    assert decoded.times[-1] == pytest.approx(expected - FRAME, abs=0.05)  # spans all five segments
    assert decoded.audio_frames > 0
    assert decoded.first_clock_ms is not None
    assert asked - GOP_MS - 150 <= decoded.first_clock_ms <= asked


async def test_playback_stops_at_the_asked_end(recorded: Recorded, tmp_path: Path) -> None:
    segments = recorded.main
    start = ms(segments[1]) + 200
    items = await collect(segments, start, start + 2500)
    stop = items[-1]
    assert isinstance(stop, PlaybackStop) and stop.reason == "range"
    init = items[0]
    assert isinstance(init, PlaybackInit)
    assert start + 2500 <= stop.wall_ms <= start + 2500 + 2 * FRAME * 1000
    times = decode(items, tmp_path / "cut.mp4").times
    assert_continuous(times)
    assert times[-1] == pytest.approx((stop.wall_ms - init.wall_ms) / 1000 - FRAME, abs=0.01)


async def test_a_gap_between_segments_is_squeezed_and_reported(recorded: Recorded, tmp_path: Path) -> None:
    first, _, third = recorded.main[:3]
    items = await collect([first, third], ms(first))
    jumps = [i for i in items if isinstance(i, PlaybackJump)]
    assert len(jumps) == 1
    assert jumps[0].wall_ms == ms(third)
    assert jumps[0].media == pytest.approx(first.duration, abs=0.002)
    decoded = decode(items, tmp_path / "gap.mp4")
    assert_continuous(decoded.times)  # the two seconds missing are not in the media timeline
    assert decoded.times[-1] == pytest.approx(first.duration + third.duration - FRAME, abs=0.01)


async def test_a_segment_with_other_parameters_ends_the_stream(recorded: Recorded, tmp_path: Path) -> None:
    first = recorded.main[0]
    other = recorded.other[0]
    items = await collect([first, other], ms(first))
    stop = items[-1]
    assert isinstance(stop, PlaybackStop) and stop.reason == "changed" and stop.wall_ms == ms(other)
    times = decode(items, tmp_path / "changed.mp4").times
    assert times[-1] == pytest.approx(first.duration - FRAME, abs=0.01)


async def test_nothing_to_play_yields_only_the_stop(recorded: Recorded, tmp_path: Path) -> None:
    gone = SourceSegment(tmp_path / "2026-01-01" / "00-00-00-000.mp4", 0)
    assert await collect([gone], 0) == [PlaybackStop("recorded", 0)]


async def test_the_open_segment_plays_up_to_its_last_complete_fragment(
    recorded: Recorded, tmp_path: Path
) -> None:
    info = recorded.main[1]
    data = info.path.read_bytes()
    part = tmp_path / (info.path.name + PART_SUFFIX)
    cut = len(data) * 2 // 3
    part.write_bytes(data[:cut])  # as a writer leaves it mid-fragment
    open_segment = SourceSegment(part, ms(info))
    items = await collect([recorded.main[0], open_segment], ms(recorded.main[0]))
    stop = items[-1]
    assert isinstance(stop, PlaybackStop) and stop.reason == "recorded"
    assert ms(info) < stop.wall_ms < ms(info, "end")
    times = decode(items, tmp_path / "open.mp4").times
    assert_continuous(times)
    end = recorded_end(part)
    assert end is not None and end[0] == stop.wall_ms
    # The writer adds the rest and renames the file: reading resumes where it stopped.
    part.write_bytes(data)
    grown = recorded_end(part, end)
    assert grown is not None and abs(grown[0] - ms(info, "end")) <= 2
    part.rename(tmp_path / info.path.name)
    items = await collect([open_segment], ms(info))
    last = items[-1]
    assert isinstance(last, PlaybackStop) and abs(last.wall_ms - ms(info, "end")) <= 2


@pytest.mark.parametrize("search_back", [0.3, 1.5])
def test_bisecting_a_segment_finds_the_keyframe_reading_from_the_start_finds(
    recorded: Recorded, monkeypatch: pytest.MonkeyPatch, search_back: float
) -> None:
    # Real segments are small here (100 kB): bisect them all, in small probes. Looking back
    # less than the keyframe interval (1 s) makes some moments fall back to reading from the
    # start; longer, none do.
    monkeypatch.setattr(segment_file, "_BISECT_ABOVE", 0)
    monkeypatch.setattr(segment_file, "_PROBE", 2048)
    monkeypatch.setattr(segment_file, "SEARCH_BACK", search_back)
    bisected = 0
    for info in recorded.main:
        start_ms = round(info.start.timestamp() * 1000)
        end_ms = round(info.end.timestamp() * 1000)
        for moment in range(start_ms - 200, end_ms + 200, 90):
            with (
                contextlib.closing(SegmentFile(info.path)) as fast,
                contextlib.closing(SegmentFile(info.path)) as slow,
            ):
                bisected += fast._bisect(moment - round(search_back * 1000)) is not None
                fast.position = slow.position
                assert fast.seek_keyframe(moment) == slow._scan_keyframe(moment), moment
                assert fast.position == slow.position, moment
    assert bisected > 20
