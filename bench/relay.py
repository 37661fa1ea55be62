"""Relay benchmark: what one Hallwatch process costs per WebRTC viewer, measured end to end.

Run from the checkout with the project's virtualenv::

    .venv/bin/python bench/relay.py            # full run, about 2-3 minutes
    .venv/bin/python bench/relay.py --quick    # a smoke run, under a minute

It encodes a 1080p25 H.264 clip (about 4 Mbit/s, keyframe every 4 s, no
B-frames) with PyAV, serves it from GStreamer's RTSP server (the test server in
``tests/``, which burns a send-time clock into every access unit as an SEI NAL
unit), starts ``python -m vms serve`` on a generated config, and attaches lean
WebRTC viewers (``_viewers.py``, ``_units.py``) from two separate processes. It prints, for
1, 8 and 32 viewers of one camera and for 16 cameras with 2 viewers each: the
service's CPU (share of one core, median of several windows) and RSS, the frame
rate each viewer received, the latency the relay adds over a direct RTSP read of
the same camera, the late-joiner's time to first frame, and how many RTSP
sessions the service holds per camera. ``bench/README.md`` explains each figure.

Everything runs on 127.0.0.1; every process started here is stopped at the end,
also on Ctrl-C or an error.

Threads: one (the main thread); child processes do the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
from _fixtures import FPS, GOP, Primer, Service, free_port, make_au_file, run_bench  # noqa: E402
from _report import TOLERANCE_MS, Stage, report  # noqa: E402
from _viewers import ViewerProcess  # noqa: E402

# -- measuring ----------------------------------------------------------------------------------


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU of a process and its live descendants."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def run_delay(pid: int) -> float:
    """Seconds the process's main thread has waited for a CPU while runnable (Linux schedstat)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def rtsp_sessions(proc: psutil.Process, rtsp_port: int) -> int:
    """Established TCP connections from the service to the RTSP server's port."""
    count = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            count += sum(
                1
                for c in p.net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == rtsp_port
            )
    return count


