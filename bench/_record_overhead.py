"""``bench/record.py --overhead``: what continuous recording costs a service of 16 cameras.

Two services run side by side on the same cameras, identical but for
``recording.record``: file cameras that loop one pre-encoded clip (1080p25, about
4 Mbit/s, a keyframe every 2 s, cached in the temporary directory) at real-time
pace, so each service's ingest costs the same and no encoder or RTSP server takes
the machine. Both are sampled over the same windows, back to back, the order
swapped every window: whatever else the machine does falls on both alike, and the
per-window difference is paired.

Per window and service: CPU (user + system, share of one core), RSS at the end,
and for the recording one the bytes its segment files grew by and the bytes it
wrote to the block device (``/proc/PID/io``). ``control`` runs both services with
recording off, to show how far apart two identical services read.

Blocking code for the benchmark's main thread; the services are child processes.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import httpx
import psutil

from bench._fixtures import FPS, Service, free_port, make_mp4_file

CLIP_SECONDS = 10
GOP = 2 * FPS


@dataclass
class Side:
    """One service's samples: one entry per window."""

    label: str
    record: bool
    service: Service
    cpu: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    grown: list[float] = field(default_factory=list)
    """Bytes per second the files under the recordings' directory grew by."""
    disk: list[float] = field(default_factory=list)
    """Bytes per second the process wrote to the block device."""


@dataclass(frozen=True)
class Snapshot:
    at: float
    cpu: float
    rss: int
    files: int
    disk: int


def cached_clip(width: int, height: int, kbps: int, say: Any) -> tuple[Path, float]:
    """The looped clip (encoded once, kept in the temporary directory) and its bitrate in Mbit/s."""
    directory = Path(tempfile.gettempdir()) / "hallwatch-bench"
    directory.mkdir(exist_ok=True)
    path = directory / f"clip-{width}x{height}-{kbps}k-gop{GOP}-{CLIP_SECONDS}s.mp4"
    if not path.exists():
        say(f"encoding {CLIP_SECONDS} s of {width}x{height} H.264 at {kbps} kbit/s into {path} ...")
        partial = path.with_suffix(".part.mp4")
        make_mp4_file(partial, width, height, kbps, CLIP_SECONDS * FPS, GOP)
        partial.rename(path)
    return path, path.stat().st_size * 8 / CLIP_SECONDS / 1e6


def _bytes_under(directory: Path) -> int:
    total = 0
    for path in directory.rglob("*"):
        with contextlib.suppress(FileNotFoundError):  # a .part renamed meanwhile
            if path.is_file():
                total += path.stat().st_size
    return total


def _snapshot(side: Side) -> Snapshot:
    proc = side.service.psutil
    with proc.oneshot():
        times = proc.cpu_times()
        rss = proc.memory_info().rss
        disk = proc.io_counters().write_bytes
    recordings = side.service.data_dir / "recordings"
    files = _bytes_under(recordings) if recordings.exists() else 0
    cpu = times.user + times.system + times.children_user + times.children_system
    return Snapshot(time.monotonic(), cpu, rss, files, disk)


def _record_window(side: Side, a: Snapshot, b: Snapshot) -> None:
    wall = b.at - a.at
    side.cpu.append((b.cpu - a.cpu) / wall)
    side.rss_mb.append(b.rss / 2**20)
    side.grown.append((b.files - a.files) / wall)
    side.disk.append((b.disk - a.disk) / wall)


def _recorder_stats(service: Service) -> dict[str, int]:
    """The recorders' counters from ``/metrics``, summed over the cameras."""
    families = {
        "hallwatch_recording_active": "recording",
        "hallwatch_recording_segments_total": "segments",
        "hallwatch_recording_dropped_packets_total": "dropped",
        "hallwatch_recording_errors_total": "errors",
    }
    totals = dict.fromkeys(families.values(), 0)
    text = httpx.get(f"{service.base_url}/metrics", timeout=5.0).text
    for line in text.splitlines():
        name, _, number = line.rpartition(" ")
        family = families.get(name.split("{", 1)[0])
        if family is not None and not line.startswith("#"):
            totals[family] += int(float(number))
    return totals


