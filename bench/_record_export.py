"""``bench/record.py --export``: how fast an export is made, and what it does to live viewers.

One service with ``--live`` RTSP cameras (the test server's 1080p clip with the
SEI clock of ``relay.py``), ``--per-camera`` WebRTC viewers each (the lean aiortc
viewers of ``_viewers.py``, in a child process) and a direct RTSP reader of
``cam00`` as the latency reference, plus one file camera whose recording is
made up front: ``--export-minutes`` + 2 minutes of the ``--overhead`` clip (about
4 Mbit/s) written by the recorder's segmenter and writer an hour back, and
indexed (:mod:`bench._record_segments`).

Windows of ``--window`` seconds alternate, ``--rounds`` times: **idle**, then
**export**, in which exports of ``--export-minutes`` of that camera are made one
after the other through the real API (``POST /api/v1/exports``, then
``GET /api/v1/exports/{id}`` every 50 ms until it is ready), each time after the
segment files were evicted from the page cache (an export of yesterday reads
the disk); each export file is deleted once ready. Per window: the viewers'
latency (camera clock to arrival), the direct reader's, and how long
``GET /healthz`` takes (a thread asks every 50 ms: the event loop's lag as a
client sees it), and the service's CPU. Per export: MB/s of the file made, from
the POST to ``ready``.

Blocking code for the benchmark's main thread, plus the ``/healthz`` thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median, quantiles
from typing import Any

import httpx

from bench._fixtures import FPS, Service, free_port, make_au_file
from bench._record_overhead import cached_clip
from bench._record_segments import clip_units, drop_from_cache, info_row, insert_rows, write_recording
from bench._viewers import ViewerProcess

SEGMENT_SECONDS = 300
AU_SECONDS = 8


@dataclass
class Window:
    kind: str
    seconds: float = 0.0
    viewers: list[float] = field(default_factory=list)
    direct: list[float] = field(default_factory=list)
    healthz: list[float] = field(default_factory=list)
    cpu: float = 0.0
    frames: int = 0
    """Access units the viewers received, all together."""
    lost: int = 0
    """RTP packets the viewers missed, all together."""
    exports: list[tuple[int, float]] = field(default_factory=list)
    """(bytes, seconds from POST to ready) of each export made in the window."""


class HealthProbe:
    """A thread that times ``GET /healthz`` every ``interval`` seconds until stopped."""

    def __init__(self, base_url: str, interval: float = 0.05) -> None:
        self.base_url = base_url
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        """(monotonic time sent, seconds to the answer)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz", daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=5.0) as http:
            while not self._stop.wait(self.interval):
                sent = time.monotonic()
                with contextlib.suppress(httpx.HTTPError):
                    http.get("/healthz").raise_for_status()
                    self.samples.append((sent, time.monotonic() - sent))

    def between(self, start: float, end: float) -> list[float]:
        return [took for sent, took in self.samples if start <= sent < end]

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10.0)


def _export_once(
    http: httpx.Client, service: Service, camera: str, start: datetime, minutes: float
) -> tuple[int, float]:
    """One export through the API; (bytes, seconds from the POST to ready). Its files are deleted."""
    body = {
        "camera_id": camera,
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=minutes)).isoformat(),
        "reason": "benchmark",
    }
    sent = time.monotonic()
    response = http.post("/api/v1/exports", json=body, headers=service.headers)
    response.raise_for_status()
    export_id = response.json()["id"]
    deadline = sent + 600.0
    while time.monotonic() < deadline:
        row = http.get(f"/api/v1/exports/{export_id}", headers=service.headers).json()
        if row["status"] == "ready":
            took = time.monotonic() - sent
            for path in (service.data_dir / "exports").glob(f"*{export_id}*"):
                path.unlink()
            return int(row["bytes"]), took
        if row["status"] == "failed":
            raise RuntimeError(f"export {export_id} failed: {row['error']}")
        time.sleep(0.05)
    raise RuntimeError(f"export {export_id} was not ready in 10 minutes")


def _sample(procs: list[ViewerProcess]) -> list[dict[str, Any]]:
    for proc in procs:
        proc.send("sample")
    return [proc.reply(timeout=60.0) for proc in procs]


def _window(
    kind: str, args: Any, service: Service, procs: list[ViewerProcess], probe: HealthProbe, export: Any
) -> Window:
    window = Window(kind)
    svc = service.psutil
    _sample(procs)  # resets the viewers' counters
    start, cpu = time.monotonic(), sum(svc.cpu_times()[:2])
    end = start + args.window
    with httpx.Client(base_url=service.base_url, timeout=10.0) as http:
        while time.monotonic() < end:
            if kind == "export":
                window.exports.append(export(http))
            else:
                time.sleep(max(0.0, end - time.monotonic()))
    window.seconds = time.monotonic() - start
    window.cpu = (sum(svc.cpu_times()[:2]) - cpu) / window.seconds
    for sample in _sample(procs):
        for got in sample["viewers"].values():
            window.viewers += got["latencies"]
            window.frames += got["frames"]
            window.lost += got["lost"]
        if sample["direct"] is not None:
            window.direct += sample["direct"]["latencies"]
    window.healthz = probe.between(start, start + window.seconds)
    return window


