"""Synthetic cameras: a test card drawn with OpenCV, encoded once, replayed in real time.

``demo://<name>?size=640x360&fps=25&gop=50&loop_seconds=10`` (every parameter is
optional; ``gop`` counts frames and defaults to two seconds' worth). The card shows
colour bars over a grey ramp, the source's label and name, a ball moving along a
closed path, and a *loop clock*: the time elapsed within the loop (``mm:ss.ff`` of the
loop length) with a hand that sweeps once per loop. A replayed loop cannot show the
time of day, so the card says plainly that it is a loop.

Encoding live would cost every demo camera a share of a core, so each distinct card
(name, label, size, rate, GOP, loop length) is encoded once per process with libx264
(Constrained Baseline, ``tune=zerolatency``, no B-frames) into a loop of whole GOPs,
and replayed at real-time pace with timestamps that keep increasing across loops.

Threads: encodes run in a small pool of their own (two worker threads), so a burst
of demo cameras at startup never fills the default executor that every other
blocking call shares; the loop cache is guarded by a lock and shared by every thread
and event loop of the process; the replay runs on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fractions
import logging
import math
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import av
import cv2
import numpy as np
import numpy.typing as npt

from streams.codecs.h264 import ParameterSets, join_nals, split_nals
from streams.errors import SourceError
from streams.packets import CLOCK_RATE, MediaPacket
from streams.sources._pacing import Pacer
from streams.sources.base import Source, SourceOptions

log = logging.getLogger(__name__)

_PARAMETERS = ("size", "fps", "gop", "loop_seconds")
_MAX_CACHED_LOOPS = 64
_ENCODE_WORKERS = 2
Image = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class DemoParams:
    """Everything that shapes a demo camera's pictures: the key of the loop cache."""

    name: str
    label: str
    width: int = 640
    height: int = 360
    fps: int = 25
    gop: int = 50
    loop_frames: int = 250

    @property
    def loop_seconds(self) -> float:
        return self.loop_frames / self.fps


