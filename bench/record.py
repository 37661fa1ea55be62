"""Recording benchmarks: the writers, the index, and what recording costs a running service.

Run from the checkout with the project's virtualenv::

    .venv/bin/python bench/record.py --writers              # 16 cameras, 4 Mbit/s, 10 s per writer
    .venv/bin/python bench/record.py --writers --cameras 4 --seconds 5
    .venv/bin/python bench/record.py --index                # listing spans out of 16 x 30 days
    .venv/bin/python bench/record.py --overhead             # 16 file cameras, recording on vs off: 4 min
    .venv/bin/python bench/record.py --playback             # first picture of 30 recorded moments: 2 min
    .venv/bin/python bench/record.py --export               # export MB/s, live latency meanwhile: 3 min

``--overhead``, ``--playback``, ``--export`` and ``--index`` are described in
:mod:`bench._record_overhead`, :mod:`bench._record_playback`, :mod:`bench._record_export`
and :mod:`bench._record_index`; what follows is ``--writers``.

Every camera publishes, on the event loop at 25 fps, one fragment per access unit
of synthetic data (a keyframe of 8 frames' worth every 2 s), 4 Mbit/s in all,
written to a segment file in a temporary directory with SHA-256 while writing and
``fdatasync`` every second, as the recorder does:

* ``thread``: :class:`streams.recording.writer.SegmentWriter`, one thread per
  camera fed through its bounded queue (what the recorder uses);
* ``aiofiles``: one task per camera with a bounded ``asyncio.Queue``, writing
  with ``aiofiles`` (each write a trip to the default executor) and hashing on
  the loop;
* ``none``: the same publishers with no writer, the baseline.

It prints, for each, the process CPU per camera (share of one core, baseline
included) and the event loop's lag: how late a 10 ms timer fires (p50, p99, max).

Threads: the event loop; the writers' threads or the default executor.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiofiles  # noqa: E402

from bench._fixtures import interrupt_on_sigterm  # noqa: E402
from streams.recording.layout import SegmentMetadata  # noqa: E402
from streams.recording.segmenter import Data, Open  # noqa: E402
from streams.recording.writer import SegmentWriter  # noqa: E402

FPS = 25
GOP = 2 * FPS
KEYFRAME_WEIGHT = 8
"""A keyframe is as big as this many other frames."""

Sink = Callable[[bytes, bool], None]


def frame_sizes(kbps: int) -> tuple[int, int]:
    per_gop = kbps * 1000 // 8 * GOP // FPS
    other = per_gop // (GOP - 1 + KEYFRAME_WEIGHT)
    return other * KEYFRAME_WEIGHT, other


async def publish(sink: Sink, kbps: int, until: float) -> None:
    key, other = frame_sizes(kbps)
    payload = os.urandom(key)
    frame = 0
    start = time.monotonic()
    while time.monotonic() < until:
        keyframe = frame % GOP == 0
        sink(payload[: key if keyframe else other], keyframe)
        frame += 1
        await asyncio.sleep(max(0.0, start + frame / FPS - time.monotonic()))


async def lag_probe(until: float, lags: list[float]) -> None:
    while time.monotonic() < until:
        before = time.monotonic()
        await asyncio.sleep(0.01)
        lags.append(time.monotonic() - before - 0.01)


async def thread_writers(directory: Path, cameras: int, kbps: int, until: float) -> None:
    writers = []
    for index in range(cameras):
        writer = SegmentWriter(
            f"cam{index}", f"cam{index}", "main", sync_interval=1.0,
            on_opened=lambda path, meta: None, on_closed=lambda info: None, on_failed=lambda err: None,
        )  # fmt: skip
        writer.start()
        meta = SegmentMetadata(datetime.now(UTC), 0, "avc1.64001f", None)
        writer.put(Open(directory / f"cam{index}" / "segment.mp4", b"head", meta))
        writers.append(writer)

    def sink_of(writer: SegmentWriter) -> Sink:
        def put(data: bytes, keyframe: bool) -> None:
            writer.put(Data(data, None, keyframe))  # a full queue drops it, as the recorder does
            writer.flush()  # one hand-off per fragment, as aiofiles below (the recorder batches)

        return put

    await asyncio.gather(*(publish(sink_of(w), kbps, until) for w in writers))
    await asyncio.gather(*(w.stop() for w in writers))


async def aiofiles_writers(directory: Path, cameras: int, kbps: int, until: float) -> None:
    async def write(queue: asyncio.Queue[bytes | None], path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        loop = asyncio.get_running_loop()
        last_sync = time.monotonic()
        async with aiofiles.open(path, "wb", buffering=0) as file:
            while (data := await queue.get()) is not None:
                await file.write(data)
                digest.update(data)
                if time.monotonic() - last_sync >= 1.0:
                    await loop.run_in_executor(None, os.fdatasync, file.fileno())
                    last_sync = time.monotonic()

    queues: list[asyncio.Queue[bytes | None]] = [asyncio.Queue(maxsize=256) for _ in range(cameras)]
    tasks = [
        asyncio.create_task(write(q, directory / f"cam{i}" / "segment.mp4")) for i, q in enumerate(queues)
    ]

    def sink_of(queue: asyncio.Queue[bytes | None]) -> Sink:
        def put(data: bytes, keyframe: bool) -> None:
            if not queue.full():
                queue.put_nowait(data)

        return put

    await asyncio.gather(*(publish(sink_of(q), kbps, until) for q in queues))
    for queue in queues:
        await queue.put(None)
    await asyncio.gather(*tasks)


async def no_writers(directory: Path, cameras: int, kbps: int, until: float) -> None:
    await asyncio.gather(*(publish(lambda data, keyframe: None, kbps, until) for _ in range(cameras)))


WRITERS: dict[str, Callable[[Path, int, int, float], Awaitable[None]]] = {
    "none": no_writers,
    "thread": thread_writers,
    "aiofiles": aiofiles_writers,
}


async def measure(
    kind: str, cameras: int, kbps: int, seconds: float, directory: Path | None
) -> tuple[float, list[float]]:
    with tempfile.TemporaryDirectory(prefix="record-bench-", dir=directory) as tmp:
        lags: list[float] = []
        until = time.monotonic() + seconds
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.gather(WRITERS[kind](Path(tmp), cameras, kbps, until), lag_probe(until, lags))
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    return cpu / wall / cameras, lags


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writers", action="store_true", help="compare the writers")
    parser.add_argument(
        "--index", action="store_true", help="time listing a camera's spans out of a month-full index"
    )
    parser.add_argument(
        "--days", type=int, default=30, help="--index, --playback: days of segments per camera"
    )
    parser.add_argument(
        "--overhead", action="store_true", help="a service of file cameras with recording on, one with it off"
    )
    parser.add_argument(
        "--playback", action="store_true", help="time to the first picture of recorded moments"
    )
    parser.add_argument("--moments", type=int, default=30, help="--playback: moments asked for")
    parser.add_argument("--seed", type=int, default=1, help="--playback: which moments")
    parser.add_argument(
        "--export", action="store_true", help="export speed, and live viewers' latency with and without"
    )
    parser.add_argument("--export-minutes", type=float, default=10.0, help="--export: minutes per export")
    parser.add_argument("--live", type=int, default=4, help="--export: live RTSP cameras")
    parser.add_argument("--per-camera", type=int, default=2, help="--export: WebRTC viewers per live camera")
    parser.add_argument("--rounds", type=int, default=3, help="--export: idle + export windows")
    parser.add_argument("--size", default="1920x1080", help="the clip's picture size")
    parser.add_argument(
        "--warmup", type=float, default=30.0, help="--overhead, --export: seconds before sampling"
    )
    parser.add_argument("--window", type=float, default=15.0, help="--overhead, --export: seconds per window")
    parser.add_argument("--windows", type=int, default=12, help="--overhead: windows sampled")
    parser.add_argument(
        "--segment-seconds", type=float, default=300.0, help="--overhead: the recorder's segment length"
    )
    parser.add_argument(
        "--control", action="store_true", help="--overhead: recording off in both services (noise floor)"
    )
    parser.add_argument("--cameras", type=int, default=16)
    parser.add_argument("--kbps", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=2, help="passes over the writers, alternated")
    parser.add_argument(
        "--directory", type=Path, help="where to write (on the disk to judge; default: TMPDIR)"
    )
    args = parser.parse_args()
    if not (args.writers or args.index or args.overhead or args.playback or args.export):
        parser.error("say --writers, --index, --overhead, --playback and/or --export")
    interrupt_on_sigterm()
    if args.overhead:
        from bench._record_overhead import run_overhead

        print(run_overhead(args, _say), flush=True)
    if args.playback:
        from bench._record_playback import run_playback

        print(run_playback(args, _say), flush=True)
    if args.export:
        from bench._record_export import run_export

        print(run_export(args, _say), flush=True)
    if args.index:
        from bench._record_index import index_listing

        asyncio.run(index_listing(args.cameras, args.days, 300))
    if not args.writers:
        return
    print(
        f"{args.cameras} cameras x {args.kbps} kbit/s, {FPS} fps, {args.seconds:g} s a run, {args.runs} runs"
    )
    print(f"{'writer':<10} {'CPU/camera':>11} {'lag p50':>9} {'lag p99':>9} {'lag max':>9}")
    for run in range(args.runs):
        for kind in WRITERS:
            cpu, lags = asyncio.run(measure(kind, args.cameras, args.kbps, args.seconds, args.directory))
            quantiles = statistics.quantiles(lags, n=100)
            print(
                f"{kind:<10} {cpu * 100:>10.2f}% {quantiles[49] * 1000:>7.2f}ms "
                f"{quantiles[98] * 1000:>7.2f}ms {max(lags) * 1000:>7.2f}ms  (run {run + 1})"
            )


_START = time.monotonic()


def _say(text: str) -> None:
    print(f"[{time.monotonic() - _START:6.1f} s] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
