"""Soak benchmark: does the service give back its memory, descriptors, tasks and threads?

Run from the checkout with the project's virtualenv::

    .venv/bin/python bench/soak.py             # 1000 + 1000 cycles, 30 minutes of 16 cameras: 40 min
    .venv/bin/python bench/soak.py --quick     # 100 + 100 cycles, 2 minutes: under 5 minutes

It encodes H.264 clips with PyAV, serves them from GStreamer's RTSP server (the
test server in ``tests/``), starts ``python -m vms serve`` and runs three phases,
each from a baseline taken after a warm-up (see ``bench/README.md``):

1. WebRTC: viewers join one camera by WHEP and leave again, ``--batch`` at a time
   (lean aiortc peers of ``_viewers.py``, from two processes), ``--webrtc`` cycles;
2. MSE: the same with WebSocket viewers of ``mse.ws``, ``--mse`` cycles;
3. a fresh service with ``--cameras`` cameras whose viewers (WebRTC and MSE
   mixed) come and go at random for ``--minutes``.

It samples the service process over time (RSS, open descriptors and threads with
psutil; asyncio tasks, Python threads and viewers from its ``/metrics``), prints
a table as it goes and a summary per phase: RSS before the viewers, its peak,
after they left and a settle period, and the ratio after/before. A WARNING is
printed when RSS after is more than 10 % above before.

Everything runs on 127.0.0.1; every process started here is stopped at the end,
also on Ctrl-C or an error.

Threads: one (the main thread); child processes do the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from _fixtures import FPS as CLIP_FPS  # noqa: E402
from _fixtures import Service, free_port, make_au_file, run_bench  # noqa: E402
from _viewers import ViewerProcess  # noqa: E402
from relay import split  # noqa: E402

TOLERANCE = 0.10
"""RSS after the viewers left may be this much above the baseline before a WARNING."""
GONE_TIMEOUT = 20.0
HEADER = (
    f"{'phase':<8} {'t s':>6} {'cycles':>6} {'viewers':>7} {'RSS MB':>7} {'fds':>5} {'thr':>4} {'tasks':>5}"
)


@dataclass
class Sample:
    t: float
    """Seconds since the phase began."""
    cycles: int
    viewers: int
    """Viewers the service counted (WebRTC + MSE + MJPEG), from /metrics."""
    rss_mb: float
    fds: int
    threads: int
    """Native threads of the process (psutil)."""
    tasks: int | None
    py_threads: int | None

    def row(self, phase: str) -> str:
        tasks = "-" if self.tasks is None else str(self.tasks)
        return (
            f"{phase:<8} {self.t:6.0f} {self.cycles:6d} {self.viewers:7d} {self.rss_mb:7.1f} "
            f"{self.fds:5d} {self.threads:4d} {tasks:>5}"
        )


@dataclass
class Phase:
    name: str
    before: Sample | None = None
    after: Sample | None = None
    samples: list[Sample] = field(default_factory=list)
    cycles: int = 0
    join_errors: list[str] = field(default_factory=list)
    frames: int = 0
    """Access units (WebRTC) or fragments (MSE) the viewers received: media really flowed."""
    seconds: float = 0.0

    @property
    def peak_mb(self) -> float:
        return max([s.rss_mb for s in self.samples], default=0.0)


class Probe:
    """Samples the service: psutil for the process, ``/metrics`` for what only it knows."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.proc = service.psutil
        self.http = httpx.Client(base_url=service.base_url, timeout=5.0)

    def metrics(self) -> dict[str, float]:
        """Unlabelled gauges, plus ``viewers``: the sum of ``hallwatch_viewers`` over cameras."""
        figures: dict[str, float] = {"viewers": 0.0}
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name, _, number = line.rpartition(" ")
            if name.startswith("hallwatch_viewers{"):
                figures["viewers"] += float(number)
            elif "{" not in name:
                figures[name] = float(number)
        return figures

    def sample(self, start: float, cycles: int) -> Sample:
        figures = self.metrics()
        tasks = figures.get("hallwatch_event_loop_tasks")
        py_threads = figures.get("hallwatch_python_threads")
        with self.proc.oneshot():
            return Sample(
                t=time.monotonic() - start,
                cycles=cycles,
                viewers=int(figures["viewers"]),
                rss_mb=self.proc.memory_info().rss / 2**20,
                fds=self.proc.num_fds(),
                threads=self.proc.num_threads(),
                tasks=None if tasks is None else int(tasks),
                py_threads=None if py_threads is None else int(py_threads),
            )

    def settle(self, phase: Phase, start: float, seconds: float, say: Any) -> Sample:
        """Until the service counts no viewer, then ``seconds`` more; the last sample."""
        deadline = time.monotonic() + GONE_TIMEOUT
        sample = self.sample(start, phase.cycles)
        while sample.viewers and time.monotonic() < deadline:
            time.sleep(0.5)
            sample = self.sample(start, phase.cycles)
        if sample.viewers:
            say(f"WARNING: the service still counts {sample.viewers} viewers {GONE_TIMEOUT:.0f} s later")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            sample = self.sample(start, phase.cycles)
        phase.samples.append(sample)
        return sample

    def close(self) -> None:
        self.http.close()


