"""What every recorded segment must satisfy, checked on the file itself: it decodes with PyAV
from start to end, FFmpeg's ffprobe finds nothing wrong, it starts on a keyframe, its SHA-256
is the one reported; and a recording camera for tests."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from streams import CameraSpec, RecordingSpec, SourceOptions
from streams.recording import SegmentClosed, SegmentInfo
from tests.clock_barcode import read_clock
from tests.streams.test_relay_rtsp import POLICY


def recording_camera(
    camera_id: str, url: str, directory: Path, *, segment_seconds: float = 2.0, audio: bool = False
) -> CameraSpec:
    return CameraSpec(
        id=camera_id,
        source=SourceOptions(url=url, connect_timeout=1.0, read_timeout=3.0, audio=audio),
        policy=POLICY,
        recording=RecordingSpec(directory=directory, segment_seconds=segment_seconds),
    )


class Events:
    """The events a manager's outputs report, with a way to wait for one."""

    def __init__(self) -> None:
        self.seen: list[object] = []
        self._changed = asyncio.Event()

    def __call__(self, camera_id: str, event: object) -> None:
        self.seen.append(event)
        self._changed.set()

    def of(self, kind: type[object]) -> list[object]:
        return [e for e in self.seen if isinstance(e, kind)]

    def segments(self) -> list[SegmentInfo]:
        return [e.info for e in self.seen if isinstance(e, SegmentClosed)]

    async def wait(self, done: Callable[[], bool], within: float) -> None:
        async with asyncio.timeout(within):
            while not done():
                self._changed.clear()
                await self._changed.wait()


@dataclass(frozen=True)
class Decoded:
    frames: int
    audio_frames: int
    first_keyframe: bool
    first_clock_ms: int | None
    """The wall clock burnt into the first picture by a ``clock`` test camera, if any."""
    duration: float
    """From the first video sample's decode time to the end of the last (seconds)."""


def ffprobe_errors(path: Path) -> str:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.stderr.strip() if result.returncode == 0 else f"exit {result.returncode}: {result.stderr}"


def decode(path: Path) -> Decoded:
    """Decode every packet of the file (PyAV raises on a broken one)."""
    frames = audio_frames = 0
    first_keyframe = False
    first_clock: int | None = None
    start: int | None = None
    end = 0
    time_base = Fraction(1, 90_000)
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        time_base = video.time_base or time_base
        for packet in container.demux():
            if packet.stream.type == "video":
                if packet.dts is not None:
                    if start is None:
                        start, first_keyframe = packet.dts, packet.is_keyframe
                    end = max(end, packet.dts + (packet.duration or 0))
                for frame in packet.decode():
                    if frames == 0:
                        plane = frame.to_ndarray(format="gray")
                        first_clock = read_clock(plane.tobytes(), plane.shape[1])
                    frames += 1
            elif packet.stream.type == "audio":
                audio_frames += len(packet.decode())
    duration = float((end - (start or 0)) * time_base)
    return Decoded(frames, audio_frames, first_keyframe, first_clock, duration)


def check_segment(info: SegmentInfo) -> Decoded:
    """Assert what every segment file must satisfy; what it decoded to."""
    assert info.path.suffix == ".mp4" and info.path.is_file()
    data = info.path.read_bytes()
    assert len(data) == info.bytes
    assert hashlib.sha256(data).hexdigest() == info.sha256
    assert ffprobe_errors(info.path) == ""
    decoded = decode(info.path)
    assert decoded.first_keyframe, f"{info.path.name} does not start on a keyframe"
    assert decoded.frames > 0
    assert abs(decoded.duration - info.duration) < 0.002, (decoded.duration, info)
    name = f"{info.start:%Y-%m-%d}/{info.start:%H-%M-%S}-{info.start.microsecond // 1000:03d}.mp4"
    assert info.path.as_posix().endswith(name)
    return decoded


def now() -> float:
    return time.time()


def part_files(directory: Path) -> list[Path]:
    """Segments still open (or left open by a crash)."""
    return sorted(directory.rglob("*.part"))
