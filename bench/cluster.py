"""Cluster benchmark: three instances on one PostgreSQL sharing 48 cameras, one of them killed.

Run from the checkout with the project's virtualenv::

    .venv/bin/python bench/cluster.py            # full run, about 8 minutes
    .venv/bin/python bench/cluster.py --quick    # a smoke run, about 4 minutes

It starts a throwaway PostgreSQL, one RTSP test server with 48 cameras (one small
H.264 clip looped by 48 mounts, no encoding while it runs; ``cam00`` a larger clip, the
camera whose viewers are measured last) and three ``python -m vms serve`` instances,
each with its own ports and data directory, the RTSP re-serve on and a ``cluster:``
section with the default lease timing, all on the same database. Then:

1. **Settle**: from the three processes' start until every camera has exactly one
   session at the camera's side and the instances pull 16/16/16; then the cameras
   are watched for a while (sessions per camera sampled every 150 ms all run long).
2. **Alarms**: the camera server goes away for a few seconds and comes back, so that
   the instances raise (and share) camera alarms.
3. **Kills**: round after round, one instance (each in turn) is killed with SIGKILL
   while an MSE viewer and an RTSP re-serve reader on each other instance watch one of
   its cameras, right after it acknowledged alarms and wrote audit records. Measured:
   until each of its cameras has its one session again, the viewers' longest wait for a
   picture, whether every surviving instance answers the same alarm list, and whether
   every audit row stored before the kill is still there. It is then restarted, and
   the time until the cameras are spread evenly again is taken.
4. **Cost**: ``cam00``'s viewers on its owner, then as many on another instance (which
   pulls the camera from the owner's re-serve), each stage measured as CPU of both
   instances over the same windows, the viewers' latency by the camera's burnt-in
   clock, and first pictures; the order reversed every round; RSS of both before,
   under load and after.

``bench/README.md`` explains each figure. Everything runs on 127.0.0.1; every process
started here is stopped at the end, also on Ctrl-C or an error.

Threads: the main thread, and the watch's sampling thread; child processes do the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _cluster_cost import COST_CAMERA, cost  # noqa: E402
from _cluster_report import report  # noqa: E402
from _cluster_site import (  # noqa: E402
    Instance,
    Watch,
    audit_ids,
    balanced,
    each_once,
    make_instances,
    owners,
    run_start,
    start_database,
)
from _fixtures import FPS, make_au_file, run_bench  # noqa: E402
from playback import _sayer  # noqa: E402

from tests.db_fixtures import PostgresServer  # noqa: E402

START_TIMEOUT = 120.0
RECOVERY_TIMEOUT = 60.0
SETTLE_HOLD = 3.0


def settle(instances: list[Instance], watch: Watch, args: argparse.Namespace, say: Any) -> dict[str, Any]:
    """Start every instance at once; how long until each camera is pulled once, evenly spread."""
    t0 = time.monotonic()
    for instance in instances:
        instance.launch()
    for instance in instances:
        instance.service.wait(START_TIMEOUT, request_timeout=15.0, online=False)
        instance.connect_viewers()
    ready = time.monotonic() - t0
    say(f"  all instances ready after {ready:.1f} s; waiting for an even spread ...")
    held = watch.wait_for(balanced, SETTLE_HOLD, START_TIMEOUT)
    samples = watch.since(t0)
    once = next((s.at for s in samples if each_once(s)), None)
    settled = run_start(samples, balanced, held) if held is not None else None
    say(f"  watching the spread for {args.steady:.0f} s ...")
    steady_from = time.monotonic()
    time.sleep(args.steady)
    steady = watch.since(steady_from)
    listing = instances[0].get("/api/v1/cluster")
    spread = [(s.at - t0, s.pulls) for s in samples if settled is None or s.at <= settled]
    changes = [(at, pulls) for k, (at, pulls) in enumerate(spread) if k == 0 or pulls != spread[k - 1][1]]
    return {
        "spread": changes,
        "ready_s": ready,
        "once_s": None if once is None else once - t0,
        "settled_s": None if settled is None else settled - t0,
        "steady_samples": len(steady),
        "steady_max": max((max(s.cameras.values()) for s in steady), default=None),
        "steady_min": min((min(s.cameras.values()) for s in steady), default=None),
        "pulls": [sorted({s.pulls[i] for s in steady}, key=str) for i in range(len(instances))],
        "listed": {i["id"]: len(i["cameras"]) for i in listing["instances"]},
    }


def raise_alarms(
    instances: list[Instance], watch: Watch, args: argparse.Namespace, say: Any
) -> dict[str, Any]:
    """Take the cameras away for ``args.outage`` s and back; the alarms the instances then list."""
    with watch.lock:
        watch.rtsp.stop()
    time.sleep(args.outage)
    with watch.lock:
        watch.rtsp.start()
    back = watch.wait_for(balanced, SETTLE_HOLD, START_TIMEOUT)
    lists = [i.get("/api/v1/alarms", limit=500) for i in instances]
    say(f"  {len(lists[0]['alarms'])} alarms listed, {lists[0]['unacknowledged']} unacknowledged")
    return {
        "back": back is not None,
        "alarms": len(lists[0]["alarms"]),
        "same": all(x == lists[0] for x in lists),
    }


def write_audit(victim: Instance, acks: int, exports: int) -> int:
    """Audit records written through ``victim`` (acknowledgements and CSV exports); how many."""
    written = 0
    with victim.http() as http:
        listed = http.get("/api/v1/alarms", params={"unacknowledged": True, "limit": acks}).json()["alarms"]
        for alarm in listed:
            written += http.post(f"/api/v1/alarms/{alarm['id']}/ack").status_code == 200
        for _ in range(exports):
            written += http.get("/api/v1/audit.csv", params={"limit": 1}).status_code == 200
    return written


def recovery(watch: Watch, cameras: list[str], killed: float, timeout: float) -> dict[str, float | None]:
    """Per camera: seconds from the kill until it had one session again, after it had none."""
    deadline = killed + timeout
    while True:
        samples = watch.since(killed)
        times: dict[str, float | None] = {}
        for camera in cameras:
            gone = next((s.at for s in samples if s.cameras.get(camera) == 0), None)
            back = next((s.at for s in samples if gone and s.at > gone and s.cameras.get(camera) == 1), None)
            times[camera] = None if back is None else back - killed
        if all(t is not None for t in times.values()) or time.monotonic() > deadline:
            return times
        time.sleep(watch.interval)


def same_alarms(survivors: list[Instance], timeout: float = 5.0) -> float | None:
    """Seconds until every survivor answers the same alarm list; None if not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        lists = [i.get("/api/v1/alarms", limit=500) for i in survivors]
        if all(x == lists[0] for x in lists):
            return time.monotonic() - start
        time.sleep(0.2)
    return None