def run_overhead(args: Any, say: Any) -> str:
    """Start both services, warm up, sample ``args.windows`` windows; the printed report."""
    width, height = (int(v) for v in args.size.split("x"))
    clip, mbps = cached_clip(width, height, args.kbps, say)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="record-overhead-")))
        sides = []
        pair = (("off-a", False), ("off-b", False)) if args.control else (("on", True), ("off", False))
        for label, record in pair:
            service = Service(
                workdir,
                free_port(),
                0,
                args.cameras,
                1,
                urls=[clip.as_uri()] * args.cameras,
                extra={"recording": {"record": record, "segment_seconds": args.segment_seconds}},
                label=label,
            )
            stack.callback(service.stop)
            say(f"starting the service with recording {'on' if record else 'off'} ...")
            service.start()
            sides.append(Side(label, record, service))
        say(f"warm-up {args.warmup:.0f} s, then {args.windows} windows of {args.window:.0f} s ...")
        time.sleep(args.warmup)
        machine: list[float] = []
        psutil.cpu_percent()
        for window in range(args.windows):
            order = sides if window % 2 == 0 else sides[::-1]
            before = {s.label: _snapshot(s) for s in order}
            time.sleep(args.window)
            after = {s.label: _snapshot(s) for s in order}
            machine.append(psutil.cpu_percent() / 100 * psutil.cpu_count())
            for side in sides:
                _record_window(side, before[side.label], after[side.label])
            say(
                f"window {window + 1}: "
                + ", ".join(f"{s.label} {100 * s.cpu[-1]:.1f} % {s.rss_mb[-1]:.0f} MB" for s in sides)
            )
        stats = {s.label: _recorder_stats(s.service) for s in sides}
        problems = {s.label: s.service.log_problems() for s in sides}
    return _report(args, mbps, sides, machine, stats, problems)


def _report(
    args: Any,
    mbps: float,
    sides: list[Side],
    machine: list[float],
    stats: dict[str, dict[str, int]],
    problems: dict[str, tuple[int, list[str]]],
) -> str:
    on, off = sides
    n = args.cameras
    lines = [
        "",
        f"Recording overhead: {n} file cameras of {args.size} {FPS} fps, {mbps:.2f} Mbit/s measured, "
        f"keyframe every {GOP // FPS} s; {psutil.cpu_count()} CPUs; two services side by side, "
        f"{args.windows} windows of {args.window:.0f} s after {args.warmup:.0f} s",
        f"{'recording':<10} {'CPU':>6} {'(range)':>13} {'RSS MB':>7} {'first':>7} {'last':>7} "
        f"{'files MB/s':>10} {'disk MB/s':>9}",
    ]
    for side in sides:
        lines.append(
            f"{side.label:<10} "
            f"{100 * median(side.cpu):5.1f}% "
            f"{f'{100 * min(side.cpu):.1f}-{100 * max(side.cpu):.1f}%':>13} "
            f"{median(side.rss_mb):7.1f} {side.rss_mb[0]:7.1f} {side.rss_mb[-1]:7.1f} "
            f"{median(side.grown) / 1e6:10.2f} {median(side.disk) / 1e6:9.2f}"
        )
    paired = [a - b for a, b in zip(on.cpu, off.cpu, strict=True)]
    rss = median(on.rss_mb) - median(off.rss_mb)
    versus = f"{on.label} - {off.label}"
    lines += [
        f"CPU {versus}: median of the per-window differences {100 * median(paired):+.2f} % of one core "
        f"(range {100 * min(paired):+.1f} to {100 * max(paired):+.1f}); difference of the medians "
        f"{100 * (median(on.cpu) - median(off.cpu)):+.2f} %  (target: at most +5 % for {n} cameras)",
        f"RSS {versus}: {rss:+.1f} MB, {rss / n:+.2f} MB per recorded camera  (target: under 5 MB)",
        f"RSS first -> last window: {on.label} {on.rss_mb[-1] - on.rss_mb[0]:+.1f} MB, "
        f"{off.label} {off.rss_mb[-1] - off.rss_mb[0]:+.1f} MB "
        f"over {(len(on.rss_mb) - 1) * args.window:.0f} s",
    ]
    if on.record:
        expected = n * mbps * 1e6 / 8
        lines.append(
            f"written: files grew {median(on.grown) / 1e6:.2f} MB/s, "
            f"the disk got {median(on.disk) / 1e6:.2f} MB/s; "
            f"{n} x the clip's {mbps:.2f} Mbit/s is {expected / 1e6:.2f} MB/s "
            f"(files / expected {median(on.grown) / expected:.3f})"
        )
    lines.append(f"machine CPU (all processes) median {100 * median(machine):.0f} % of one core")
    for label, figures in stats.items():
        lines.append(f"recorders of '{label}': " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    for label, (count, seen) in problems.items():
        if count:
            lines.append(f"service '{label}' logged {count} warnings/errors, e.g. {seen[0]}")
    return "\n".join(lines)
