"""What a benchmark viewer counts: complete access units, losses and the burnt-in clock.

The test RTSP server puts an SEI NAL unit (user_data_unregistered, UUID
``HALLWATCH-CLOCK!``, 8-byte big-endian ``time.time_ns()``) before the first
slice of every access unit. :class:`RtpUnits` completes access units straight
from RTP payloads (single NAL unit, STAP-A, FU-A) on the marker bit, with no
sequence gap, and reads that clock without copying or decoding anything.
:class:`DirectReader` reads the same camera with the project's own RTSP source,
for the reference latency.

Event loop of a viewer process only.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import time
from typing import Any

CLOCK_UUID = b"HALLWATCH-CLOCK!"
_SERIES = 600
"""Access units whose clock each viewer remembers (24 s at 25 fps) for late-join matching."""
_FU_A, _STAP_A, _SEI, _IDR = 28, 24, 6, 5


def read_clock(nal: bytes) -> int | None:
    """The burnt-in send time (ns) from a NAL unit that holds the clock SEI, else None."""
    at = nal.find(CLOCK_UUID)
    if at < 0:
        return None
    out = bytearray()
    zeros = 0
    for b in nal[at + len(CLOCK_UUID) : at + len(CLOCK_UUID) + 12]:
        if zeros >= 2 and b == 3:  # emulation-prevention byte
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
        if len(out) == 8:
            return int.from_bytes(out, "big")
    return None


def _wall_minus_mono_ns() -> int:
    return time.time_ns() - time.monotonic_ns()


class UnitTracker:
    """Access-unit bookkeeping of one receiver, reset by :meth:`take` at each sampling window."""

    def __init__(self) -> None:
        self.frames = 0
        self.incomplete = 0
        self.lost = 0
        self.latencies: list[float] = []
        self.first_unit: float | None = None
        """``time.monotonic()`` of the first complete access unit."""
        self.first_idr: bool | None = None
        self.series: collections.deque[tuple[int, float, float]] = collections.deque(maxlen=_SERIES)
        """(clock ns, latency ms, arrival monotonic) of recent access units."""

    def unit(self, clock_ns: int | None, idr: bool, arrival_mono: float, arrival_wall_ns: int) -> None:
        self.frames += 1
        if self.first_unit is None:
            self.first_unit = arrival_mono
            self.first_idr = idr
        if clock_ns is not None:
            latency = (arrival_wall_ns - clock_ns) / 1e6
            self.latencies.append(latency)
            self.series.append((clock_ns, latency, arrival_mono))

    def take(self) -> dict[str, Any]:
        out = {
            "frames": self.frames,
            "incomplete": self.incomplete,
            "lost": self.lost,
            "latencies": self.latencies,
        }
        self.frames = self.incomplete = self.lost = 0
        self.latencies = []
        return out


class RtpUnits(UnitTracker):
    """Completes H.264 access units from RTP packets (single NAL, STAP-A, FU-A) without copying them."""

    def __init__(self) -> None:
        super().__init__()
        self._ts: int | None = None
        self._ok = False
        self._done = True
        self._clock: int | None = None
        self._idr = False
        self._seq: int | None = None

    def packet(self, seq: int, timestamp: int, marker: bool, payload: bytes) -> None:
        gap = False
        if self._seq is not None:
            missing = (seq - self._seq - 1) & 0xFFFF
            if missing and missing < 0x8000:
                self.lost += missing
                gap = True
            elif missing >= 0x8000:
                return  # late or duplicate
        self._seq = seq
        if timestamp != self._ts:
            if not self._done:
                self.incomplete += 1
            self._ts, self._done, self._clock, self._idr = timestamp, False, None, False
            self._ok = not gap and _starts_unit(payload)
        elif gap:
            self._ok = False
        if payload:
            self._scan(payload)
        if marker and not self._done:
            self._done = True
            if self._ok:
                self.unit(self._clock, self._idr, time.monotonic(), time.time_ns())
            else:
                self.incomplete += 1

    def _scan(self, payload: bytes) -> None:
        kind = payload[0] & 0x1F
        if kind == _FU_A:
            if len(payload) > 1:
                inner = payload[1] & 0x1F
                if inner == _IDR:
                    self._idr = True
                elif inner == _SEI and payload[1] & 0x80 and self._clock is None:
                    self._clock = read_clock(payload)
        elif kind == _STAP_A:
            at = 1
            while at + 2 < len(payload):
                size = int.from_bytes(payload[at : at + 2], "big")
                nal = payload[at + 2 : at + 2 + size]
                if nal:
                    self._nal(nal)
                at += 2 + size
        else:
            self._nal(payload)

    def _nal(self, nal: bytes) -> None:
        kind = nal[0] & 0x1F
        if kind == _IDR:
            self._idr = True
        elif kind == _SEI and self._clock is None:
            self._clock = read_clock(nal)


def _starts_unit(payload: bytes) -> bool:
    if not payload:
        return False
    if payload[0] & 0x1F == _FU_A:
        return len(payload) > 1 and bool(payload[1] & 0x80)
    return True


class DirectReader:
    """The project's RTSP source on the same camera: the latency reference."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.units = UnitTracker()
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="direct-rtsp")

    async def _run(self) -> None:
        from streams.sources.base import SourceOptions
        from streams.sources.rtsp.source import RtspSource

        source = RtspSource(SourceOptions(url=self.url))
        try:
            async for packet in source.packets():
                offset = _wall_minus_mono_ns()
                clock = None
                for nal in _annexb_nals(packet.data):
                    kind = nal[0] & 0x1F if nal else 0
                    if kind == _SEI:
                        clock = read_clock(nal)
                        if clock is not None:
                            break
                    elif 1 <= kind <= 5:
                        break
                self.units.unit(clock, packet.keyframe, packet.received, int(packet.received * 1e9) + offset)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # reported to the parent, which prints it
            self.error = f"{type(err).__name__}: {err}"

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None


def _annexb_nals(data: bytes) -> list[bytes]:
    out: list[bytes] = []
    starts: list[int] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0 and len(starts) < 8:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    for n, start in enumerate(starts):
        end = starts[n + 1] - 3 if n + 1 < len(starts) else min(len(data), start + 64)
        out.append(data[start:end])
    return out


def catch_up(
    late: collections.deque[tuple[int, float, float]],
    early: collections.deque[tuple[int, float, float]],
    tolerance_ms: float,
    hold: int = 25,
) -> float | None:
    """Arrival time of the late viewer's first unit from which ``hold`` units in a row were
    within ``tolerance_ms`` of the early viewer's latency for the same unit."""
    reference = {clock: latency for clock, latency, _ in early}
    run = 0
    start: float | None = None
    for clock, latency, arrived in late:
        ref = reference.get(clock)
        if ref is None:
            continue
        if latency - ref <= tolerance_ms:
            if run == 0:
                start = arrived
            run += 1
            if run >= hold:
                return start
        else:
            run = 0
    return None


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