def kill_round(
    instances: list[Instance],
    victim: Instance,
    watch: Watch,
    pg: PostgresServer,
    args: argparse.Namespace,
    say: Any,
) -> dict[str, Any]:
    """Kill ``victim`` with SIGKILL and measure the takeover, then restart it (see the docstring)."""
    survivors = [i for i in instances if i is not victim]
    mine = sorted(c for c, owner in owners(survivors[0]).items() if owner == victim.name)
    watched = next((c for c in mine if c != COST_CAMERA), mine[0])
    kinds: dict[str, str] = {}
    for survivor in survivors:
        for kind in ("mse", "rtsp"):
            reply = survivor.viewers.call("join", watched, 1, kind, timeout=60.0)
            if reply["errors"]:
                raise RuntimeError(f"{kind} viewer of {watched} on {survivor.name}: {reply['errors']}")
            kinds |= dict.fromkeys(reply["joined"], kind)
    time.sleep(2.0)
    written = write_audit(victim, args.acks, args.exports)
    stored = audit_ids(pg)
    killed = time.monotonic()
    victim.kill()
    say(f"  killed {victim.name} ({len(mine)} cameras; viewers on the others watch {watched}) ...")
    times = recovery(watch, mine, killed, RECOVERY_TIMEOUT)
    time.sleep(1.5)
    gaps = {
        f"{s.name} {kinds[vid]}": got
        for s in survivors
        for vid, got in s.viewers.call("longest_gap", killed - 0.5).items()
    }
    alarms_after = same_alarms(survivors)
    lost = stored - audit_ids(pg)
    for survivor in survivors:
        survivor.viewers.call("leave", timeout=60.0)
    doubles = [s for s in watch.since(killed) if max(s.cameras.values()) > 1]
    say(f"  restarting {victim.name} ...")
    restarted = time.monotonic()
    victim.launch()
    victim.service.wait(START_TIMEOUT, request_timeout=15.0, online=False)
    held = watch.wait_for(balanced, SETTLE_HOLD, START_TIMEOUT)
    rejoined = run_start(watch.since(restarted), balanced, held) - restarted if held is not None else None
    return {
        "victim": victim.name,
        "cameras": len(mine),
        "watched": watched,
        "recovery": times,
        "gaps": gaps,
        "alarms_same_s": alarms_after,
        "audit_written": written,
        "audit_before": len(stored),
        "audit_lost": len(lost),
        "doubles": len(doubles),
        "rejoin_s": rejoined,
    }


