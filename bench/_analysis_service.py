"""One run of ``bench/analysis.py``'s cost stage, in a process of its own: the media plane
(:class:`~streams.manager.StreamManager`, as the service builds it) pulling RTSP cameras,
picture analysis on or off, nobody watching.

Once every camera is online it waits ``warmup`` seconds (the analysis starts after its
offset and its baseline needs 20 healthy pictures before every check runs), then
measures one window of ``window`` seconds: the process's CPU time (user + system, every
thread) over wall time, its RSS at the end, and the analysis and frame-source counters
of every camera over the window. It prints them as one JSON object on stdout.

Run by :mod:`bench._analysis_cost`::

    python bench/_analysis_service.py '{"mains": [...], "subs": [...], "analysis": true,
                                        "warmup": 50, "window": 30}'
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from streams.analysis.output import AnalysisOutput, PictureRaised  # noqa: E402
from streams.ingest import IngestState  # noqa: E402
from streams.manager import StreamManager  # noqa: E402
from streams.outputs.base import Statistic  # noqa: E402
from streams.sources import SourceOptions  # noqa: E402
from streams.specs import AnalysisSpec, CameraSpec  # noqa: E402

ONLINE_TIMEOUT = 60.0
COUNTERS = ("analysed", "seconds", "frames_decoded", "packets_skipped", "packets_received")


def camera_specs(mains: list[str], subs: list[str], analysis: bool) -> list[CameraSpec]:
    """One camera per main URL, with the sub-stream of the same index if there is one."""
    return [
        CameraSpec(
            id=f"cam{i:02d}",
            source=SourceOptions(url=url),
            sub_source=SourceOptions(url=subs[i]) if i < len(subs) else None,
            analysis=AnalysisSpec() if analysis else None,
        )
        for i, url in enumerate(mains)
    ]


def counters(manager: StreamManager) -> dict[str, float]:
    """The analysis and analysed frame-source counters, summed over the cameras, and how many
    cameras' baselines are ready."""
    total = dict.fromkeys((*COUNTERS, "baseline_ready"), 0.0)
    for camera_id in manager.camera_ids():
        stream = "sub" if manager.has_sub_stream(camera_id) else "main"
        stats: dict[str, Statistic] = dict(manager.output_statistics(camera_id)[stream]["frames"])
        output = manager.output(camera_id, "analysis", AnalysisOutput)
        if output is not None:
            stats |= output.statistics()
        for name in total:
            value = stats.get(name)
            total[name] += float(value) if isinstance(value, int | float) else 0.0
    return total


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def wait_online(manager: StreamManager) -> None:
    deadline = time.monotonic() + ONLINE_TIMEOUT
    while any(manager.stats(c).state is not IngestState.ONLINE for c in manager.camera_ids()):
        if time.monotonic() > deadline:
            raise TimeoutError("not every camera came online")
        await asyncio.sleep(0.2)


async def run(args: dict[str, Any]) -> dict[str, Any]:
    manager = StreamManager(camera_specs(args["mains"], args["subs"], args["analysis"]))
    raised: list[dict[str, Any]] = []

    def on_event(camera_id: str, event: object) -> None:
        if isinstance(event, PictureRaised):
            scores = dataclasses.asdict(event.scores)
            raised.append({"camera": camera_id, "condition": event.condition.value, "scores": scores})

    manager.add_output_listener(on_event)
    await manager.start()
    try:
        await wait_online(manager)
        await asyncio.sleep(args["warmup"])
        wall, cpu, before = time.monotonic(), cpu_seconds(), counters(manager)
        await asyncio.sleep(args["window"])
        wall, cpu = time.monotonic() - wall, cpu_seconds() - cpu
        after = counters(manager)
        rss = psutil.Process().memory_info().rss
    finally:
        await manager.stop()
    delta = {name: after[name] - before[name] for name in COUNTERS}
    return {
        "cpu": cpu / wall,
        "rss_mb": rss / 1e6,
        "wall": wall,
        "baseline_ready": after["baseline_ready"],
        "raised": raised,
        **delta,
    }


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))))


if __name__ == "__main__":
    main()
