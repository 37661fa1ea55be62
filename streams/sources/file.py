"""File sources: a video file's H.264 looped at real-time pace, never re-encoded.

``file:///abs/path/video.mp4`` or ``file:relative/path.mp4`` (relative to the working
directory). PyAV demuxes the file and the ``h264_mp4toannexb`` bitstream filter turns
its access units into Annex-B with SPS/PPS before every keyframe. A file up to
``memory_limit`` bytes (64 MiB by default) is read once and replayed from memory;
a larger one is re-read on every pass, a bounded batch of access units at a time.
The file's own timestamps set the pace; each pass continues the timestamps of the
one before, so the stream looks like one endless camera.

Threads: opening and reading run in worker threads (``asyncio.to_thread``), one call
at a time per source; pacing and yielding run on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import av
from av.bitstream import BitStreamFilterContext

from streams.codecs.h264 import ParameterSets, join_nals, split_nals
from streams.errors import SourceError, SourceProtocolError, SourceUnreachable, UnsupportedCodec
from streams.packets import CLOCK_RATE, AudioInfo, MediaPacket
from streams.sources._pacing import Pacer
from streams.sources.base import Source, SourceOptions

log = logging.getLogger(__name__)

DEFAULT_MEMORY_LIMIT = 64 * 1024 * 1024
_BATCH = 64
"""Access units read per worker-thread call when streaming a large file."""


def path_from_url(url: str) -> Path:
    """The local path of a ``file:`` URL; ``ValueError`` if it names a remote host."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "file":
        raise ValueError(f"not a file URL: {url!r}")
    if parts.netloc not in ("", "localhost"):
        raise ValueError(
            f"file URL {url!r} names host {parts.netloc!r}: use file:///absolute/path or file:relative/path"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"file URL {url!r} takes no query or fragment")
    if not parts.path:
        raise ValueError(f"file URL {url!r} has no path")
    return Path(unquote(parts.path))


@dataclass(frozen=True, slots=True)
class _Unit:
    """One access unit (or, ``audio``, one AAC frame) with timestamps in 90 kHz ticks from
    the start of the file's video."""

    data: bytes
    keyframe: bool
    pts: int
    dts: int
    audio: bool = False


class _Reader:
    """Demuxes one pass over the file (blocking: worker threads only).

    With ``audio``, the file's AAC track (if it has one: :attr:`audio_info`) is read
    too, its frames interleaved with the video as the file stores them, from the first
    keyframe on, on the video's timeline.

    ``close`` waits for a ``read`` still running in another thread (its caller may
    have been cancelled while the thread carried on), so the container is never
    closed under a reader.
    """

    def __init__(self, path: Path, timeout: float, *, audio: bool = False) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._closed = False
        self.end = 0
        """End of the last unit read (its dts plus its duration), in ticks."""
        try:
            self._container: Any = av.open(str(path), timeout=timeout)
        except FileNotFoundError as err:
            raise SourceUnreachable(f"video file {path} does not exist") from err
        except (av.FFmpegError, OSError) as err:
            raise SourceError(f"cannot open video file {path}: {err}") from err
        try:
            if not self._container.streams.video:
                raise SourceProtocolError(f"video file {path} has no video stream")
            self._stream = stream = self._container.streams.video[0]
            codec = stream.codec_context.name
            if codec != "h264":
                raise UnsupportedCodec(f"video file {path} is {codec}; only H.264 can be relayed")
            self._filter = BitStreamFilterContext("h264_mp4toannexb", stream)
            self._sets = _parameter_sets(stream.codec_context.extradata)
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            self._interval = max(1, round(CLOCK_RATE / rate))
            self._time_base: Fraction = stream.time_base or Fraction(1, CLOCK_RATE)
            track: tuple[Any, AudioInfo | None] = _aac_track(self._container) if audio else (None, None)
            self._audio, self.audio_info = track
            self._packets = self._container.demux(stream, *([self._audio] if self._audio else []))
        except BaseException:
            self._container.close()
            raise
        self._base: int | None = None
        self._last_dts = -1
        self._started = False
        self._warned_reorder = False

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._container.close()

    def read(self, limit: int) -> list[_Unit]:
        """Up to ``limit`` access units; an empty list at the end of the file."""
        with self._lock:
            if self._closed:
                return []
            return self._read(limit)

    def _read(self, limit: int) -> list[_Unit]:
        units: list[_Unit] = []
        try:
            for packet in self._packets:
                if packet.size == 0:
                    continue
                if packet.stream is self._audio:
                    if self._started and packet.pts is not None:
                        units.append(self._audio_unit(packet))
                    continue
                for filtered in self._filter.filter(packet):
                    unit = self._unit(filtered)
                    if unit is not None:
                        units.append(unit)
                if len(units) >= limit:
                    break
        except av.FFmpegError as err:
            raise SourceError(f"cannot read video file {self.path}: {err}") from err
        return units

    def _unit(self, packet: av.Packet[Any]) -> _Unit | None:
        nals, keyframe = self._sets.complete(list(split_nals(bytes(packet))))
        if not self._started:
            if not keyframe:
                return None  # a decoder cannot start before the first keyframe
            self._started = True
        raw_dts = packet.dts if packet.dts is not None else packet.pts
        if self._base is None:
            self._base = raw_dts if raw_dts is not None else 0
        dts = self._ticks(raw_dts) if raw_dts is not None else self._last_dts + self._interval
        if dts <= self._last_dts:
            dts = self._last_dts + self._interval  # broken or missing timestamps: assume the frame rate
        pts = self._ticks(packet.pts) if packet.pts is not None else dts
        if pts != dts and not self._warned_reorder:
            self._warned_reorder = True
            log.info("video file %s reorders frames (B-frames): MSE plays it, WebRTC cannot", self.path)
        duration = self._ticks(packet.duration, relative=False) if packet.duration else self._interval
        self._last_dts = dts
        self.end = max(self.end, dts + max(1, duration))
        return _Unit(data=join_nals(nals), keyframe=keyframe, pts=max(pts, dts), dts=dts)

    def _audio_unit(self, packet: av.Packet[Any]) -> _Unit:
        assert self._audio is not None and packet.pts is not None
        seconds = packet.pts * self._audio.time_base - (self._base or 0) * self._time_base
        ticks = int(seconds * CLOCK_RATE)
        return _Unit(data=bytes(packet), keyframe=True, pts=ticks, dts=ticks, audio=True)

    def _ticks(self, value: int, *, relative: bool = True) -> int:
        if relative:
            value -= self._base or 0
        return int(value * self._time_base * CLOCK_RATE)


