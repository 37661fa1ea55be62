"""Cascade benchmark: GB/T 28181 live sessions next to WebRTC viewers, RTSP re-serve clients
next to MSE viewers, and a GB/T 28181 session's INVITE to first packet, on one service.

Run from the checkout with the project's virtualenv::

    .venv/bin/python bench/cascade.py            # full run, about 10 minutes
    .venv/bin/python bench/cascade.py --quick    # a smoke run, about 2 minutes

It encodes the 1080p25 H.264 clip of ``relay.py`` (about 4 Mbit/s, a keyframe
every 100 frames = 4 s, no B-frames), serves it from GStreamer's RTSP test
server, and starts one ``python -m vms serve`` on that camera with the RTSP
re-serve on and one GB/T 28181 superior platform, the test superior of
``tests/vms/gb28181/superior.py`` run in a viewer process, which the service
registers with. Then, round after round, for 1, 8 and 32 clients, each kind in
turn (the order reversed every round, so that what else the machine does falls
on each kind alike) joins, is measured over a few windows and leaves:

* ``webrtc``: lean WHEP viewers (``_viewers.py``);
* ``gb28181``: live sessions, PS over RTP to UDP ports of 127.0.0.1
  (``_cascade_clients.py``);
* ``rtsp``: RTSP re-serve readers over TCP interleaved, Digest with an API token;
* ``mse``: WebSocket viewers of ``mse.ws``, offering permessage-deflate as browsers do.

None of them decodes: each completes access units from what it receives and
counts them (see ``bench/README.md``). Each round also measures the service with
no client. Last, GB/T 28181 sessions are opened one at a time at random phases
of the keyframe interval and the time from the INVITE (and from the ACK) to the
first RTP packet is taken. The report gives, per kind and count, the service's
CPU per client over its ingest-only CPU, RSS and the frame rate of every client,
and the ratios GB/WebRTC and RTSP/MSE of each round, against the targets.

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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from _cascade_clients import CHANNEL_ID  # noqa: E402
from _fixtures import FPS, GOP, Service, free_port, make_au_file, run_bench  # noqa: E402
from _report import Stage  # noqa: E402
from _units import median  # noqa: E402
from _viewers import ViewerProcess  # noqa: E402
from playback import PlaybackBench, _sayer  # noqa: E402
from relay import split  # noqa: E402

from tests.vms.gb28181.superior import PASSWORD, REALM, SERVER_ID  # noqa: E402

KINDS = ("webrtc", "gb28181", "rtsp", "mse")
PAIRS = (("gb28181", "webrtc", 1.5), ("rtsp", "mse", 1.0))
"""(kind, reference, the most the kind may cost per client as a multiple of the reference's)."""
CAMERA = "cam00"
LOCAL_ID = "44148100002000000001"
FULL_RATE = FPS - 0.5
FIRST_PACKET_TARGET = 0.3


def service_extra(superior_port: int, rtsp_port: int, sessions: int) -> dict[str, Any]:
    """The config sections that turn on the RTSP re-serve and the cascade to the bench's superior,
    and turn off picture analysis (a decoder per camera, the same for every kind, only noise here)."""
    return {
        "analysis": {"enabled": False},
        "rtsp_server": {"enabled": True, "bind": "127.0.0.1", "port": rtsp_port},
        "gb28181": {
            "max_sessions_total": sessions,
            "channel_ids": {CAMERA: CHANNEL_ID},
            "platforms": [
                {
                    "name": "bench",
                    "server_id": SERVER_ID,
                    "domain": REALM,
                    "host": "127.0.0.1",
                    "port": superior_port,
                    "transport": "udp",
                    "local_id": LOCAL_ID,
                    "local_host": "127.0.0.1",
                    "local_port": 0,
                    "password": PASSWORD,
                    "centre": "bench",
                    "max_sessions": sessions,
                }
            ],
        },
    }


def stage(bench: PlaybackBench, kind: str, n: int, label: str, say: Any) -> Stage:
    """``n`` clients of ``kind`` join, are measured, and leave."""
    result = Stage(label, n, 1)
    bench.protocol = kind
    want = [n, 0] if kind == "gb28181" or n == 1 else split(n, len(bench.procs))
    t0 = time.monotonic()
    bench.join(result, [(CAMERA, i, k) for i, k in enumerate(want)])
    say(f"  {label}: joined in {time.monotonic() - t0:.1f} s; measuring ...")
    bench.measure(result, bench.args.windows)
    bench.leave_all()
    time.sleep(bench.args.settle)
    return result


def first_packets(proc: ViewerProcess, count: int, rng: random.Random) -> list[dict[str, Any]]:
    """``count`` GB/T 28181 sessions one after the other, each at a random phase of the GOP."""
    results = []
    for _ in range(count):
        time.sleep(rng.uniform(0.0, GOP / FPS))
        results.append(proc.call("first_packet", CAMERA, 10.0, timeout=40.0))
    return results


def run(args: argparse.Namespace, out: Any) -> dict[str, Any]:
    from tests.rtsp_fixtures import RtspTestServer

    rng = random.Random(args.seed)
    say = _sayer(out)
    results: dict[str, Any] = {"notes": [], "stages": [], "idle": []}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cascade-bench-")))
        say(f"encoding {args.seconds:.0f} s of {args.size} H.264 at {args.kbps} kbit/s ...")
        width, height = (int(v) for v in args.size.split("x"))
        au_file = workdir / "clip.au"
        mbps = make_au_file(au_file, width, height, args.kbps, int(args.seconds * FPS))
        results["clip"] = {"size": args.size, "mbps": mbps, "gop_s": GOP / FPS}
        rtsp = RtspTestServer(au_files={CAMERA: au_file})
        stack.callback(rtsp.stop)
        rtsp.start()
        assert rtsp._proc is not None
        gst = psutil.Process(rtsp._proc.pid)
        port = free_port()
        procs = [ViewerProcess(f"http://127.0.0.1:{port}") for _ in range(2)]
        for proc in procs:
            stack.callback(proc.stop)
        superior_port = procs[0].call("cascade_start", timeout=60.0)
        procs[1].call("ping", timeout=60.0)
        most = max(args.counts)
        rtsp_port = free_port()
        extra = service_extra(superior_port, rtsp_port, most + 4)
        service = Service(workdir, port, rtsp.port, 1, most + 4, extra=extra)
        stack.callback(service.stop)
        say("starting the service ...")
        service.start(timeout=90.0, request_timeout=15.0)
        token = service.headers.get("Authorization", "").removeprefix("Bearer ")
        for proc in procs:
            proc.call("headers", service.headers, timeout=60.0)
            proc.call("mse_options", service.browser_headers, not args.no_deflate, timeout=60.0)
            proc.call("rtsp_options", rtsp_port, "admin-bench", token)
        procs[0].call("cascade_registered", 20.0, timeout=30.0)
        bench = PlaybackBench(args, procs, gst, rtsp.port, service, [[] for _ in procs])
        for r in range(args.rounds):
            idle = Stage(f"round {r + 1}: no client", 0, 1)
            say(f"round {r + 1}: measuring the service with no client ...")
            bench.measure(idle, max(2, args.windows // 2))
            results["idle"].append(idle)
            for n in args.counts:
                for kind in args.kinds if r % 2 == 0 else args.kinds[::-1]:
                    label = f"{kind} x {n}"
                    results["stages"].append((r, kind, n, stage(bench, kind, n, label, say)))
        if args.first_packets:
            say(f"GB/T 28181: {args.first_packets} sessions at random phases of the GOP ...")
            results["first"] = first_packets(procs[0], args.first_packets, rng)
        results["rss_end"] = service.psutil.memory_info().rss / 2**20
        service.stop()
        count, lines = service.log_problems()
        if count:
            results["notes"] += [f"the service logged {count} warnings/errors, e.g.:", *lines]
    return results


# -- the report ---------------------------------------------------------------------------------


def per_client(s: Stage, idle: Stage) -> float:
    """CPU per client over the same round's ingest-only CPU, share of one core."""
    return ((median(s.cpu) or 0.0) - (median(idle.cpu) or 0.0)) / max(1, s.viewers)


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines: list[str] = []
    add = lines.append
    clip = results["clip"]
    idle: list[Stage] = results["idle"]
    stages: list[tuple[int, str, int, Stage]] = results["stages"]
    add("")
    add(
        f"Hallwatch cascade benchmark: {clip['size']} {FPS} fps, {clip['mbps']:.2f} Mbit/s, keyframe every "
        f"{clip['gop_s']:.0f} s; {psutil.cpu_count()} CPUs; {args.rounds} rounds, each of {args.windows} "
        f"windows of {args.window:.1f} s after {args.warmup:.1f} s per stage; MSE "
        f"{'without' if args.no_deflate else 'offering'} permessage-deflate"
    )
    add("")
    add("1. The service process per kind and count: medians over the rounds (CPU: share of one core)")
    add(
        f"{'kind':<8} {'n':>3} {'CPU':>6} {'per client':>10} {'(rounds)':>15} {'RSS MB':>6} {'fps min':>7} "
        f"{'fps med':>7} {'lost':>5} {'incmpl':>6} {'errors':>6} | {'clients':>7} {'machine':>7}"
    )
    idle_cpu = [median(s.cpu) or 0.0 for s in idle]
    idle_rss = [median(s.rss) or 0.0 for s in idle]
    add(
        f"{'none':<8} {0:3d} {100 * statistics.median(idle_cpu):5.1f}% {'':>10} {'':>15} "
        f"{statistics.median(idle_rss):6.0f}"
    )
    costs: dict[tuple[str, int], list[float]] = {}
    for kind in args.kinds:
        for n in args.counts:
            mine = [(r, s) for r, k, c, s in stages if k == kind and c == n]
            if not mine:
                continue
            per = [per_client(s, idle[r]) for r, s in mine]
            costs[(kind, n)] = per
            fps = [f for _, s in mine for f in s.fps.values()]
            spread = " ".join(f"{100 * p:.2f}" for p in per)
            add(
                f"{kind:<8} {n:3d} {100 * statistics.median([median(s.cpu) or 0 for _, s in mine]):5.1f}% "
                f"{100 * statistics.median(per):9.2f}% {spread:>15} "
                f"{statistics.median([median(s.rss) or 0 for _, s in mine]):6.0f} "
                f"{min(fps, default=0):7.1f} {median(fps) or 0:7.1f} "
                f"{sum(s.lost for _, s in mine):5d} {sum(s.incomplete for _, s in mine):6d} "
                f"{sum(len(s.join_errors) for _, s in mine):6d} | "
                f"{100 * statistics.median([median(s.viewer_cpu) or 0 for _, s in mine]):6.1f}% "
                f"{100 * statistics.median([median(s.machine) or 0 for _, s in mine]):6.1f}%"
            )
    add("   (per client = (CPU - CPU with no client in the same round) / n; clients = both client processes)")
    add("")
    add("2. Cost per client, kind over reference, in each round (both on the same service, a stage apart)")
    for kind, reference, limit in PAIRS:
        for n in args.counts:
            if (kind, n) not in costs or (reference, n) not in costs:
                continue
            ratios = [
                a / b if b > 0 else float("inf")
                for a, b in zip(costs[(kind, n)], costs[(reference, n)], strict=True)
            ]
            verdict = "met" if statistics.median(ratios) <= limit else "MISSED"
            add(
                f"   {kind}/{reference} x {n:<3}: {statistics.median(ratios):5.2f} "
                f"(rounds: {' '.join(f'{x:.2f}' for x in ratios)}); target <= {limit:.2f}: {verdict}"
            )
    gb_full = [(r, s) for r, k, c, s in stages if k == "gb28181" and c == max(args.counts)]
    if gb_full:
        low = min(f for _, s in gb_full for f in s.fps.values())
        every = all(len(s.fps) == max(args.counts) for _, s in gb_full)
        verdict = "met" if low >= FULL_RATE and every else "MISSED"
        add(
            f"   {max(args.counts)} GB/T 28181 sessions: lowest session {low:.1f} fps, every session "
            f"measured: {every}; target every one at {FPS} fps: {verdict}"
        )
    first = [f for f in results.get("first", []) if f["invite"] is not None]
    if "first" in results:
        add("")
        add(f"3. GB/T 28181 INVITE to first RTP packet, {len(results['first'])} sessions, keyframe every 4 s")
        for key, what in (("invite", "INVITE sent"), ("answer", "INVITE to 200 OK"), ("ack", "ACK sent")):
            values = [f[key] for f in first]
            add(
                f"   from {what:<17}: median {1000 * (median(values) or 0):6.1f} ms, "
                f"max {1000 * max(values, default=0):6.1f} ms"
            )
        units = [f["unit"] for f in first if f["unit"] is not None]
        add(f"   INVITE to first complete access unit: median {1000 * (median(units) or 0):.1f} ms")
        add(f"   first packet starts a keyframe: {sum(bool(f['key']) for f in first)} of {len(first)}")
        worst = max((f["invite"] for f in first), default=float("inf"))
        missing = len(results["first"]) - len(first)
        verdict = "met" if worst < FIRST_PACKET_TARGET and not missing else "MISSED"
        add(f"   target under {FIRST_PACKET_TARGET} s from the INVITE (max; all had video): {verdict}")
    add("")
    add(f"service RSS at the end: {results['rss_end']:.0f} MB")
    lines += [f"NOTE: {note}" for note in results["notes"]]
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 and 8 clients, one round, 5 first packets")
    parser.add_argument("--counts", help="clients per stage (default 1,8,32)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"in this order (default {','.join(KINDS)})")
    parser.add_argument("--rounds", type=int, help="rounds, the order of kinds reversed each one (default 2)")
    parser.add_argument("--size", default="1920x1080", help="picture size of the clip")
    parser.add_argument("--kbps", type=int, default=4000, help="bitrate of the clip")
    parser.add_argument("--seconds", type=float, default=8.0, help="clip length, looped")
    parser.add_argument("--windows", type=int, help="sampling windows per stage (default 4)")
    parser.add_argument("--window", type=float, help="seconds per window (default 2)")
    parser.add_argument("--warmup", type=float, help="seconds before the first window (default 3)")
    parser.add_argument("--first-packets", type=int, help="timed GB/T 28181 sessions (default 20)")
    parser.add_argument(
        "--no-deflate", action="store_true", help="MSE viewers do not offer permessage-deflate"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    quick = args.quick
    args.counts = [int(v) for v in (args.counts or ("1,8" if quick else "1,8,32")).split(",")]
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if set(args.kinds) - set(KINDS):
        parser.error(f"unknown kind(s) in {args.kinds}; choose from {', '.join(KINDS)}")
    args.rounds = args.rounds or (1 if quick else 2)
    args.windows = args.windows or (3 if quick else 4)
    args.window = args.window or (1.5 if quick else 2.0)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if quick else 3.0)
    args.first_packets = args.first_packets if args.first_packets is not None else (5 if quick else 20)
    args.settle = 1.0
    return args


def main(argv: list[str] | None = None) -> int:
    return run_bench(_parse_args(argv), run, report, _raw)


def _raw(results: dict[str, Any]) -> dict[str, Any]:
    raw = dict(results)
    raw["idle"] = [s.__dict__ for s in results["idle"]]
    raw["stages"] = [(r, k, n, s.__dict__) for r, k, n, s in results["stages"]]
    return raw


if __name__ == "__main__":
    sys.exit(main())