def run(args: argparse.Namespace, out: Any) -> dict[str, Any]:
    from tests.rtsp_fixtures import RtspTestServer

    rng = random.Random(args.seed)
    say = _sayer(out)
    results: dict[str, Any] = {"notes": []}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cluster-bench-")))
        say("starting PostgreSQL ...")
        pg, url = start_database()
        stack.callback(pg.destroy)
        width, height = (int(v) for v in args.size.split("x"))
        say(
            f"encoding the cameras' clip ({args.size}, {args.kbps} kbit/s) and cam00's ({args.cost_size}) ..."
        )
        small, large = workdir / "camera.au", workdir / "cam00.au"
        results["clip"] = {
            "size": args.size,
            "mbps": make_au_file(small, width, height, args.kbps, int(args.seconds * FPS), args.gop),
            "cost_size": args.cost_size,
            "cost_mbps": make_au_file(
                large,
                *(int(v) for v in args.cost_size.split("x")),
                args.cost_kbps,
                int(args.seconds * FPS),
                args.gop,
            ),
            "gop_s": args.gop / FPS,
        }
        files = {f"cam{i:02d}": (large if i == 0 else small) for i in range(args.cameras)}
        rtsp = RtspTestServer(au_files=files)
        stack.callback(rtsp.stop)
        rtsp.start()
        instances = make_instances(workdir, args.instances, args.cameras, rtsp, url, max(args.counts) + 4)
        for instance in instances:
            stack.callback(instance.viewers.stop)
            stack.callback(instance.service.stop)
        watch = Watch(rtsp, instances)
        watch.start()
        stack.callback(watch.stop)
        say(f"starting {args.instances} instances with {args.cameras} cameras ...")
        phases = results["phases"] = [("settle", time.monotonic())]
        results["settle"] = settle(instances, watch, args, say)
        if args.outage:
            say(f"taking the cameras away for {args.outage:.0f} s, for alarms ...")
            phases.append(("alarms", time.monotonic()))
            results["alarms"] = raise_alarms(instances, watch, args, say)
        results["kills"] = []
        for k in range(args.kills):
            say(f"kill {k + 1} of {args.kills}:")
            phases.append((f"kill {k + 1}", time.monotonic()))
            results["kills"].append(
                kill_round(instances, instances[k % len(instances)], watch, pg, args, say)
            )
        say("cost of a viewer through another instance than the owner:")
        phases.append(("cost", time.monotonic()))
        results["cost"] = cost(instances, args, rng, say)
        results["double_samples"] = [
            (_phase(phases, s.at), {c: n for c, n in s.cameras.items() if n > 1}, s.pulls)
            for s in watch.samples
            if max(s.cameras.values()) > 1
        ]
        results["run_max"] = max((max(s.cameras.values()) for s in watch.samples), default=None)
        results["samples"] = len(watch.samples)
        results["doubles"] = sum(max(s.cameras.values()) > 1 for s in watch.samples)
        results["watch_failures"] = watch.failures
        for instance in instances:
            instance.service.stop()
            if args.json:
                shutil.copy(
                    instance.service.log_path, args.json.with_name(f"{args.json.stem}-{instance.name}.log")
                )
            count, lines = instance.service.log_problems()
            if count:
                results["notes"] += [f"{instance.name} logged {count} warnings/errors, e.g.:", *lines]
    return results