def _aac_track(container: Any) -> tuple[Any, AudioInfo | None]:
    """The container's first audio stream and its description, if it is AAC."""
    for stream in container.streams.audio:
        context = stream.codec_context
        if context.name == "aac" and context.extradata:
            info = AudioInfo("aac", context.sample_rate, context.channels, bytes(context.extradata))
            return stream, info
    return None, None


def _parameter_sets(extradata: bytes | None) -> ParameterSets:
    """SPS/PPS from the stream's extradata (avcC or Annex-B), to seed in-band insertion."""
    sets = ParameterSets()
    if not extradata:
        return sets
    if extradata[0] == 1 and len(extradata) > 6:  # avcC
        nals: list[bytes] = []
        pos, count = 6, extradata[5] & 0x1F
        for table in range(2):
            for _ in range(count):
                size = int.from_bytes(extradata[pos : pos + 2], "big")
                nals.append(extradata[pos + 2 : pos + 2 + size])
                pos += 2 + size
            if table == 0 and pos < len(extradata):
                count, pos = extradata[pos], pos + 1
    else:
        nals = list(split_nals(extradata))
    sets.complete([n for n in nals if n])
    return sets


def _load(path: Path, timeout: float) -> tuple[list[_Unit], int]:
    """Every access unit of the file and the pass length in ticks (worker thread)."""
    reader = _Reader(path, timeout)
    with contextlib.closing(reader):
        units: list[_Unit] = []
        while batch := reader.read(_BATCH):
            units.extend(batch)
    return units, reader.end


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError as err:
        raise SourceUnreachable(f"video file {path} does not exist") from err
    except OSError as err:
        raise SourceError(f"cannot open video file {path}: {err}") from err


class FileSource(Source):
    """Loops a video file's H.264 at real-time pace. See the module docstring."""

    def __init__(
        self,
        options: SourceOptions,
        *,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        max_lag: float = 1.0,
    ) -> None:
        super().__init__(options)
        self.path = path_from_url(options.url)
        self.memory_limit = memory_limit
        self._max_lag = max_lag

    async def packets(self) -> AsyncGenerator[MediaPacket, None]:
        pacer = Pacer(max_lag=self._max_lag)
        async with contextlib.aclosing(self._passes()) as passes:
            async for unit, offset in passes:
                shift = await pacer.wait(offset + unit.dts)
                yield MediaPacket(
                    data=unit.data,
                    pts=offset + unit.pts + shift,
                    keyframe=unit.keyframe,
                    received=time.monotonic(),
                    dts=offset + unit.dts + shift if unit.dts != unit.pts else None,
                )

    async def _passes(self) -> AsyncGenerator[tuple[_Unit, int], None]:
        """Every unit of every pass, with the offset (ticks) of the pass it belongs to."""
        timeout = self.options.connect_timeout
        size = await asyncio.to_thread(_size, self.path)
        offset = 0
        if size <= self.memory_limit:
            units, length = await asyncio.to_thread(_load, self.path, timeout)
            if not units:
                raise SourceError(f"video file {self.path} holds no H.264 keyframe")
            log.info(
                "video file %s: %d access units, %.1f s, looped from memory",
                self.path,
                len(units),
                length / CLOCK_RATE,
            )
            while True:
                for unit in units:
                    yield unit, offset
                offset += length
        while True:
            reader = await asyncio.to_thread(_Reader, self.path, timeout)
            try:
                count = 0
                while batch := await asyncio.to_thread(reader.read, _BATCH):
                    count += len(batch)
                    for unit in batch:
                        yield unit, offset
            finally:
                await asyncio.to_thread(reader.close)
            if count == 0:
                raise SourceError(f"video file {self.path} holds no H.264 keyframe")
            offset += reader.end
