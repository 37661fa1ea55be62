"""The playback benchmark's printed report, from the figures :mod:`playback` collected.

Pure formatting, main thread.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
from _report import Stage
from _units import median, percentile

FPS = 25


@dataclass
class Block:
    """One protocol's run: its stages on a fresh service, and its first-picture joins."""

    protocol: str
    """What the viewers spoke: ``webrtc`` or ``mse``."""
    name: str
    deflate: bool = False
    """MSE viewers offered permessage-deflate."""
    stages: list[Stage] = field(default_factory=list)
    first: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    auth: str = ""
    gone_s: float | None = None
    sessions_after: int = 0
    threads_before: int = 0
    fds_before: int = 0
    threads_after: int = 0
    fds_after: int = 0


def _pct(v: float | None) -> str:
    return "   n/a" if v is None else f"{100 * v:5.1f}%"


def _num(v: float | None, width: int = 5, digits: int = 0) -> str:
    return f"{'n/a':>{width}}" if v is None else f"{v:{width}.{digits}f}"


def _others(s: Stage) -> float | None:
    """Machine CPU not used by the service, the RTSP server or the viewer processes (median).

    The machine's counters tick in 10 ms steps and are read a moment apart from the
    processes', so an idle rest can come out a little below zero: shown as 0.
    """
    rest = [
        max(0.0, m - c - g - v) for m, c, g, v in zip(s.machine, s.cpu, s.gst_cpu, s.viewer_cpu, strict=False)
    ]
    return median(rest)


def _added(s: Stage, q: float) -> float | None:
    view = median(s.latencies) if q == 0.5 else percentile(s.latencies, q)
    direct = median(s.direct) if q == 0.5 else percentile(s.direct, q)
    return None if view is None or direct is None else view - direct