@dataclass
class Bench:
    args: argparse.Namespace
    procs: list[ViewerProcess]
    gst: psutil.Process
    rtsp_port: int
    service: Service | None = None
    viewer_ids: list[list[str]] = field(default_factory=list)

    def broadcast(self, command: str, per_proc: list[tuple[Any, ...]], timeout: float = 120.0) -> list[Any]:
        busy = [(p, a) for p, a in zip(self.procs, per_proc, strict=True) if a is not None]
        for proc, args in busy:
            proc.send(command, *args)
        return [proc.reply(timeout) for proc, _ in busy]

    def join(self, stage: Stage, counts: list[tuple[str, int, int]]) -> None:
        """``counts``: (camera, process index, how many) to add."""
        for cam, index, n in counts:
            if n > 0:
                self.procs[index].send("join", cam, n)
        for cam, index, n in counts:
            if n > 0:
                reply = self.procs[index].reply(timeout=120.0)
                self.viewer_ids[index] += reply["joined"]
                stage.join_errors += reply["errors"]
                del cam

    def leave_all(self) -> None:
        self.broadcast("leave", [() for _ in self.procs])
        self.viewer_ids = [[] for _ in self.procs]

    def measure(self, stage: Stage, windows: int) -> None:
        args = self.args
        assert self.service is not None
        svc = self.service.psutil
        time.sleep(args.warmup)
        previous = self.broadcast("sample", [() for _ in self.procs])  # resets the counters
        totals: dict[str, list[float]] = {}
        direct_frames, direct_time = 0, 0.0
        for _ in range(windows):
            t0 = time.monotonic()
            c0, g0, m0 = cpu_seconds(svc), cpu_seconds(self.gst), psutil.cpu_times()
            w0 = run_delay(svc.pid)
            v0 = sum(cpu_seconds(psutil.Process(p.pid)) for p in self.procs)
            time.sleep(args.window)
            samples = self.broadcast("sample", [() for _ in self.procs])
            dt = time.monotonic() - t0
            m1 = psutil.cpu_times()
            stage.cpu.append((cpu_seconds(svc) - c0) / dt)
            stage.waited.append((run_delay(svc.pid) - w0) / dt)
            stage.gst_cpu.append((cpu_seconds(self.gst) - g0) / dt)
            stage.viewer_cpu.append((sum(cpu_seconds(psutil.Process(p.pid)) for p in self.procs) - v0) / dt)
            busy = (m1.user + m1.system + m1.softirq + m1.irq) - (m0.user + m0.system + m0.softirq + m0.irq)
            stage.machine.append(busy / dt)
            stage.rss.append(svc.memory_info().rss / 2**20)
            window: list[float] = []
            for before, now in zip(previous, samples, strict=True):
                span = now["at"] - before["at"]
                for vid, got in now["viewers"].items():
                    slot = totals.setdefault(vid, [0.0, 0.0])
                    slot[0] += got["frames"]
                    slot[1] += span
                    window += got["latencies"]
                    stage.by_camera.setdefault(vid.split("/")[0], []).extend(got["latencies"])
                    stage.lost += got["lost"]
                    stage.incomplete += got["incomplete"]
                if now["direct"] is not None:
                    direct_frames += now["direct"]["frames"]
                    direct_time += span
                    stage.direct += now["direct"]["latencies"]
                    if now["direct"]["error"]:
                        raise RuntimeError(f"direct RTSP reader failed: {now['direct']['error']}")
            stage.latencies += window
            if window:
                stage.window_p50.append(statistics.median(window))
            previous = samples
        stage.fps = {vid: frames / span for vid, (frames, span) in totals.items() if span > 0}
        stage.direct_fps = direct_frames / direct_time if direct_time else None
        stage.sessions = rtsp_sessions(svc, self.rtsp_port)
        stage.threads, stage.fds = svc.num_threads(), svc.num_fds()
        with httpx.Client(base_url=self.service.base_url, timeout=5.0) as http:
            stage.service_stats = [self.service.camera(cam, http)["live"] for cam in self.service.cameras]


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def late_joins(bench: Bench, cam: str, count: int, rng: random.Random) -> list[dict[str, Any]]:
    early = bench.viewer_ids[0][0]
    results = []
    for _ in range(count):
        time.sleep(rng.uniform(0.0, GOP / FPS))  # a random phase of the keyframe interval
        results.append(bench.procs[0].call("late_join", cam, early, 10.0, TOLERANCE_MS, timeout=60.0))
    return results