def _phase(phases: list[tuple[str, float]], at: float) -> str:
    """``at`` (``time.monotonic()``) as the phase it fell in and the seconds into it."""
    name, start = next((p for p in reversed(phases) if p[1] <= at), phases[0])
    return f"{name} +{at - start:.1f} s"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 kills, 1 cost round, short windows")
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--cameras", type=int, default=48)
    parser.add_argument("--size", default="320x180", help="picture size of every camera but cam00")
    parser.add_argument("--kbps", type=int, default=150, help="their bitrate")
    parser.add_argument("--cost-size", default="1920x1080", help="picture size of cam00, the measured camera")
    parser.add_argument("--cost-kbps", type=int, default=4000, help="its bitrate")
    parser.add_argument("--gop", type=int, default=50, help="frames between keyframes (25 fps)")
    parser.add_argument("--seconds", type=float, default=8.0, help="clip length, looped")
    parser.add_argument("--steady", type=float, help="seconds the settled spread is watched (default 20)")
    parser.add_argument(
        "--outage", type=float, default=6.0, help="seconds without cameras, for alarms (0: none)"
    )
    parser.add_argument("--kills", type=int, help="kill rounds (default 3)")
    parser.add_argument(
        "--acks", type=int, default=3, help="alarms acknowledged through the victim before a kill"
    )
    parser.add_argument(
        "--exports", type=int, default=2, help="audit CSV exports through the victim before a kill"
    )
    parser.add_argument(
        "--kind", default="mse", choices=("mse", "webrtc", "rtsp"), help="viewers of the cost stage"
    )
    parser.add_argument("--counts", help="viewers per cost stage (default 1,8)")
    parser.add_argument("--rounds", type=int, help="cost rounds, the order reversed each one (default 2)")
    parser.add_argument("--windows", type=int, help="sampling windows per cost stage (default 5)")
    parser.add_argument("--window", type=float, help="seconds per window (default 3)")
    parser.add_argument("--warmup", type=float, help="seconds before the first window (default 3)")
    parser.add_argument("--first", type=int, help="first-picture joins on each instance (default 6)")
    parser.add_argument(
        "--settle", type=float, help="seconds after the last viewer before RSS after (default 25)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--json", type=Path, help="also write the raw figures here, and the instances' logs beside"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.steady = args.steady if args.steady is not None else (8.0 if quick else 20.0)
    args.kills = args.kills if args.kills is not None else (2 if quick else 3)
    args.counts = [int(v) for v in (args.counts or "1,8").split(",")]
    args.rounds = args.rounds or (1 if quick else 2)
    args.windows = args.windows or (3 if quick else 5)
    args.window = args.window or (2.0 if quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if quick else 3.0)
    args.first = args.first if args.first is not None else (3 if quick else 6)
    args.settle = args.settle if args.settle is not None else (10.0 if quick else 25.0)
    return args


def main(argv: list[str] | None = None) -> int:
    return run_bench(_parse_args(argv), run, report)


if __name__ == "__main__":
    sys.exit(main())
