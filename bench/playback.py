"""Playback benchmark: MSE next to WebRTC on the same camera, per viewer and to the first picture.

Run from the checkout with the project's virtualenv::

    .venv/bin/python bench/playback.py            # full run, about 4 minutes
    .venv/bin/python bench/playback.py --quick    # a smoke run, about a minute

It encodes a 1080p25 H.264 clip (about 4 Mbit/s, keyframe every 4 s, no
B-frames) with PyAV, serves it from GStreamer's RTSP server (the test server in
``tests/``, which burns a send-time clock into every access unit as an SEI NAL
unit), and then, for each protocol in turn (WebRTC; MSE as a browser asks for
it, offering permessage-deflate; MSE without deflate), starts a fresh
``python -m vms serve`` on that one camera and attaches 1, 8 and 32 viewers from
two separate processes: lean WHEP viewers (``_viewers.py``) or WebSocket clients
of ``mse.ws`` (``_mse.py``), neither of which decodes. For each stage it prints
the service's CPU (share of one core, median of several windows) and RSS, the
frame rate each viewer received, the latency the relay adds over a direct RTSP
read of the same camera, and per protocol the cost of each extra viewer. With one
viewer watching, new viewers join at random phases of the keyframe interval and
time their first decodable picture (``_first_picture.py``). ``bench/README.md``
explains each figure.

Everything runs on 127.0.0.1; every process started here is stopped at the end,
also on Ctrl-C or an error.

Threads: one (the main thread); child processes do the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
from _fixtures import FPS, GOP, Service, free_port, make_au_file, run_bench  # noqa: E402
from _playback_report import Block, report  # noqa: E402
from _report import Stage  # noqa: E402
from _viewers import ViewerProcess  # noqa: E402
from relay import Bench, rtsp_sessions, settle_fds, split  # noqa: E402

PROTOCOLS = {
    "webrtc": ("WebRTC", "webrtc", False),
    "mse": ("MSE", "mse", True),
    "mse-plain": ("MSE no deflate", "mse", False),
}
"""Benchmark protocol: (name, what the viewers speak, whether they offer permessage-deflate).
``mse`` is what a browser does; ``mse-plain`` shows what deflate costs."""
CAMERA = "cam00"
FIRST_PICTURE_TIMEOUT = 15.0


@dataclass
class PlaybackBench(Bench):
    """The relay benchmark's sampling, with viewers of one protocol."""

    protocol: str = "webrtc"
    """What the viewers speak: ``webrtc`` or ``mse``."""

    def join(self, stage: Stage, counts: list[tuple[str, int, int]]) -> None:
        busy = [(cam, index, n) for cam, index, n in counts if n > 0]
        for cam, index, n in busy:
            self.procs[index].send("join", cam, n, self.protocol)
        for _, index, _ in busy:
            reply = self.procs[index].reply(timeout=120.0)
            self.viewer_ids[index] += reply["joined"]
            stage.join_errors += reply["errors"]


def first_pictures(bench: PlaybackBench, count: int, rng: random.Random) -> list[dict[str, Any]]:
    """``count`` timed joins from the second viewer process, each at a random phase of the GOP."""
    results = []
    for _ in range(count):
        time.sleep(rng.uniform(0.0, GOP / FPS))
        results.append(
            bench.procs[1].call(
                "first_picture",
                bench.protocol,
                CAMERA,
                FIRST_PICTURE_TIMEOUT,
                timeout=FIRST_PICTURE_TIMEOUT + 30.0,
            )
        )
    return results


def wait_viewers_gone(service: Service, protocol: str, timeout: float = 15.0) -> float | None:
    """Seconds until the service reports no viewer of ``protocol``; None if it never does."""
    start = time.monotonic()
    with httpx.Client(base_url=service.base_url, timeout=5.0) as http:
        while time.monotonic() - start < timeout:
            if service.camera(CAMERA, http)["live"][f"{protocol}_viewers"] == 0:
                return time.monotonic() - start
            time.sleep(0.2)
    return None