def settle_fds(proc: psutil.Process, target: int, timeout: float = 10.0) -> tuple[int, int]:
    """Open descriptors and UDP sockets once they fall to ``target`` or after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while proc.num_fds() > target and time.monotonic() < deadline:
        time.sleep(0.25)
    return proc.num_fds(), len(proc.net_connections(kind="udp"))


def wait_viewers_gone(service: Service, timeout: float = 15.0) -> float | None:
    """Seconds until the service reports no WebRTC viewer on any camera; None if it never does."""
    start = time.monotonic()
    with httpx.Client(base_url=service.base_url, timeout=5.0) as http:
        while time.monotonic() - start < timeout:
            if all(service.camera(cam, http)["live"]["webrtc_viewers"] == 0 for cam in service.cameras):
                return time.monotonic() - start
            time.sleep(0.2)
    return None


# -- the run ------------------------------------------------------------------------------------


def run(args: argparse.Namespace, out: Any) -> dict[str, Any]:
    from tests.rtsp_fixtures import RtspTestServer

    rng = random.Random(args.seed)
    results: dict[str, Any] = {"notes": []}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="relay-bench-")))
        say = _sayer(out)
        say(f"encoding {args.seconds:.0f} s of {args.size} H.264 at {args.kbps} kbit/s ...")
        width, height = (int(v) for v in args.size.split("x"))
        au_file = workdir / "clip.au"
        mbps = make_au_file(au_file, width, height, args.kbps, int(args.seconds * FPS))
        results["clip"] = {"size": args.size, "mbps": mbps, "fps": FPS, "gop_s": GOP / FPS}
        multi_file = au_file
        if args.multi_size != args.size:
            mw, mh = (int(v) for v in args.multi_size.split("x"))
            multi_file = workdir / "multi.au"
            make_au_file(multi_file, mw, mh, args.multi_kbps, int(args.seconds * FPS))
        cams = max(1, args.cameras)
        files = {f"cam{i:02d}": (au_file if i == 0 else multi_file) for i in range(cams)}
        rtsp = RtspTestServer(au_files=files)
        stack.callback(rtsp.stop)
        rtsp.start()
        assert rtsp._proc is not None
        gst = psutil.Process(rtsp._proc.pid)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        procs = [ViewerProcess(base_url) for _ in range(2)]
        for proc in procs:
            stack.callback(proc.stop)
        max_viewers = max([*args.viewers, args.per_camera]) + 4
        bench = Bench(args, procs, gst, rtsp.port, viewer_ids=[[] for _ in procs])

        service = Service(workdir, port, rtsp.port, 1, max_viewers)
        stack.callback(service.stop)
        say("starting the service with 1 camera ...")
        service.start()
        _note_service(results, service, procs)
        bench.service = service
        for proc in procs:
            proc.call("ping", timeout=60.0)
        procs[0].call("direct", rtsp.url("cam00"))
        _wait_direct(procs[0])
        svc = service.psutil
        results["threads_before"] = svc.num_threads()
        results["fds_before"] = svc.num_fds()

        stages: list[Stage] = []
        baseline = Stage("ingest only", 0, 1)
        say("measuring the service with no viewer ...")
        bench.measure(baseline, max(2, args.windows // 2))
        stages.append(baseline)
        current = [0] * len(procs)
        for n in args.viewers:
            stage = Stage(f"{n} viewer{'s' if n != 1 else ''}, 1 camera", n, 1)
            want = split(n, len(procs)) if n > 1 else [1, 0]
            say(f"{n} viewers: joining ...")
            t0 = time.monotonic()
            bench.join(stage, [("cam00", i, want[i] - current[i]) for i in range(len(procs))])
            current = [len(ids) for ids in bench.viewer_ids]
            say(f"  joined in {time.monotonic() - t0:.1f} s; measuring ...")
            bench.measure(stage, args.windows)
            stages.append(stage)
            if n == args.viewers[0] and args.late_joins:
                say(f"late viewers: {args.late_joins} joins at random phases of the keyframe interval ...")
                results["late"] = late_joins(bench, "cam00", args.late_joins, rng)
        bench.leave_all()
        results["gone_s"] = wait_viewers_gone(service)
        results["fds_after"], results["udp_after"] = settle_fds(svc, results["fds_before"])
        results["threads_after"] = svc.num_threads()
        results["sessions_after_leave"] = rtsp_sessions(svc, rtsp.port)
        service.stop()
        _log_problems(results, service, "1 camera")

        if args.cameras > 0:
            multi = Service(workdir, port, rtsp.port, args.cameras, max_viewers)
            stack.callback(multi.stop)
            primers = [Primer(rtsp.url(cam)) for cam in multi.cameras[1:]]
            for primer in primers:
                stack.callback(primer.close)
            if not args.aligned:
                say(f"spreading the cameras' keyframes over the {GOP / FPS:.0f} s interval ...")
                for primer in primers:
                    primer.open()
                    time.sleep(GOP / FPS / args.cameras)
            say(f"starting the service with {args.cameras} cameras ...")
            multi.start()
            _note_service(results, multi, procs)
            for primer in primers:
                primer.close()
            bench.service = multi
            idle = Stage(f"{args.cameras} cameras, ingest only", 0, args.cameras)
            say(f"measuring {args.cameras} cameras with no viewer ...")
            bench.measure(idle, max(2, args.windows // 2))
            stages.append(idle)
            label = f"{args.cameras} cameras x {args.per_camera} viewers"
            if args.aligned:
                label += " (keyframes aligned)"
            if args.multi_size != args.size:
                label += f" ({args.multi_size}, {args.multi_kbps} kbit/s except cam00)"
            stage = Stage(label, args.cameras * args.per_camera, args.cameras)
            say(f"{label}: joining ...")
            joins = []
            for cam in multi.cameras:
                for i, k in enumerate(split(args.per_camera, len(procs))):
                    joins.append((cam, i, k))
            _join_many(bench, stage, joins)
            say("  measuring ...")
            bench.measure(stage, args.windows)
            stages.append(stage)
            bench.leave_all()
            results["multi_gone_s"] = wait_viewers_gone(multi)
            multi.stop()
            _log_problems(results, multi, f"{args.cameras} cameras")
        results["stages"] = stages
    return results


def _note_service(results: dict[str, Any], service: Service, procs: list[ViewerProcess]) -> None:
    """Hand the service's credentials to the viewers; note a /readyz that was not 200."""
    for proc in procs:
        proc.call("headers", service.headers, timeout=60.0)
    if service.not_ready is not None:
        results["notes"].append(
            f"/readyz was not 200 with every camera online ({len(service.cameras)} cameras): "
            f"{service.not_ready}"
        )


