"""What the default configuration's sixteen demo cameras cost: a measurement, not a test.

Opens 8 halls x 2 demo cameras at the default settings (640x360, 25 fps, a keyframe
every 2 s), drains their packets, and prints the pre-encode time (until every camera
has yielded its first packet, and each loop's own encode time) and the steady-state
CPU share of one core (process CPU time over wall time, the median of a few windows).

Run from the project root:  python -m bench.demo_sources [--seconds 20] [--windows 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streams.sources import SourceOptions, open_source
from streams.sources.demo import DemoSource, demo_cache_stats

HALLS = 8
CAMERAS_PER_HALL = 2


async def _drain(
    source: DemoSource, first: asyncio.Event, counts: list[int], index: int, stop: asyncio.Event
) -> None:
    async with contextlib.aclosing(source.packets()) as packets:
        async for _ in packets:
            counts[index] += 1
            first.set()
            if stop.is_set():
                return


async def run(seconds: float, windows: int) -> None:
    sources: list[DemoSource] = []
    for hall in range(1, HALLS + 1):
        for cam in range(1, CAMERAS_PER_HALL + 1):
            options = SourceOptions(url=f"demo://hall{hall}-cam{cam}", label=f"Hall {hall} / cam {cam}")
            source = open_source(options)
            assert isinstance(source, DemoSource)
            sources.append(source)
    firsts = [asyncio.Event() for _ in sources]
    counts = [0] * len(sources)
    stop = asyncio.Event()
    wall0, cpu0 = time.monotonic(), time.process_time()
    async with asyncio.TaskGroup() as group:
        for i, source in enumerate(sources):
            group.create_task(_drain(source, firsts[i], counts, i, stop))
        await asyncio.gather(*(event.wait() for event in firsts))
        ready_wall, ready_cpu = time.monotonic() - wall0, time.process_time() - cpu0
        loops = [s.encoded for s in sources if s.encoded is not None]
        encodes = [loop.encode_seconds for loop in loops]
        size = statistics.median(loop.nbytes for loop in loops) / 1024
        first = loops[0]
        print(f"cameras: {len(sources)}, loop {first.params.loop_seconds:g} s of {len(first.units)} frames")
        print(f"pre-encode: all cameras streaming after {ready_wall:.2f} s wall, {ready_cpu:.2f} s CPU")
        print(
            f"per-camera encode (in its thread): median {statistics.median(encodes):.2f} s, "
            f"max {max(encodes):.2f} s, sum {sum(encodes):.2f} s; "
            f"loop size median {size:.0f} KiB"
        )
        shares: list[float] = []
        window = seconds / windows
        before = sum(counts)
        steady0 = time.monotonic()
        for _ in range(windows):
            w0, c0 = time.monotonic(), time.process_time()
            await asyncio.sleep(window)
            shares.append((time.process_time() - c0) / (time.monotonic() - w0))
        rate = (sum(counts) - before) / (time.monotonic() - steady0)
        stop.set()
    print(f"steady state: {rate:.1f} packets/s in all ({rate / len(sources):.1f} per camera)")
    print("CPU share of one core per window: " + ", ".join(f"{s:.1%}" for s in shares))
    print(f"median CPU share of one core: {statistics.median(shares):.1%}")
    print(f"encodes run: {demo_cache_stats().encodes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="steady-state measurement time")
    parser.add_argument("--windows", type=int, default=4, help="measurement windows (the median is shown)")
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.windows))


if __name__ == "__main__":
    main()