def wait_direct(proc: ViewerProcess, timeout: float = 15.0) -> None:
    """Until the direct RTSP reader has its first frame (it starts at the camera's next keyframe)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        direct = proc.call("sample")["direct"]
        if direct["error"]:
            raise RuntimeError(f"direct RTSP reader failed: {direct['error']}")
        if direct["frames"]:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the direct RTSP reader had no frame in {timeout:.0f} s")


def run_protocol(
    args: argparse.Namespace,
    protocol: str,
    procs: list[ViewerProcess],
    gst: psutil.Process,
    rtsp_port: int,
    workdir: Path,
    port: int,
    rng: random.Random,
    say: Any,
) -> Block:
    """One protocol's stages on a fresh service: ingest only, then each viewer count."""
    name, wire, deflate = PROTOCOLS[protocol]
    block = Block(wire, name, deflate=deflate)
    home = workdir / protocol
    home.mkdir()
    service = Service(home, port, rtsp_port, 1, max(args.viewers) + 4)
    try:
        say(f"{name}: starting the service ...")
        service.start()
        for proc in procs:
            proc.call("headers", service.headers, timeout=60.0)
            proc.call("mse_options", service.browser_headers, deflate, timeout=60.0)
        if service.not_ready is not None:
            block.notes.append(f"/readyz was not 200 with the camera online: {service.not_ready}")
        if service.session_cookie:
            block.auth = "session cookie"
        else:
            block.auth = "API token" if service.headers else "no login"
        bench = PlaybackBench(args, procs, gst, rtsp_port, service, [[] for _ in procs], wire)
        svc = service.psutil
        block.threads_before, block.fds_before = svc.num_threads(), svc.num_fds()
        baseline = Stage(f"{name}: ingest only", 0, 1)
        say(f"{name}: measuring the service with no viewer ...")
        bench.measure(baseline, max(2, args.windows // 2))
        block.stages.append(baseline)
        for n in args.viewers:
            stage = Stage(f"{name}: {n} viewer{'s' if n != 1 else ''}", n, 1)
            want = split(n, len(procs)) if n > 1 else [1, 0]
            say(f"{name}: {n} viewers: joining ...")
            t0 = time.monotonic()
            have = [len(ids) for ids in bench.viewer_ids]
            bench.join(stage, [(CAMERA, i, want[i] - have[i]) for i in range(len(procs))])
            say(f"  joined in {time.monotonic() - t0:.1f} s; measuring ...")
            bench.measure(stage, args.windows)
            block.stages.append(stage)
            if n == args.viewers[0] and args.first_joins:
                say(f"{name}: first picture, {args.first_joins} joins at random phases of the GOP ...")
                block.first = first_pictures(bench, args.first_joins, rng)
        bench.leave_all()
        block.gone_s = wait_viewers_gone(service, wire)
        block.sessions_after = rtsp_sessions(svc, rtsp_port)
        block.fds_after, _ = settle_fds(svc, block.fds_before, timeout=args.settle)
        block.threads_after = svc.num_threads()
    finally:
        service.stop()
    count, lines = service.log_problems()
    if count:
        block.notes.append(f"the service logged {count} warnings/errors, e.g.:")
        block.notes += [f"  {line}" for line in lines]
    return block


def run(args: argparse.Namespace, out: Any) -> dict[str, Any]:
    from tests.rtsp_fixtures import RtspTestServer

    rng = random.Random(args.seed)
    results: dict[str, Any] = {"load_before": os.getloadavg(), "blocks": []}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="playback-bench-")))
        say = _sayer(out)
        say(f"encoding {args.seconds:.0f} s of {args.size} H.264 at {args.kbps} kbit/s ...")
        width, height = (int(v) for v in args.size.split("x"))
        au_file = workdir / "clip.au"
        mbps = make_au_file(au_file, width, height, args.kbps, int(args.seconds * FPS))
        results["clip"] = {"size": args.size, "mbps": mbps, "fps": FPS, "gop_s": GOP / FPS}
        rtsp = RtspTestServer(au_files={CAMERA: au_file})
        stack.callback(rtsp.stop)
        rtsp.start()
        assert rtsp._proc is not None
        gst = psutil.Process(rtsp._proc.pid)
        port = free_port()
        procs = [ViewerProcess(f"http://127.0.0.1:{port}") for _ in range(2)]
        for proc in procs:
            stack.callback(proc.stop)
        for proc in procs:
            proc.call("ping", timeout=60.0)
        procs[0].call("direct", rtsp.url(CAMERA))
        wait_direct(procs[0])
        for protocol in args.protocols:
            block = run_protocol(args, protocol, procs, gst, rtsp.port, workdir, port, rng, say)
            results["blocks"].append(block)
    results["load_after"] = os.getloadavg()
    return results


def _sayer(out: Any) -> Any:
    start = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - start:6.1f} s] {text}", file=out, flush=True)

    return say


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="WebRTC and MSE, 1 and 8 viewers, short windows, 2 joins"
    )
    parser.add_argument("--viewers", help="viewer counts (default 1,8,32)")
    parser.add_argument(
        "--protocols",
        help=f"in this order (default {','.join(PROTOCOLS)}; --quick: webrtc,mse); mse offers "
        "permessage-deflate as browsers do, mse-plain does not",
    )
    parser.add_argument("--size", default="1920x1080", help="picture size of the clip")
    parser.add_argument("--kbps", type=int, default=4000, help="bitrate of the clip")
    parser.add_argument("--seconds", type=float, default=8.0, help="clip length, looped")
    parser.add_argument("--windows", type=int, help="sampling windows per stage (default 5)")
    parser.add_argument("--window", type=float, help="seconds per window (default 2)")
    parser.add_argument("--warmup", type=float, help="seconds before the first window (default 3)")
    parser.add_argument("--first-joins", type=int, help="first-picture joins per protocol (default 6)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    quick = args.quick
    args.viewers = [int(v) for v in (args.viewers or ("1,8" if quick else "1,8,32")).split(",")]
    protocols = args.protocols or ("webrtc,mse" if quick else ",".join(PROTOCOLS))
    args.protocols = [p.strip().lower() for p in protocols.split(",") if p.strip()]
    unknown = set(args.protocols) - set(PROTOCOLS)
    if unknown:
        parser.error(f"unknown protocol(s): {', '.join(sorted(unknown))}; choose from {', '.join(PROTOCOLS)}")
    args.windows = args.windows or (3 if quick else 5)
    args.window = args.window or (1.5 if quick else 2.0)
    args.warmup = args.warmup if args.warmup is not None else (1.5 if quick else 3.0)
    args.first_joins = args.first_joins if args.first_joins is not None else (2 if quick else 6)
    args.settle = 2.0 if quick else 5.0  # seconds the service's descriptors get to fall back
    return args


def main(argv: list[str] | None = None) -> int:
    return run_bench(_parse_args(argv), run, report, _raw)


def _raw(results: dict[str, Any]) -> dict[str, Any]:
    raw = dict(results)
    raw["blocks"] = [dict(b.__dict__, stages=[s.__dict__ for s in b.stages]) for b in results["blocks"]]
    return raw


if __name__ == "__main__":
    sys.exit(main())
