"""What an H.265 -> H.264 transcode costs per camera: a measurement, not a test.

For each source size (default 1280x720 and 1920x1080, 25 fps) it encodes a clip
of moving, noisy H.265 with PyAV's libx265, publishes it looped in real time into
a real :class:`~streams.hub.Hub` (each packet stamped with its arrival time), and
runs a :class:`~streams.transcoding.transcoder.Transcoder` on it, for each output limit (the
source size, and 1280x720 at most) with 1 and then 10 subscribers draining the
output. Per stage it prints the process's CPU time over wall time as a share of
one core (the median of several windows, with their range; the worker thread,
FFmpeg's own threads and the event loop all count), the output frame rate one
subscriber received, and the latency the transcode adds (a subscriber's receive
time minus the source packet's arrival time), p50 and p90 over every subscriber.
A first stage per size publishes without any transcoder: the cost of feeding
the hub, to subtract.

Run from the project root:  .venv/bin/python bench/transcode.py [--sizes 1280x720,1920x1080]
[--windows 5] [--window 2] [--warmup 2] [--kbps 2000]

One process: the event loop (publisher and subscribers) and the transcoder's worker thread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import fractions
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a plain script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av
import numpy as np
import psutil

from streams.hub import Hub, HubClosed, Subscription
from streams.packets import CLOCK_RATE, MediaPacket
from streams.transcoding.transcoder import Transcoder, fit_size

FPS = 25
GOP = 50
"""Source keyframe every 2 s."""
OUTPUT_BITRATE = {720: 2_000_000, 1080: 4_000_000}
"""Output bitrate by output height (bits per second)."""


def encode_h265(width: int, height: int, frames: int, kbps: int) -> list[MediaPacket]:
    """A scrolling noise texture with a moving block of fresh noise, H.265 (libx265 ultrafast)."""
    ctx = av.CodecContext.create("libx265", "w")
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = fractions.Fraction(1, FPS)
    ctx.framerate = fractions.Fraction(FPS, 1)
    ctx.bit_rate = kbps * 1000
    params = f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0:repeat-headers=1:log-level=error"
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "x265-params": params}
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (height + 64, 2 * width), dtype=np.uint16)
    texture = ((noise + np.roll(noise, 1, 0) + np.roll(noise, 1, 1) + np.roll(noise, 1, (0, 1))) // 4).astype(
        np.uint8
    )
    chroma = np.full((height // 2, width), 128, np.uint8)
    block_w, block_h = width // 6, height // 6
    out: list[MediaPacket] = []

    def collect(packets: list[av.Packet[Any]]) -> None:
        for p in packets:
            pts = p.pts or 0
            out.append(MediaPacket(bytes(p), pts * CLOCK_RATE // FPS, bool(p.is_keyframe), codec="h265"))

    for i in range(frames):
        x, y = (i * 7) % width, int(32 + 30 * np.sin(i / 15))
        luma = texture[y : y + height, x : x + width].copy()
        bx = (i * 23) % (width - block_w)
        luma[height // 3 : height // 3 + block_h, bx : bx + block_w] = rng.integers(
            0, 256, (block_h, block_w), dtype=np.uint8
        )
        frame = av.VideoFrame.from_ndarray(np.concatenate([luma, chroma]), format="yuv420p")
        frame.pts = i
        collect(list(ctx.encode(frame)))
    collect(list(ctx.encode(None)))
    return out


async def publish(hub: Hub, clip: list[MediaPacket]) -> None:
    """The clip, looped at real-time pace, as a camera sends it."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    while True:
        source = clip[n % len(clip)]
        hub.publish(dataclasses.replace(source, pts=n * CLOCK_RATE // FPS, received=time.monotonic()))
        n += 1
        await asyncio.sleep(max(0.0, start + n / FPS - loop.time()))


@dataclass
class Drain:
    """One subscriber taking every packet as it comes, noting the latency of each."""

    sub: Subscription
    count: int = 0
    latencies: list[float] = field(default_factory=list)
    recording: bool = False

    async def run(self) -> None:
        with contextlib.suppress(HubClosed):
            while True:
                packet = await self.sub.get()
                self.count += 1
                if self.recording:
                    self.latencies.append(time.monotonic() - packet.received)


@dataclass
class Stage:
    label: str
    cpu: list[float] = field(default_factory=list)
    machine: list[float] = field(default_factory=list)
    """Every CPU of the machine, other processes included, as a share of one core."""
    fps: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    out_size: str = ""
    mbps: float | None = None
    dropped: int = 0


async def measure(
    clip: list[MediaPacket],
    label: str,
    args: argparse.Namespace,
    *,
    limit: tuple[int, int] | None,
    subscribers: int,
) -> Stage:
    stage = Stage(label)
    hub = Hub("bench")
    transcoder: Transcoder | None = None
    drains: list[Drain] = []
    async with asyncio.TaskGroup() as group:
        feeder = group.create_task(publish(hub, clip))
        tasks = []
        if limit is not None:
            bitrate = OUTPUT_BITRATE[1080 if limit[1] > 720 else 720]
            transcoder = Transcoder(
                hub, name="bench", max_width=limit[0], max_height=limit[1], bitrate=bitrate
            )
            await asyncio.sleep(0.1)  # let the source hub cache a keyframe
            drains = [Drain(transcoder.subscribe()) for _ in range(subscribers)]
            tasks = [group.create_task(d.run()) for d in drains]
        await asyncio.sleep(args.warmup)
        for d in drains:
            d.recording = True
        bytes0 = transcoder.output.stats.bytes if transcoder else 0
        start = time.monotonic()
        for _ in range(args.windows):
            wall0, cpu0, all0 = time.monotonic(), time.process_time(), busy_seconds()
            count0 = drains[0].count if drains else 0
            await asyncio.sleep(args.window)
            wall = time.monotonic() - wall0
            stage.cpu.append((time.process_time() - cpu0) / wall)
            stage.machine.append((busy_seconds() - all0) / wall)
            if drains:
                stage.fps.append((drains[0].count - count0) / wall)
        if transcoder is not None:
            stage.mbps = (transcoder.output.stats.bytes - bytes0) * 8 / (time.monotonic() - start) / 1e6
            info = transcoder.output.info
            stage.out_size = f"{info.width}x{info.height}" if info else "?"
            stage.dropped = transcoder.dropped
            await transcoder.stop()
        for task in [feeder, *tasks]:
            task.cancel()
    for d in drains:
        stage.latencies += d.latencies
    return stage


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all CPUs, every process)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> None:
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    stages: list[Stage] = []
    for width, height in sizes:
        size = f"{width}x{height}"
        t0 = time.monotonic()
        clip = encode_h265(width, height, args.frames, args.kbps)
        mbps = sum(len(p.data) for p in clip) * 8 * FPS / len(clip) / 1e6
        print(
            f"{size}: {len(clip)} frames of H.265 encoded in {time.monotonic() - t0:.1f} s, "
            f"{mbps:.2f} Mbit/s",
            file=sys.stderr,
        )
        print(f"  stage: {size} feed only", file=sys.stderr)
        stages.append(
            await measure(clip, f"{size} feed only (no transcode)", args, limit=None, subscribers=0)
        )
        limits = [(width, height)]
        if fit_size(width, height, 1280, 720) != (width, height):
            limits.append((1280, 720))
        for limit in limits:
            for subscribers in (1, 10):
                label = f"{size} -> max {limit[0]}x{limit[1]}, {subscribers} sub"
                print(f"  stage: {label}", file=sys.stderr)
                stages.append(await measure(clip, label, args, limit=limit, subscribers=subscribers))
    report(stages, args)


def report(stages: list[Stage], args: argparse.Namespace) -> None:
    print()
    print(
        f"H.265 -> H.264 transcode, {FPS} fps source, keyframe every {GOP // FPS} s; "
        f"medians of {args.windows} windows of {args.window:g} s after {args.warmup:g} s warm-up"
    )
    print(
        f"{'stage':<40} {'out':>9} {'CPU':>6} {'(range)':>13} {'over feed':>9} {'fps':>5} "
        f"{'Mbit/s':>6} {'lat p50':>7} {'lat p90':>7} {'dropped':>7} {'machine':>7}"
    )
    feed = 0.0
    for s in stages:
        cpu = statistics.median(s.cpu)
        spread = f"{100 * min(s.cpu):.0f}-{100 * max(s.cpu):.0f}%"
        if not s.latencies:
            feed = cpu
            print(
                f"{s.label:<40} {'':>9} {100 * cpu:5.1f}% {spread:>13} {'':>9} {'':>5} {'':>6} {'':>7} "
                f"{'':>7} {'':>7} {100 * statistics.median(s.machine):6.0f}%"
            )
            continue
        print(
            f"{s.label:<40} {s.out_size:>9} {100 * cpu:5.1f}% {spread:>13} {100 * (cpu - feed):8.1f}% "
            f"{statistics.median(s.fps):5.1f} {s.mbps or 0:6.2f} {1000 * pct(s.latencies, 0.5):5.1f}ms "
            f"{1000 * pct(s.latencies, 0.9):5.1f}ms {s.dropped:7d} {100 * statistics.median(s.machine):6.0f}%"
        )
    print(
        "   CPU: this process (publisher, subscribers, transcoder thread, FFmpeg's threads) over wall time,"
    )
    print("        % of one core; over feed: minus the feed-only stage of the same size")
    print("   fps: what one subscriber received; Mbit/s: the H.264 output")
    print("   lat: subscriber receive time - source packet arrival, p50/p90 over every subscriber")
    print(f"   machine: all {psutil.cpu_count()} CPUs busy, other processes included (% of one core)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1280x720,1920x1080", help="source sizes, WxH comma-separated")
    parser.add_argument("--frames", type=int, default=100, help="frames in the looped source clip")
    parser.add_argument("--kbps", type=int, default=2000, help="source H.265 bitrate")
    parser.add_argument("--windows", type=int, default=5, help="measurement windows (the median is shown)")
    parser.add_argument("--window", type=float, default=2.0, help="seconds per window")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before the first window")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