def _ms_span(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{1000 * statistics.median(values):5.0f} / {1000 * max(values):5.0f}"


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines: list[str] = []
    add = lines.append
    clip = results["clip"]
    blocks: list[Block] = results["blocks"]
    before, after = results["load_before"], results.get("load_after", results["load_before"])
    add("")
    add(
        f"Hallwatch playback benchmark, MSE next to WebRTC: {clip['size']} {clip['fps']} fps, "
        f"{clip['mbps']:.2f} Mbit/s measured, keyframe every {clip['gop_s']:.0f} s, one camera; "
        f"{psutil.cpu_count()} CPUs; medians of {args.windows} windows of {args.window:.0f} s "
        f"after {args.warmup:.0f} s warm-up"
    )
    auth = sorted({b.auth for b in blocks})
    add(
        f"   load average (1 min) {before[0]:.2f} before, {after[0]:.2f} after; a fresh service per "
        f"protocol; viewers authenticated with: {', '.join(auth)}"
    )
    for b in blocks:
        if b.protocol == "mse":
            used = {r.get("deflate") for r in b.first if "deflate" in r}
            agreed = "not measured" if not used else ("yes" if True in used else "no")
            add(
                f"   {b.name}: permessage-deflate offered {'yes' if b.deflate else 'no'} "
                f"({'as browsers do' if b.deflate else 'unlike browsers'}), agreed by the service: {agreed}"
            )
    add("")
    add("1. The service process (CPU: share of one core; RSS) and what each viewer received")
    add(
        f"{'stage':<27} {'CPU':>6} {'(range)':>13} {'RSS MB':>6} {'fps min':>7} {'fps med':>7} "
        f"{'direct':>6} {'lost':>5} {'threads':>7} {'fds':>4} | {'wait':>6} {'gst':>6} "
        f"{'viewers':>7} {'others':>6} {'machine':>7}"
    )
    for b in blocks:
        for s in b.stages:
            fps = sorted(s.fps.values())
            spread = f"{100 * min(s.cpu):.1f}-{100 * max(s.cpu):.1f}%" if s.cpu else ""
            add(
                f"{s.label:<27} {_pct(median(s.cpu))} {spread:>13} {median(s.rss) or 0:6.0f} "
                f"{_num(fps[0] if fps else None, 7, 1)} {_num(median(fps), 7, 1)} "
                f"{_num(s.direct_fps, 6, 1)} {s.lost:5d} {s.threads:7d} {s.fds:4d} | "
                f"{_pct(median(s.waited))} {_pct(median(s.gst_cpu))} {_pct(median(s.viewer_cpu)):>7} "
                f"{_pct(_others(s))} {_pct(median(s.machine)):>7}"
            )
    add(
        "   lost: WebRTC = RTP packets missing, MSE = access units the relay skipped for a slow viewer "
        "(jumps in tfdt); summed over viewers"
    )
    add(
        "   wait = service's main thread runnable without a CPU; gst = RTSP server; viewers = both viewer "
        "processes; others = every other process on the machine; machine = all CPUs busy (% of one core)"
    )
    add("")
    add("2. Latency, camera clock (SEI) to arrival, ms: viewers vs a direct RTSP read of the same camera")
    add(
        f"{'stage':<27} {'view p50':>8} {'view p90':>8} {'dir p50':>8} {'dir p90':>8} "
        f"{'added p50':>9} {'added p90':>9}   per-window viewer p50"
    )
    for b in blocks:
        for s in b.stages:
            if not s.latencies:
                continue
            add(
                f"{s.label:<27} {_num(median(s.latencies), 8)} {_num(percentile(s.latencies, 0.9), 8)} "
                f"{_num(median(s.direct), 8)} {_num(percentile(s.direct, 0.9), 8)} "
                f"{_num(_added(s, 0.5), 9)} {_num(_added(s, 0.9), 9)}   "
                + " ".join(f"{v:.0f}" for v in s.window_p50)
            )
    add("")
    add("3. Side by side")
    _side_by_side(add, blocks)
    for b in blocks:
        if b.first:
            add("")
            _first_details(add, b, clip["gop_s"])
    add("")
    add("5. After every viewer left")
    for b in blocks:
        gone = "never" if b.gone_s is None else f"{b.gone_s:.1f} s"
        stats = b.stages[-1].service_stats[0] if b.stages and b.stages[-1].service_stats else {}
        add(
            f"   {b.name:<7} service reported 0 viewers after {gone}; "
            f"{b.sessions_after} RTSP session(s) open; "
            f"threads {b.threads_before} -> {b.threads_after}, "
            f"fds {b.fds_before} -> {b.fds_after} (given {args.settle:.0f} s to fall back); "
            f"{stats.get('dropped_packets', 0)} packets dropped for slow viewers, "
            f"{stats.get('reconnects', 0)} reconnects"
        )
    for b in blocks:
        for s in b.stages:
            if s.join_errors:
                add(f"   {s.label}: {len(s.join_errors)} viewers failed to join, e.g. {s.join_errors[0]}")
            if s.direct_fps is not None and s.direct_fps < FPS * 0.95:
                add(
                    f"   WARNING {s.label}: the direct RTSP read got {s.direct_fps:.1f} fps: the RTSP server "
                    "or this machine did not keep up, so this stage's figures are not the relay's alone"
                )
            busy = median(s.machine)
            if busy is not None and busy > 0.9 * (psutil.cpu_count() or 1):
                add(f"   WARNING {s.label}: the machine's CPUs were {100 * busy:.0f}% busy: contention")
        lines.extend(f"   note ({b.name}): {n}" for n in b.notes)
    return "\n".join(lines)


def _side_by_side(add: Callable[[str], None], blocks: list[Block]) -> None:
    add(f"   {'':<42}" + "".join(f"{b.name:>16}" for b in blocks))

    def row(label: str, cells: list[str]) -> None:
        add(f"   {label:<42}" + "".join(f"{c:>16}" for c in cells))

    def stage(b: Block, n: int) -> Stage | None:
        return next((s for s in b.stages if s.viewers == n and s.cpu), None)

    counts = sorted({s.viewers for b in blocks for s in b.stages})
    watched = [n for n in counts if n > 0]
    top = max(counts) if counts else 0
    for n in counts:
        row(f"CPU, {_viewers(n)}" if n else "CPU, ingest only", [_pct(_cpu(stage(b, n))) for b in blocks])
    for n in [c for c in counts if c > 1]:
        row(
            f"cost per extra viewer, (cpu{n} - cpu1) / {n - 1}",
            [_slope(stage(b, 1), stage(b, n), n - 1) for b in blocks],
        )
    if blocks and len(blocks) > 1 and top > 1:
        ref = _per_viewer(stage(blocks[0], 1), stage(blocks[0], top), top - 1)
        row(
            f"  the same, 1 -> {top}, as a multiple of {blocks[0].name}'s",
            [_ratio(_per_viewer(stage(b, 1), stage(b, top), top - 1), ref) for b in blocks],
        )
    row("first viewer over ingest only", [_slope(stage(b, 0), stage(b, 1), 1) for b in blocks])
    row(f"RSS MB, ingest only -> {top} viewers", [_rss(stage(b, 0), stage(b, top)) for b in blocks])
    for n in watched:
        row(f"fps per viewer min / med, {_viewers(n)}", [_fps(stage(b, n)) for b in blocks])
    for n in watched:
        row(f"latency added p50 / p90 ms, {_viewers(n)}", [_lat(stage(b, n)) for b in blocks])
    row("first picture received, med / max ms", [_ms_span(_first(b, "received")) for b in blocks])
    row("first picture decoded, med / max ms", [_ms_span(_first(b, "decoded")) for b in blocks])


def _viewers(n: int) -> str:
    return f"{n} viewer{'' if n == 1 else 's'}"


def _cpu(s: Stage | None) -> float | None:
    return None if s is None else median(s.cpu)


def _per_viewer(a: Stage | None, b: Stage | None, extra: int) -> float | None:
    """CPU per viewer from stage ``a`` to stage ``b``, which has ``extra`` more viewers."""
    ca, cb = _cpu(a), _cpu(b)
    return None if ca is None or cb is None else (cb - ca) / extra


def _slope(a: Stage | None, b: Stage | None, extra: int) -> str:
    per = _per_viewer(a, b, extra)
    return "n/a" if per is None else f"{100 * per:.2f}%"


def _ratio(value: float | None, ref: float | None) -> str:
    return "n/a" if value is None or not ref or ref <= 0 else f"x {value / ref:.1f}"


def _rss(a: Stage | None, b: Stage | None) -> str:
    ra, rb = (None if s is None else median(s.rss) for s in (a, b))
    return "n/a" if ra is None or rb is None else f"{ra:.0f} -> {rb:.0f}"


def _fps(s: Stage | None) -> str:
    values = sorted(s.fps.values()) if s is not None else []
    return f"{values[0]:.1f} / {median(values) or 0:.1f}" if values else "n/a"


def _lat(s: Stage | None) -> str:
    if s is None:
        return "n/a"
    a50, a90 = _added(s, 0.5), _added(s, 0.9)
    return "n/a" if a50 is None or a90 is None else f"{a50:.0f} / {a90:.0f}"


def _first(b: Block, key: str) -> list[float]:
    return [r[key] for r in b.first if r.get(key) is not None and r.get("error") is None]


def _first_details(add: Callable[[str], None], b: Block, gop_s: float) -> None:
    ok = [r for r in b.first if r.get("error") is None]
    keyframes = sum(1 for r in ok if r.get("keyframe"))
    add(
        f"4. First picture, {b.name}: {len(b.first)} joins at random phases of the {gop_s:.0f} s GOP, one "
        f"viewer already watching; {keyframes}/{len(ok)} started on a keyframe"
    )
    if b.protocol == "mse":
        add("   WebSocket open -> handshake done -> init segment -> first fragment -> decoded by PyAV, ms")
    else:
        add(
            "   WHEP POST -> answer -> ICE/DTLS connected -> first complete access unit "
            "-> decoded by aiortc, ms"
        )
    for r in b.first:
        if r.get("error"):
            add(f"     failed: {r['error']}")
            continue
        steps = ("connected", "init") if b.protocol == "mse" else ("answer", "connected")
        cells = " -> ".join(_num(None if r.get(k) is None else 1000 * r[k], 4) for k in steps)
        size = "x".join(str(v) for v in r.get("size") or ())
        age = r.get("age_ms")
        add(
            f"     {cells} -> {_num(None if r.get('received') is None else 1000 * r['received'], 4)} -> "
            f"{_num(1000 * r['decoded'], 4)}   ({size}; the first unit was "
            f"{'n/a' if age is None else f'{age:.0f} ms'} old: the join's phase in the GOP)"
        )