class Viewers:
    """Two viewer processes and the ids of the viewers each holds."""

    def __init__(self, procs: list[ViewerProcess]) -> None:
        self.procs = procs
        self.ids: list[list[str]] = [[] for _ in procs]

    def use(self, service: Service) -> None:
        for proc in self.procs:
            proc.call("headers", service.headers, timeout=60.0)
            proc.call("mse_options", service.browser_headers, True, timeout=60.0)

    def join(self, wanted: list[tuple[int, str, int, str]], phase: Phase) -> None:
        """``wanted``: (process index, camera, how many, protocol); all sent, then all answered."""
        busy = [w for w in wanted if w[2] > 0]
        for index, cam, n, protocol in busy:
            self.procs[index].send("join", cam, n, protocol)
        for index, *_ in busy:
            reply = self.procs[index].reply(timeout=180.0)
            self.ids[index] += reply["joined"]
            phase.join_errors += reply["errors"]

    def count_frames(self) -> int:
        """Units received since the last count, over every viewer."""
        for proc in self.procs:
            proc.send("sample")
        total = 0
        for proc in self.procs:
            total += sum(v["frames"] for v in proc.reply(timeout=60.0)["viewers"].values())
        return total

    def drop(self, index: int, ids: list[str]) -> None:
        gone = set(ids)
        self.ids[index] = [vid for vid in self.ids[index] if vid not in gone]
        self.procs[index].call("drop", ids, timeout=120.0)

    def leave_all(self) -> None:
        for proc in self.procs:
            proc.send("leave")
        for proc in self.procs:
            proc.reply(timeout=180.0)
        self.ids = [[] for _ in self.procs]

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.ids)


def warm_up(viewers: Viewers, cams: list[str], per_camera: int, phase: Phase, hold: float) -> None:
    """``per_camera`` WebRTC and as many MSE viewers join each camera, watch, and leave: what the
    service sets up once (imports, codecs, TLS and SRTP, its database connections, worker
    threads) is then in place before the baseline."""
    wanted: list[tuple[int, str, int, str]] = []
    for cam in cams:
        for i, n in enumerate(split(per_camera, len(viewers.procs))):
            wanted += [(i, cam, n, "webrtc"), (len(viewers.procs) - 1 - i, cam, n, "mse")]
    viewers.join(wanted, phase)
    time.sleep(hold)
    viewers.count_frames()
    viewers.leave_all()
    phase.join_errors.clear()  # a warm-up failure shows again in the phase proper


def cycles_phase(
    name: str, protocol: str, total: int, args: argparse.Namespace, probe: Probe, viewers: Viewers, say: Any
) -> Phase:
    """``total`` viewers of ``cam00`` join and leave, ``args.batch`` at a time."""
    phase = Phase(name)
    start = time.monotonic()
    phase.before = probe.sample(start, 0)
    phase.samples.append(phase.before)
    say(phase.before.row(name))
    last_row = time.monotonic()
    while phase.cycles < total:
        n = min(args.batch, total - phase.cycles)
        viewers.join([(i, "cam00", k, protocol) for i, k in enumerate(split(n, len(viewers.procs)))], phase)
        time.sleep(args.hold)
        phase.frames += viewers.count_frames()
        sample = probe.sample(start, phase.cycles + n)  # with the batch watching: the peak
        phase.samples.append(sample)
        viewers.leave_all()
        phase.cycles += n
        if time.monotonic() - last_row >= args.every or phase.cycles >= total:
            say(sample.row(name))
            last_row = time.monotonic()
    phase.after = probe.settle(phase, start, args.settle, say)
    phase.seconds = time.monotonic() - start
    say(phase.after.row(name) + "  (after)")
    return phase