def parse_demo_url(url: str, label: str = "") -> DemoParams:
    """Parameters of a ``demo://`` URL; ``ValueError`` names what is wrong."""
    parts = urlsplit(url)
    name = parts.netloc or parts.path.strip("/")
    if parts.scheme.lower() != "demo" or not name:
        raise ValueError(f"not a demo source URL (expected demo://<name>?...): {url!r}")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as err:
        raise ValueError(f"demo source {name}: malformed query {parts.query!r}") from err
    unknown = sorted(set(query) - set(_PARAMETERS))
    if unknown:
        raise ValueError(
            f"demo source {name}: unknown parameter(s) {', '.join(unknown)}; known: {_PARAMETERS}"
        )
    values = {key: vals[-1] for key, vals in query.items()}
    try:
        width, height = (int(v) for v in values.get("size", "640x360").lower().split("x"))
        fps = int(values.get("fps", "25"))
        gop = int(values.get("gop", str(2 * fps)))
        loop_seconds = float(values.get("loop_seconds", "10"))
    except ValueError as err:
        raise ValueError(f"demo source {name}: bad parameter value in {parts.query!r}") from err
    if not (32 <= width <= 3840 and 32 <= height <= 2160 and width % 2 == 0 and height % 2 == 0):
        raise ValueError(
            f"demo source {name}: size must be even, from 32x32 to 3840x2160, not {width}x{height}"
        )
    if not 1 <= fps <= 60:
        raise ValueError(f"demo source {name}: fps must be 1..60, not {fps}")
    if not 1 <= gop <= 10 * fps:
        raise ValueError(f"demo source {name}: gop must be 1..{10 * fps} frames, not {gop}")
    if not 0 < loop_seconds <= 120:
        raise ValueError(f"demo source {name}: loop_seconds must be in (0, 120], not {loop_seconds}")
    gops = max(1, round(loop_seconds * fps / gop))
    return DemoParams(
        name=_ascii(name),
        label=_ascii(label),
        width=width,
        height=height,
        fps=fps,
        gop=gop,
        loop_frames=gops * gop,
    )


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only: anything else becomes ``?``."""
    return text.encode("ascii", "replace").decode("ascii")


@dataclass(frozen=True, slots=True)
class EncodedLoop:
    """One encoded loop: ``loop_frames`` access units, a keyframe every ``gop``."""

    params: DemoParams
    units: tuple[tuple[bytes, bool], ...]
    """(Annex-B access unit, keyframe) in decode order, which is display order."""
    encode_seconds: float
    """Wall time the encode took in its worker thread."""

    @property
    def nbytes(self) -> int:
        return sum(len(data) for data, _ in self.units)


@dataclass(frozen=True, slots=True)
class DemoCacheStats:
    entries: int
    encodes: int
    """Encodes started since the process began (a cache hit starts none)."""


class _LoopCache:
    """Process-wide LRU of encoded loops; concurrent opens of one card share one encode.

    Entries are ``concurrent.futures.Future`` objects, not asyncio ones, so sources on
    different event loops (each test has its own) can share them. A future is marked
    running at once so that a waiter being cancelled cannot cancel it for the others;
    the worker thread always completes it, even if the source that started it is gone.
    """

    def __init__(self, max_entries: int, workers: int) -> None:
        self._max_entries = max_entries
        self._workers = workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._entries: OrderedDict[DemoParams, concurrent.futures.Future[EncodedLoop]] = OrderedDict()
        self._encodes = 0

    def stats(self) -> DemoCacheStats:
        with self._lock:
            return DemoCacheStats(entries=len(self._entries), encodes=self._encodes)

    async def get(self, params: DemoParams) -> EncodedLoop:
        """The encoded loop for ``params``, encoding it first if no one has."""
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self._workers, thread_name_prefix="demo-encode"
                )
            pool = self._pool
            future = self._entries.get(params)
            owner = future is None
            if future is None:
                future = concurrent.futures.Future()
                future.set_running_or_notify_cancel()
                self._entries[params] = future
                self._encodes += 1
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(params)
        if owner:
            try:
                pool.submit(self._fill, params, future)  # the cache entry owns the job's outcome
            except RuntimeError as err:  # the interpreter is shutting down
                self._fail(params, future, err)
        return await asyncio.wrap_future(future)

    def _fill(self, params: DemoParams, future: concurrent.futures.Future[EncodedLoop]) -> None:
        try:
            future.set_result(encode_loop(params))
        except BaseException as err:
            self._fail(params, future, err)
            if not isinstance(err, Exception):
                raise

    def _fail(
        self, params: DemoParams, future: concurrent.futures.Future[EncodedLoop], err: BaseException
    ) -> None:
        """Complete ``future`` with a SourceError and forget it, so the next open retries."""
        error = SourceError(f"demo camera {params.name}: could not encode the test card: {err}")
        error.__cause__ = err
        with self._lock:
            if self._entries.get(params) is future:
                del self._entries[params]
        future.set_exception(error)


_CACHE = _LoopCache(_MAX_CACHED_LOOPS, _ENCODE_WORKERS)


def demo_cache_stats() -> DemoCacheStats:
    """How many encoded loops the process holds and how many encodes it has run."""
    return _CACHE.stats()


class DemoSource(Source):
    """A synthetic camera replaying its cached loop at real-time pace."""

    def __init__(self, options: SourceOptions, *, max_lag: float = 1.0) -> None:
        super().__init__(options)
        self.params = parse_demo_url(options.url, options.label)
        self._max_lag = max_lag
        self.encoded: EncodedLoop | None = None
        """The loop being replayed, once the first iteration has opened it."""

    async def packets(self) -> AsyncGenerator[MediaPacket, None]:
        loop = await _CACHE.get(self.params)
        self.encoded = loop
        units, fps = loop.units, self.params.fps
        pacer = Pacer(max_lag=self._max_lag)
        n = 0
        while True:
            data, keyframe = units[n % len(units)]
            media = n * CLOCK_RATE // fps
            shift = await pacer.wait(media)
            yield MediaPacket(data=data, pts=media + shift, keyframe=keyframe, received=time.monotonic())
            n += 1


# -- the test card (worker thread) -------------------------------------------------

_BARS_BGR = [
    (192, 192, 192),
    (0, 192, 192),
    (192, 192, 0),
    (0, 192, 0),
    (192, 0, 192),
    (0, 0, 192),
    (192, 0, 0),
]
_FONT = cv2.FONT_HERSHEY_SIMPLEX


class _TestCard:
    """Draws frame ``i`` of a loop; the static parts are drawn once."""

    def __init__(self, params: DemoParams) -> None:
        self.p = params
        w, h = params.width, params.height
        self.scale = h / 360
        self.strip = max(12, round(h * 0.14))
        self.bars_bottom = round(h * 0.72)
        bg = np.zeros((h, w, 3), np.uint8)
        for i, colour in enumerate(_BARS_BGR):
            bg[self.strip : self.bars_bottom, i * w // 7 : (i + 1) * w // 7] = colour
        ramp = np.linspace(16, 235, w, dtype=np.float32).astype(np.uint8)
        bg[self.bars_bottom :, :] = ramp[None, :, None]
        title = params.label or params.name
        self._text(
            bg, title, (round(8 * self.scale), round(self.strip * 0.7)), 0.9, (255, 255, 255), w * 0.62
        )
        if params.label:
            size = self._fit(params.name, 0.6, w * 0.34)
            (tw, _), _ = cv2.getTextSize(params.name, _FONT, size, 1)
            self._text(
                bg, params.name, (w - tw - round(8 * self.scale), round(self.strip * 0.7)), 0.6, (160,) * 3
            )
        self.background = bg
        self.dial_radius = max(6, round((h - self.bars_bottom) * 0.38))
        self.dial_centre = (w - self.dial_radius - round(10 * self.scale), (self.bars_bottom + h) // 2)
        cv2.circle(bg, self.dial_centre, self.dial_radius, (0, 0, 0), -1, cv2.LINE_AA)
        ticks = max(1, round(params.loop_seconds))
        for k in range(ticks):
            a = 2 * math.pi * k / ticks
            outer = self._on_dial(a, 1.0)
            inner = self._on_dial(a, 0.82)
            cv2.line(bg, inner, outer, (200, 200, 200), 1, cv2.LINE_AA)
        self.phase = (zlib.crc32(params.name.encode()) % 1000) / 1000 * 2 * math.pi
        self.cycles = max(1, round(params.loop_seconds / 4))

    def _fit(self, text: str, size: float, max_width: float) -> float:
        size *= self.scale
        (tw, _), _ = cv2.getTextSize(text, _FONT, size, max(1, round(2 * self.scale)))
        return size if tw <= max_width else size * max_width / tw

    def _text(
        self,
        img: Image,
        text: str,
        org: tuple[int, int],
        size: float,
        colour: tuple[int, ...],
        max_width: float | None = None,
    ) -> None:
        scaled = self._fit(text, size, max_width) if max_width else size * self.scale
        thick = max(1, round(2 * self.scale))
        cv2.putText(img, text, org, _FONT, scaled, colour, thick, cv2.LINE_AA)

    def _on_dial(self, angle: float, fraction: float) -> tuple[int, int]:
        cx, cy = self.dial_centre
        r = self.dial_radius * fraction
        return round(cx + r * math.sin(angle)), round(cy - r * math.cos(angle))

    def frame(self, i: int) -> Image:
        """Frame ``i`` as a yuv420p plane stack (height * 3/2 rows)."""
        p = self.p
        img = self.background.copy()
        t = i / p.loop_frames
        a = 2 * math.pi * self.cycles * t + self.phase
        mid = (self.strip + self.bars_bottom) / 2
        ball_r = max(4, round(22 * self.scale))
        x = p.width / 2 + (p.width / 2 - ball_r - 2) * math.sin(a)
        y = mid + ((self.bars_bottom - self.strip) / 2 - ball_r - 2) * math.sin(2 * a)
        cv2.circle(img, (round(x), round(y)), ball_r, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(img, (round(x), round(y)), ball_r, (0, 0, 0), max(1, round(2 * self.scale)), cv2.LINE_AA)
        cv2.line(img, self.dial_centre, self._on_dial(2 * math.pi * t, 0.9), (0, 220, 255), 2, cv2.LINE_AA)
        elapsed = i / p.fps
        clock = f"loop {_mmss(elapsed)} / {_mmss(p.loop_seconds)}"
        org = (round(8 * self.scale), p.height - round((p.height - self.bars_bottom) * 0.3))
        (tw, th), base = cv2.getTextSize(clock, _FONT, 0.7 * self.scale, max(1, round(2 * self.scale)))
        cv2.rectangle(img, (org[0] - 4, org[1] - th - 4), (org[0] + tw + 4, org[1] + base + 2), (0, 0, 0), -1)
        self._text(img, clock, org, 0.7, (255, 255, 255))
        return cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420)  # type: ignore[return-value]


def _mmss(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes):02d}:{rest:05.2f}"


def encode_loop(params: DemoParams) -> EncodedLoop:
    """Draw and encode one loop (blocking; a worker thread runs it)."""
    started = time.perf_counter()
    card = _TestCard(params)
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = params.width, params.height, "yuv420p"
    ctx.time_base = fractions.Fraction(1, params.fps)
    ctx.framerate = fractions.Fraction(params.fps, 1)
    ctx.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "profile": "baseline",
        "g": str(params.gop),
        "keyint_min": str(params.gop),
        "sc_threshold": "0",
        "bf": "0",
        "threads": "1",
    }
    sets = ParameterSets()
    units: list[tuple[bytes, bool]] = []

    def add(packets: list[av.Packet[Any]]) -> None:
        for packet in packets:
            nals, keyframe = sets.complete(list(split_nals(bytes(packet))))
            units.append((join_nals(nals), keyframe))

    for i in range(params.loop_frames):
        frame = av.VideoFrame.from_ndarray(card.frame(i), format="yuv420p")
        frame.pts = i
        add(ctx.encode(frame))
    add(ctx.encode(None))
    keyframes = [i for i, (_, key) in enumerate(units) if key]
    if len(units) != params.loop_frames or keyframes != list(range(0, params.loop_frames, params.gop)):
        raise SourceError(f"encoder returned {len(units)} frames, keyframes at {keyframes[:5]}...")
    loop = EncodedLoop(params=params, units=tuple(units), encode_seconds=time.perf_counter() - started)
    log.info(
        "demo camera %s: encoded a %.1f s loop (%d frames, %d KiB) in %.2f s",
        params.name,
        params.loop_seconds,
        len(units),
        loop.nbytes // 1024,
        loop.encode_seconds,
    )
    return loop