def run_export(args: Any, say: Any) -> str:
    from tests.rtsp_fixtures import RtspTestServer

    width, height = (int(v) for v in args.size.split("x"))
    clip, mbps = cached_clip(width, height, args.kbps, say)
    windows: list[Window] = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="record-export-")))
        say(f"encoding {AU_SECONDS} s of {args.size} for the live RTSP cameras ...")
        au_file = workdir / "live.au"
        make_au_file(au_file, width, height, args.kbps, AU_SECONDS * FPS)
        live = [f"cam{i:02d}" for i in range(args.live)]
        rtsp = RtspTestServer(au_files=dict.fromkeys(live, au_file))
        stack.callback(rtsp.stop)
        rtsp.start()
        port = free_port()
        urls = [rtsp.url(cam) for cam in live] + [clip.as_uri()]
        service = Service(
            workdir, port, rtsp.port, args.live + 1, args.per_camera + 2, urls=urls,
            extra={"recording": {"record": False}}, label="export",
        )  # fmt: skip
        stack.callback(service.stop)
        recorded = service.cameras[-1]
        say(f"starting the service ({args.live} RTSP cameras, 1 file camera) ...")
        service.start()
        start = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
        seconds = args.export_minutes * 60 + 120
        say(f"recording {seconds / 60:.0f} minutes of {recorded} an hour back, and indexing it ...")
        root = service.data_dir / "recordings"
        infos = asyncio.run(
            write_recording(root, recorded, start, seconds, SEGMENT_SECONDS, clip_units(clip))
        )
        asyncio.run(insert_rows(service.data_dir, [info_row(info, root) for info in infos]))

        def export(http: httpx.Client) -> tuple[int, float]:
            for info in infos:
                drop_from_cache(info.path)
            return _export_once(http, service, recorded, start + timedelta(seconds=30), args.export_minutes)

        procs = [ViewerProcess(service.base_url)]
        stack.callback(procs[0].stop)
        procs[0].call("ping", timeout=60.0)
        procs[0].call("headers", service.headers)
        procs[0].call("direct", rtsp.url("cam00"))
        for cam in live:
            reply = procs[0].call("join", cam, args.per_camera, timeout=120.0)
            if reply["errors"]:
                raise RuntimeError(f"viewers of {cam} could not join: {reply['errors'][0]}")
        say(f"{args.live * args.per_camera} viewers joined; warm-up {args.warmup:.0f} s ...")
        time.sleep(args.warmup)
        with HealthProbe(service.base_url) as probe:
            for round_ in range(args.rounds):
                for kind in ("idle", "export"):
                    windows.append(_window(kind, args, service, procs, probe, export))
                    w = windows[-1]
                    say(
                        f"round {round_ + 1} {kind}: viewers p50 {_q(w.viewers, 50):.0f} ms, "
                        f"healthz p50 {_q(w.healthz, 50) * 1000:.1f} ms, CPU {w.cpu * 100:.0f} %"
                        + (f", {len(w.exports)} exports" if w.exports else "")
                    )
        count, seen = service.log_problems()
    return _report(args, mbps, windows, count, seen)


def _q(values: list[float], percent: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return quantiles(values, n=100, method="inclusive")[percent - 1]


def _report(args: Any, mbps: float, windows: list[Window], count: int, seen: list[str]) -> str:
    exports = [e for w in windows for e in w.exports]
    rates = [size / took / 1e6 for size, took in exports]
    viewers = args.live * args.per_camera
    lines = [
        "",
        f"Export: {args.export_minutes:g} minutes of a {mbps:.2f} Mbit/s camera ({args.size}), files evicted "
        f"from the page cache before each; {args.live} live RTSP cameras x {args.per_camera} WebRTC viewers",
    ]
    if exports:
        lines.append(
            f"{len(exports)} exports of {median(s for s, _ in exports) / 1e6:.0f} MB: median "
            f"{median(t for _, t in exports):.2f} s from POST to ready, {median(rates):.0f} MB/s "
            f"(range {min(rates):.0f}-{max(rates):.0f})"
        )
    lines.append(
        f"{'windows':<8} {'s':>5} {'view p50':>8} {'p90':>6} {'direct p50':>10} {'p90':>6} "
        f"{'added p50':>9} {'p90':>6} {'healthz p50':>11} {'p90':>6} {'max':>6} {'CPU':>5} "
        f"{'fps':>5} {'lost':>5}"
    )
    for kind in ("idle", "export"):
        ws = [w for w in windows if w.kind == kind]
        view = [v for w in ws for v in w.viewers]
        direct = [v for w in ws for v in w.direct]
        health = [v * 1000 for w in ws for v in w.healthz]
        fps = sum(w.frames for w in ws) / sum(w.seconds for w in ws) / viewers
        lines.append(
            f"{kind:<8} {sum(w.seconds for w in ws):5.0f} {_q(view, 50):8.0f} {_q(view, 90):6.0f} "
            f"{_q(direct, 50):10.0f} {_q(direct, 90):6.0f} {_q(view, 50) - _q(direct, 50):9.0f} "
            f"{_q(view, 90) - _q(direct, 90):6.0f} {_q(health, 50):11.1f} {_q(health, 90):6.1f} "
            f"{max(health, default=float('nan')):6.1f} {100 * median(w.cpu for w in ws):4.0f}% "
            f"{fps:5.1f} {sum(w.lost for w in ws):5d}"
        )
    lines.append(
        "   (latency in ms, camera clock to arrival; healthz in ms; CPU: the service, one core; "
        "fps per viewer; RTP packets lost)"
    )
    if count:
        lines.append(f"the service logged {count} warnings/errors, e.g. {seen[0]}")
    return "\n".join(lines)
