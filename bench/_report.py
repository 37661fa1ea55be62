"""The relay benchmark's printed report, from the figures :mod:`relay` collected.

Pure formatting, main thread.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field
from typing import Any

import psutil
from _units import median, percentile

TOLERANCE_MS = 50.0
FPS = 25


@dataclass
class Stage:
    label: str
    viewers: int
    cameras: int
    cpu: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    machine: list[float] = field(default_factory=list)
    gst_cpu: list[float] = field(default_factory=list)
    waited: list[float] = field(default_factory=list)
    viewer_cpu: list[float] = field(default_factory=list)
    fps: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    direct: list[float] = field(default_factory=list)
    by_camera: dict[str, list[float]] = field(default_factory=dict)
    window_p50: list[float] = field(default_factory=list)
    """Median viewer latency of each window, to tell a steady delay from a growing backlog."""
    direct_fps: float | None = None
    lost: int = 0
    incomplete: int = 0
    sessions: int = 0
    threads: int = 0
    fds: int = 0
    join_errors: list[str] = field(default_factory=list)
    service_stats: list[dict[str, Any]] = field(default_factory=list)


def _pct(v: float | None) -> str:
    return "   n/a" if v is None else f"{100 * v:5.1f}%"


def _fps(v: float | None) -> str:
    return "    n/a" if v is None else f"{v:7.1f}"


def _ms(v: float | None) -> str:
    return "  n/a" if v is None else f"{v:5.0f}"


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines: list[str] = []
    add = lines.append
    clip = results["clip"]
    stages: list[Stage] = results["stages"]
    add("")
    add(
        f"Hallwatch relay benchmark: {clip['size']} {clip['fps']} fps, {clip['mbps']:.2f} Mbit/s measured, "
        f"keyframe every {clip['gop_s']:.0f} s; {psutil.cpu_count()} CPUs; "
        f"medians of {args.windows} windows of {args.window:.0f} s after {args.warmup:.0f} s warm-up"
    )
    add("")
    add("1-3. The service process (CPU: share of one core; RSS) and what each viewer received (fps)")
    add(
        f"{'stage':<38} {'CPU':>6} {'(range)':>13} {'RSS MB':>6} {'fps min':>7} {'fps med':>7} "
        f"{'direct':>6} {'lost':>5} {'incmpl':>6} {'threads':>7} {'fds':>4} | {'wait':>6} {'gst':>6} "
        f"{'viewers':>7} {'machine':>7}"
    )
    for s in stages:
        fps = sorted(s.fps.values())
        spread = f"{100 * min(s.cpu):.1f}-{100 * max(s.cpu):.1f}%" if s.cpu else ""
        add(
            f"{s.label:<38} {_pct(median(s.cpu))} {spread:>13} {median(s.rss) or 0:6.0f} "
            f"{_fps(fps[0] if fps else None)} {_fps(median(fps))} {_fps(s.direct_fps):>6} "
            f"{s.lost:5d} {s.incomplete:6d} {s.threads:7d} {s.fds:4d} | {_pct(median(s.waited))} "
            f"{_pct(median(s.gst_cpu))} "
            f"{_pct(median(s.viewer_cpu)):>7} {_pct(median(s.machine)):>7}"
        )
    add(
        "   (direct = fps of the direct RTSP read; wait = time the service's main thread was runnable "
        "but had no CPU;"
    )
    add(
        "    gst = the RTSP server, viewers = both viewer processes, machine = all CPUs busy, other "
        "users included; % of one core)"
    )
    one = {s.viewers: median(s.cpu) or 0.0 for s in stages if s.cameras == 1 and s.cpu}
    if 1 in one:
        for n in sorted(one):
            if n > 1:
                per = 100 * (one[n] - one[1]) / (n - 1)
                add(f"   cost per extra viewer, (cpu{n} - cpu1) / {n - 1}: {per:.2f}% of a core")
        if 0 in one:
            add(f"   first viewer over ingest only: {100 * (one[1] - one[0]):.2f}% of a core")
    many = [s for s in stages if s.cameras > 1 and s.cpu]
    idle = next((s for s in many if s.viewers == 0), None)
    watched = next((s for s in many if s.viewers > 0), None)
    base = next((s for s in stages if s.cameras == 1 and s.viewers == 0 and s.cpu), None)
    if idle is not None and base is not None and idle.cameras > 1:
        per = 100 * ((median(idle.cpu) or 0) - (median(base.cpu) or 0)) / (idle.cameras - 1)
        add(f"   ingest cost per extra camera (no viewer): {per:.2f}% of a core")
    if idle is not None and watched is not None:
        per = 100 * ((median(watched.cpu) or 0) - (median(idle.cpu) or 0)) / watched.viewers
        add(f"   {watched.cameras} cameras: cost per viewer over their ingest: {per:.2f}% of a core")
    add("")
    add("4. Latency, camera clock (SEI) to arrival, ms: viewers vs direct RTSP read of the same camera")
    add(
        f"{'stage':<38} {'view p50':>8} {'view p90':>8} {'dir p50':>8} {'dir p90':>8} "
        f"{'added p50':>9} {'added p90':>9}"
    )
    trends = []
    for s in stages:
        if not s.latencies:
            continue
        cells = [f"{v:.0f}" for v in s.window_p50]
        if len(s.waited) == len(cells):
            cells = [f"{c} ({100 * w:.0f}%)" for c, w in zip(cells, s.waited, strict=True)]
        trends.append(f"   {s.label:<38} " + " ".join(cells))
        v50, v90 = median(s.latencies), percentile(s.latencies, 0.9)
        d50, d90 = median(s.direct), percentile(s.direct, 0.9)
        a50 = None if v50 is None or d50 is None else v50 - d50
        a90 = None if v90 is None or d90 is None else v90 - d90
        add(
            f"{s.label:<38} {_ms(v50):>8} {_ms(v90):>8} {_ms(d50):>8} {_ms(d90):>8} "
            f"{_ms(a50):>9} {_ms(a90):>9}"
        )
    add(
        "   viewers' median latency in each window, ms, with the service's CPU wait in that window "
        "(a rising row is a growing backlog):"
    )
    lines += trends
    for s in stages:
        if len(s.by_camera) > 1:
            add(f"   {s.label}: median latency per camera, ms:")
            cams = sorted(s.by_camera)
            for row in range(0, len(cams), 8):
                add(
                    "     " + "  ".join(f"{c} {median(s.by_camera[c]) or 0:.0f}" for c in cams[row : row + 8])
                )
    late = results.get("late") or []
    if late:
        add("")
        add(f"5. Late viewer ({len(late)} joins at random phases of the {clip['gop_s']:.0f} s GOP)")
        ttff = [r["ttff"] for r in late if r["ttff"] is not None]
        catch = [r["catch_up"] for r in late if r["catch_up"] is not None]
        add(
            "   time to first frame (POST -> first complete access unit): "
            + (_med_max(ttff) if ttff else "none")
            + f" ({sum(1 for r in late if r['first_idr'])}/{len(late)} started on a keyframe)"
        )
        add(
            f"   until within {TOLERANCE_MS:.0f} ms of an early viewer's latency (held 1 s): "
            + (_med_max(catch) if catch else "never")
            + (f"; {len(late) - len(catch)} never caught up in 10 s" if len(catch) < len(late) else "")
        )
        for r in late:
            add(
                f"     POST->answer {1000 * r['answer']:4.0f} ms, "
                f"->connected {1000 * r['connected']:4.0f} ms, "
                f"->first frame {_ms(None if r['ttff'] is None else 1000 * r['ttff'])} ms, "
                f"caught up {_ms(None if r['catch_up'] is None else 1000 * r['catch_up'])} ms, "
                f"lost {r['lost']} packets, {r['incomplete']} incomplete units"
            )
    add("")
    add("6. RTSP sessions the service holds (established TCP to the RTSP server, by psutil)")
    for s in stages:
        reconnects = sum(int(c.get("reconnects", 0)) for c in s.service_stats)
        dropped = sum(int(c.get("dropped_packets", 0)) for c in s.service_stats)
        opened = [c["sessions_opened"] for c in s.service_stats if "sessions_opened" in c]
        add(
            f"   {s.label:<38} {s.sessions} for {s.cameras} camera(s) = "
            f"{s.sessions / s.cameras:.2f} per camera; "
            f"service reports {reconnects} reconnects, {dropped} packets dropped for slow viewers"
            + (f", sessions_opened {sum(opened)}" if opened else "")
        )
    gone = "never" if results["gone_s"] is None else f"{results['gone_s']:.1f} s"
    add(
        f"   after every viewer left: {results['sessions_after_leave']} RTSP session(s); service reported 0 "
        f"viewers after {gone}; "
        f"threads {results['threads_before']} -> {results['threads_after']}, "
        f"open fds {results['fds_before']} -> {results['fds_after']} ({results['udp_after']} UDP sockets)"
    )
    for s in stages:
        if s.join_errors:
            add(f"   {s.label}: {len(s.join_errors)} viewers failed to join, e.g. {s.join_errors[0]}")
    for s in stages:
        if s.direct_fps is not None and s.direct_fps < FPS * 0.95:
            add(
                f"   WARNING {s.label}: the direct RTSP read got {s.direct_fps:.1f} fps: the RTSP server "
                "(or this machine) did not keep up, so this stage's figures are not the relay's alone"
            )
        if median(s.machine) is not None and (median(s.machine) or 0) > 0.9 * (psutil.cpu_count() or 1):
            busy = _pct(median(s.machine))
            add(
                f"   WARNING {s.label}: the machine's CPUs were {busy.strip()} busy (of one core; every "
                "process, others' too): figures there may be limited by contention"
            )
    lines += [f"   note: {n}" for n in results["notes"]]
    return "\n".join(lines)


def _med_max(seconds: list[float]) -> str:
    return f"median {1000 * statistics.median(seconds):.0f} ms, max {1000 * max(seconds):.0f} ms"
