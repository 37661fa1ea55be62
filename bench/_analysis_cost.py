"""``bench/analysis.py``, part 1: what picture analysis costs a service of 16 cameras.

The cameras are real encoded streams: the synthetic hall (four people walking, the
lighting drifting) upscaled to 1920x1080 with sensor noise of its own, encoded once by
libx264 at about 4 Mbit/s with a keyframe every 2 s (and the same hall at 640x360,
512 kbit/s, for the sub-streams), looped at real-time pace by the project's RTSP test
server, one path per camera stream. Demo cameras would encode in the measured process,
and their cards are nearly still; the hall has what the checks look at (edges,
features, people) and a camera's bitrate. Before the first run every path is opened by
a primer that stays until the end, one after the other across the keyframe interval:
the cameras' keyframes are spread as independent cameras' are, and the same in every run.

Each run is a fresh process (:mod:`bench._analysis_service`) with the same cameras,
analysis on or off, nobody watching; runs alternate on/off, the order swapped every
repetition, and each pair gives a difference. Also measured here, apart from the
service: each check's time per picture at 320 px (``bench/analysis_thresholds.py``'s
:func:`costs`, one thread) and the frame source's decode of one keyframe
(:func:`~streams.outputs.decoder.decode_keyframe`) with the conversion the analysis
asks of it (:func:`~streams.outputs.decoder.to_bgr` at 640 px).

Blocking code for the benchmark's main thread.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import psutil

from bench._fixtures import FPS, Primer
from bench._hall import FULL_HD, GOP, MAIN_KBPS, SUB, SUB_KBPS, au_file
from bench.analysis_thresholds import costs, learned
from streams.outputs.decoder import decode_keyframe, to_bgr
from streams.packets import MediaPacket
from streams.specs import AnalysisSpec
from tests.rtsp_fixtures import RtspTestServer
from tests.streams.analysis.scenes import hall_clip

CLIP_SECONDS = 10
SERVICE = Path(__file__).with_name("_analysis_service.py")
CHILD_TIMEOUT = 300.0


@dataclass(frozen=True)
class Run:
    """One service run's window (see :mod:`bench._analysis_service`), and the machine meanwhile."""

    analysis: bool
    figures: dict[str, Any]
    machine: float
    """CPU of the whole machine over the run, every process, share of one core."""
    server: float
    """CPU of the RTSP test server over the run, share of one core."""

    def __getitem__(self, name: str) -> float:
        return float(self.figures[name])


@dataclass(frozen=True)
class Cost:
    """The alternated runs of one camera set."""

    label: str
    cameras: int
    runs: list[Run]

    def side(self, analysis: bool) -> list[Run]:
        return [r for r in self.runs if r.analysis is analysis]

    def differences(self, name: str) -> list[float]:
        """``name`` with analysis on minus off, per repetition (each pair ran back to back)."""
        return [on[name] - off[name] for on, off in zip(self.side(True), self.side(False), strict=True)]

    def median(self, name: str, analysis: bool) -> float:
        return statistics.median(r[name] for r in self.side(analysis))

    def per_analysis_ms(self) -> float:
        """Time in the analysis worker per analysed picture (scaling and checks, not decoding)."""
        on = self.side(True)
        return 1000 * sum(r["seconds"] for r in on) / max(1.0, sum(r["analysed"] for r in on))

    def analysed_per_second(self) -> float:
        on = self.side(True)
        return sum(r["analysed"] for r in on) / sum(r["wall"] for r in on)

    def decodes_per_analysis(self) -> float:
        on = self.side(True)
        return sum(r["frames_decoded"] for r in on) / max(1.0, sum(r["analysed"] for r in on))

    def skipped_share(self) -> float:
        on = self.side(True)
        return sum(r["packets_skipped"] for r in on) / max(1.0, sum(r["packets_received"] for r in on))

    def alarms(self) -> list[dict[str, Any]]:
        return [event for r in self.side(True) for event in r.figures["raised"]]