def _log_problems(results: dict[str, Any], service: Service, label: str) -> None:
    count, lines = service.log_problems()
    if count:
        results["notes"].append(f"the service ({label}) logged {count} warnings/errors, e.g.:")
        results["notes"] += [f"  {line}" for line in lines]


def _wait_direct(proc: ViewerProcess, timeout: float = 15.0) -> None:
    """Until the direct reader has its first frame (it starts at the camera's next keyframe)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        direct = proc.call("sample")["direct"]
        if direct["error"]:
            raise RuntimeError(f"direct RTSP reader failed: {direct['error']}")
        if direct["frames"]:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the direct RTSP reader had no frame in {timeout:.0f} s")


def _join_many(bench: Bench, stage: Stage, joins: list[tuple[str, int, int]]) -> None:
    """Join per process in one command per camera, all processes in parallel, one camera at a time each."""
    queues = [[j for j in joins if j[1] == i] for i in range(len(bench.procs))]
    while any(queues):
        batch = [q.pop(0) for q in queues if q]
        bench.join(stage, batch)


def _sayer(out: Any) -> Any:
    start = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - start:6.1f} s] {text}", file=out, flush=True)

    return say


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short windows, 1 and 8 viewers, 4 cameras")
    parser.add_argument("--viewers", help="viewer counts for one camera (default 1,8,32)")
    parser.add_argument("--cameras", type=int, help="multi-camera stage size, 0 skips (default 16)")
    parser.add_argument("--per-camera", type=int, default=2, help="viewers per camera in that stage")
    parser.add_argument("--size", default="1920x1080", help="picture size of the clip")
    parser.add_argument("--kbps", type=int, default=4000, help="bitrate of the clip")
    parser.add_argument("--multi-size", help="picture size of cam01.. (default --size)")
    parser.add_argument("--multi-kbps", type=int, help="bitrate for cam01.. in the multi-camera stage")
    parser.add_argument("--seconds", type=float, default=8.0, help="clip length, looped")
    parser.add_argument("--windows", type=int, help="sampling windows per stage (default 6)")
    parser.add_argument("--window", type=float, help="seconds per window (default 2)")
    parser.add_argument("--warmup", type=float, help="seconds before the first window (default 3)")
    parser.add_argument("--late-joins", type=int, help="late viewers to time (default 6)")
    parser.add_argument(
        "--aligned", action="store_true", help="let all cameras' keyframes coincide (worst case)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    quick = args.quick
    args.viewers = [int(v) for v in (args.viewers or ("1,8" if quick else "1,8,32")).split(",")]
    args.cameras = args.cameras if args.cameras is not None else (4 if quick else 16)
    args.windows = args.windows or (3 if quick else 6)
    args.window = args.window or (1.5 if quick else 2.0)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if quick else 3.0)
    args.late_joins = args.late_joins if args.late_joins is not None else (2 if quick else 6)
    args.multi_size = args.multi_size or args.size
    args.multi_kbps = args.multi_kbps or args.kbps
    return args


def main(argv: list[str] | None = None) -> int:
    return run_bench(_parse_args(argv), run, report, _raw)


def _raw(results: dict[str, Any]) -> dict[str, Any]:
    raw = dict(results)
    raw["stages"] = [s.__dict__ for s in results["stages"]]
    return raw


if __name__ == "__main__":
    sys.exit(main())