def churn_phase(
    args: argparse.Namespace, probe: Probe, viewers: Viewers, cameras: list[str], say: Any
) -> Phase:
    """Viewers of every camera, WebRTC and MSE, come and go at random for ``args.minutes``."""
    name = "multi"
    phase = Phase(name)
    rng = random.Random(args.seed)
    target = len(cameras) * args.per_camera
    start = time.monotonic()
    phase.before = probe.sample(start, 0)
    phase.samples.append(phase.before)
    say(phase.before.row(name))
    last_row = time.monotonic()
    end = start + args.minutes * 60
    while time.monotonic() < end:
        for index in range(len(viewers.procs)):  # some leave ...
            ids = viewers.ids[index]
            leaving = rng.sample(ids, min(len(ids), args.churn // len(viewers.procs)))
            if leaving:
                viewers.drop(index, leaving)
        wanted = [  # ... and others join, until the target is met again
            (rng.randrange(len(viewers.procs)), rng.choice(cameras), 1, rng.choice(("webrtc", "mse")))
            for _ in range(target - viewers.count)
        ]
        viewers.join(wanted, phase)
        phase.cycles += len(wanted)
        time.sleep(max(0.0, min(args.step, end - time.monotonic())))
        phase.frames += viewers.count_frames()
        sample = probe.sample(start, phase.cycles)
        phase.samples.append(sample)
        if time.monotonic() - last_row >= args.every:
            say(sample.row(name))
            last_row = time.monotonic()
    viewers.leave_all()
    phase.after = probe.settle(phase, start, args.settle, say)
    phase.seconds = time.monotonic() - start
    say(phase.after.row(name) + "  (after)")
    return phase


def run(args: argparse.Namespace, say: Any) -> list[Phase]:
    from tests.rtsp_fixtures import RtspTestServer

    phases: list[Phase] = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-bench-")))
        width, height = (int(v) for v in args.size.split("x"))
        say(f"encoding {args.seconds:.0f} s of {args.size} H.264 at {args.kbps} kbit/s ...")
        main_clip = workdir / "clip.au"
        make_au_file(main_clip, width, height, args.kbps, int(args.seconds * CLIP_FPS))
        cameras = [f"cam{i:02d}" for i in range(max(1, args.cameras))]
        multi_clip = main_clip
        if args.cameras and args.minutes > 0 and args.multi_size != args.size:
            mw, mh = (int(v) for v in args.multi_size.split("x"))
            say(f"encoding {args.multi_size} at {args.multi_kbps} kbit/s for the {args.cameras} cameras ...")
            multi_clip = workdir / "multi.au"
            make_au_file(multi_clip, mw, mh, args.multi_kbps, int(args.seconds * CLIP_FPS))
        files = {cam: (main_clip if cam == "cam00" else multi_clip) for cam in cameras}
        rtsp = RtspTestServer(au_files=files)
        stack.callback(rtsp.stop)
        rtsp.start()
        port = free_port()
        procs = [ViewerProcess(f"http://127.0.0.1:{port}") for _ in range(2)]
        for proc in procs:
            stack.callback(proc.stop)
        for proc in procs:
            proc.call("ping", timeout=60.0)
        viewers = Viewers(procs)

        if args.webrtc or args.mse:
            service = Service(workdir, port, rtsp.port, 1, args.batch + 4)
            stack.callback(service.stop)
            say("starting the service with 1 camera ...")
            service.start()
            viewers.use(service)
            probe = Probe(service)
            stack.callback(probe.close)
            warm = Phase("warm-up")
            say(f"warm-up: {args.batch} WebRTC and {args.batch} MSE viewers join and leave ...")
            warm_up(viewers, ["cam00"], args.batch, warm, args.hold)
            probe.settle(warm, time.monotonic(), args.settle, say)
            say(HEADER)
            for name, protocol, total in (("webrtc", "webrtc", args.webrtc), ("mse", "mse", args.mse)):
                if total:
                    phases.append(cycles_phase(name, protocol, total, args, probe, viewers, say))
            service.stop()
            _note_log(service, phases[-1] if phases else None)

        if args.cameras and args.minutes > 0:
            multi = Service(workdir, port, rtsp.port, args.cameras, args.per_camera * 4 + 4)
            stack.callback(multi.stop)
            say(f"starting the service with {args.cameras} cameras ...")
            multi.start()
            viewers.use(multi)
            probe = Probe(multi)
            stack.callback(probe.close)
            warm = Phase("warm-up")
            say("warm-up: one WebRTC and one MSE viewer of each camera join and leave ...")
            warm_up(viewers, multi.cameras, 1, warm, args.hold)
            probe.settle(warm, time.monotonic(), args.settle, say)
            say(HEADER)
            phases.append(churn_phase(args, probe, viewers, multi.cameras, say))
            multi.stop()
            _note_log(multi, phases[-1])
    return phases


def _note_log(service: Service, phase: Phase | None) -> None:
    count, lines = service.log_problems()
    if count and phase is not None:
        phase.join_errors += [f"service log: {count} warnings/errors, e.g. {line}" for line in lines[:3]]


def report(phases: list[Phase], args: argparse.Namespace) -> str:
    out = [
        "",
        f"Soak: RSS in MB before (after a warm-up), peak, after the viewers left (+{args.settle:.0f} s)",
        f"{'phase':<8} {'cycles':>6} {'min':>5} {'units':>8} {'before':>7} {'peak':>7} {'after':>7} "
        f"{'after/before':>12}  {'fds':>9} {'threads':>9} {'tasks':>9}",
    ]
    warnings = []
    for p in phases:
        assert p.before is not None and p.after is not None
        b, a = p.before, p.after
        ratio = a.rss_mb / b.rss_mb
        out.append(
            f"{p.name:<8} {p.cycles:6d} {p.seconds / 60:5.1f} {p.frames:8d} {b.rss_mb:7.1f} {p.peak_mb:7.1f} "
            f"{a.rss_mb:7.1f} {ratio:12.3f}  {b.fds:4d}>{a.fds:<4d} {b.threads:4d}>{a.threads:<4d} "
            f"{_n(b.tasks):>4}>{_n(a.tasks):<4}"
        )
        if ratio > 1 + TOLERANCE:
            warnings.append(
                f"WARNING: {p.name}: RSS after the viewers left is {(ratio - 1) * 100:.0f} % above "
                f"before ({a.rss_mb:.1f} MB against {b.rss_mb:.1f} MB; tolerance {TOLERANCE * 100:.0f} %)"
            )
        for what, x, y in (("fds", b.fds, a.fds), ("threads", b.threads, a.threads)):
            if y > x + max(4, x // 10):
                warnings.append(f"WARNING: {p.name}: {what} {x} before, {y} after the viewers left")
        if b.tasks is not None and a.tasks is not None and a.tasks > b.tasks + 4:
            warnings.append(f"WARNING: {p.name}: event-loop tasks {b.tasks} before, {a.tasks} after")
        if p.frames == 0:
            warnings.append(f"WARNING: {p.name}: the viewers received no video at all")
        if p.join_errors:
            warnings.append(f"{p.name}: {len(p.join_errors)} join errors/notes, e.g. {p.join_errors[0]}")
    return "\n".join(out + warnings)


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def _sayer(out: Any) -> Any:
    start = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - start:6.1f} s] {text}", file=out, flush=True)

    return say


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100 + 100 cycles, 2 minutes of cameras")
    parser.add_argument("--webrtc", type=int, help="WebRTC join/leave cycles (default 1000; 0 skips)")
    parser.add_argument("--mse", type=int, help="MSE join/leave cycles (default 1000; 0 skips)")
    parser.add_argument("--minutes", type=float, help="multi-camera phase length (default 30; 0 skips)")
    parser.add_argument("--cameras", type=int, default=16, help="cameras in the multi-camera phase")
    parser.add_argument("--per-camera", type=int, default=2, help="viewers per camera there, on average")
    parser.add_argument("--churn", type=int, default=4, help="viewers replaced at each step there")
    parser.add_argument("--step", type=float, default=2.0, help="seconds between steps there")
    parser.add_argument("--batch", type=int, default=8, help="viewers joining at once in the cycles")
    parser.add_argument("--hold", type=float, default=1.0, help="seconds a batch watches before leaving")
    parser.add_argument(
        "--settle", type=float, default=30.0, help="seconds after the viewers left (past the follow-up trim)"
    )
    parser.add_argument("--every", type=float, default=15.0, help="seconds between printed rows")
    parser.add_argument("--size", default="1920x1080", help="picture size of cam00")
    parser.add_argument("--kbps", type=int, default=4000, help="bitrate of cam00")
    parser.add_argument("--multi-size", default="1280x720", help="picture size of the other cameras")
    parser.add_argument("--multi-kbps", type=int, default=1500, help="bitrate of the other cameras")
    parser.add_argument("--seconds", type=float, default=8.0, help="clip length, looped")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    quick = args.quick
    args.webrtc = args.webrtc if args.webrtc is not None else (100 if quick else 1000)
    args.mse = args.mse if args.mse is not None else (100 if quick else 1000)
    args.minutes = args.minutes if args.minutes is not None else (2.0 if quick else 30.0)
    if args.batch < 1 or args.per_camera < 1 or args.cameras < 0:
        parser.error("--batch and --per-camera must be at least 1, --cameras at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)

    def raw(phases: list[Any]) -> dict[str, Any]:
        return {"args": {k: str(v) for k, v in vars(args).items()}, "phases": [asdict(p) for p in phases]}

    return run_bench(args, lambda args, err: run(args, _sayer(err)), report, raw)


if __name__ == "__main__":
    sys.exit(main())