def check_costs() -> dict[str, float]:
    """Median ms per picture of each check at 320 px, one thread, on the healthy hall."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return costs(hall_clip(100, seed=2), learned(60))
    finally:
        cv2.setNumThreads(threads)


def decode_costs(packets: list[MediaPacket], repeats: int = 8) -> dict[str, float]:
    """Median ms per keyframe of the clip: decoding it alone (wall and process CPU, which counts
    the decoder's slice threads) and converting it to BGR at the analysis' picture width."""
    width = AnalysisSpec().picture_width
    wall, cpu, convert = [], [], []
    for packet in [p for p in packets if p.keyframe] * repeats:
        t, c = time.perf_counter(), time.process_time()
        frame = decode_keyframe(packet)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        t = time.perf_counter()
        to_bgr(frame, width)
        convert.append(time.perf_counter() - t)
    return {
        name: 1000 * statistics.median(v) for name, v in (("wall", wall), ("cpu", cpu), ("to_bgr", convert))
    }


def run_service(
    server: RtspTestServer, mains: list[str], subs: list[str], analysis: bool, timing: dict[str, float]
) -> Run:
    """One fresh service process over the given camera paths."""
    args = {
        "mains": [server.url(p) for p in mains],
        "subs": [server.url(p) for p in subs],
        "analysis": analysis,
    }
    assert server._proc is not None
    gst = psutil.Process(server._proc.pid)
    t0, g0, m0 = time.monotonic(), _cpu(gst), _busy()
    done = subprocess.run(
        [sys.executable, str(SERVICE), json.dumps(args | timing)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the service run failed: {done.stderr[-2000:]}")
    elapsed = time.monotonic() - t0
    return Run(analysis, json.loads(done.stdout), (_busy() - m0) / elapsed, (_cpu(gst) - g0) / elapsed)


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _busy() -> float:
    """CPU seconds the whole machine has spent busy, every core."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - times.iowait)


@contextlib.contextmanager
def primed(server: RtspTestServer, paths: list[str]) -> Iterator[None]:
    """Keep every path playing, started one after the other across the keyframe interval."""
    primers = [Primer(server.url(p)) for p in paths]
    try:
        for primer in primers:
            primer.open()
            time.sleep(GOP / FPS / len(primers))
        yield
    finally:
        for primer in primers:
            primer.close()


def measure(
    server: RtspTestServer, label: str, mains: list[str], subs: list[str], reps: int, timing: dict[str, float]
) -> Cost:
    """``reps`` pairs of runs, on then off, then off then on, and so on."""
    runs = []
    for rep in range(reps):
        for analysis in (True, False) if rep % 2 == 0 else (False, True):
            print(
                f"  {label}: run {rep + 1}/{reps}, analysis {'on' if analysis else 'off'} ...",
                file=sys.stderr,
            )
            runs.append(run_service(server, mains, subs, analysis, timing))
    return Cost(label, len(mains), runs)


def cost_stage(cameras: int, reps: int, warmup: float, window: float) -> list[Cost]:
    """Main streams only, then main streams with sub-streams (analysis on the sub-streams)."""
    main_file, _ = au_file(FULL_HD, MAIN_KBPS, CLIP_SECONDS)
    sub_file, _ = au_file(SUB, SUB_KBPS, CLIP_SECONDS)
    mains = [f"main{i:02d}" for i in range(cameras)]
    subs = [f"sub{i:02d}" for i in range(cameras)]
    files = dict.fromkeys(mains, main_file) | dict.fromkeys(subs, sub_file)
    timing = {"warmup": warmup, "window": window}
    with RtspTestServer(au_files=files).start() as server, primed(server, mains):
        main_only = measure(server, "1080p", mains, [], reps, timing)
        with primed(server, subs):
            with_subs = measure(server, "1080p + 360p sub", mains, subs, reps, timing)
    return [main_only, with_subs]
