"""The cluster benchmark's last stage: what a viewer costs through another instance than the owner.

:func:`cost` puts viewers of ``cam00`` on the instance that owns it, then as many on another
instance (which pulls the camera from the owner's RTSP re-serve, once however many viewers it
has), round after round with the order reversed each time, and a stage without viewers first
in every round. Each stage is measured by :func:`measure`: both instances' CPU over the same
windows, their RSS, the viewers' latency by the camera's burnt-in clock and their frame rate,
and how many pulls the other instance holds at the owner's re-serve. Then new viewers are
timed to their first decodable picture on each instance, and RSS is taken again once every
viewer has been gone for a while.

Blocking code for the benchmark's main thread.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from _cluster_site import Instance, owners
from _fixtures import FPS
from relay import cpu_seconds, rtsp_sessions

COST_CAMERA = "cam00"


def measure(
    owner: Instance, other: Instance, viewers: Instance | None, args: argparse.Namespace
) -> dict[str, Any]:
    """CPU and RSS of both instances over the windows, and the viewers' latencies (if any)."""
    time.sleep(args.warmup)
    if viewers is not None:
        viewers.viewers.call("sample")
    procs = [owner.service.psutil, other.service.psutil]
    cpu: list[list[float]] = [[], []]
    rss: list[list[float]] = [[], []]
    latencies: list[float] = []
    frames: dict[str, int] = {}
    span = 0.0
    for _ in range(args.windows):
        t0, c0 = time.monotonic(), [cpu_seconds(p) for p in procs]
        time.sleep(args.window)
        dt = time.monotonic() - t0
        for k, proc in enumerate(procs):
            cpu[k].append((cpu_seconds(proc) - c0[k]) / dt)
            rss[k].append(proc.memory_info().rss / 2**20)
        if viewers is not None:
            sample = viewers.viewers.call("sample")
            for vid, got in sample["viewers"].items():
                latencies += got["latencies"]
                frames[vid] = frames.get(vid, 0) + got["frames"]
            span += dt
    peer_pulls = rtsp_sessions(procs[1], owner.rtsp_port)
    return {
        "owner_after": owners(owner)[COST_CAMERA],
        "cpu": cpu,
        "rss": rss,
        "latencies": latencies,
        "fps": sorted(n / span for n in frames.values()) if span else [],
        "peer_pulls": peer_pulls,
    }


def cost(instances: list[Instance], args: argparse.Namespace, rng: random.Random, say: Any) -> dict[str, Any]:
    """``cam00``'s viewers on its owner against as many on another instance (see the docstring)."""
    by_name = {i.name: i for i in instances}
    owner = by_name[owners(instances[0])[COST_CAMERA]]
    other = next(i for i in instances if i is not owner)
    result: dict[str, Any] = {"owner": owner.name, "other": other.name, "stages": [], "first": []}
    say(f"  {COST_CAMERA} is pulled by {owner.name}; viewers on it and on {other.name} ...")
    result["idle_before"] = measure(owner, other, None, args)
    for r in range(args.rounds):
        result["stages"].append(("idle", 0, r, measure(owner, other, None, args)))
        for n in args.counts:
            order = [("owner", owner), ("other", other)]
            for where, host in order if r % 2 == 0 else order[::-1]:
                reply = host.viewers.call("join", COST_CAMERA, n, args.kind, timeout=120.0)
                errors = f", {len(reply['errors'])} could not join" if reply["errors"] else ""
                say(f"  round {r + 1}: {n} {args.kind} viewers on the {where} ({host.name}){errors}")
                result["stages"].append((where, n, r, measure(owner, other, host, args)))
                host.viewers.call("leave", timeout=60.0)
                time.sleep(1.0)
    say(f"  first pictures: {args.first} joins each, at random phases of the keyframe interval ...")
    for _ in range(args.first):
        for where, host in (("owner", owner), ("other", other)):
            time.sleep(rng.uniform(0.0, args.gop / FPS))
            got = host.viewers.call("first_picture", "mse", COST_CAMERA, 15.0, timeout=45.0)
            result["first"].append((where, got))
    say(f"  every viewer gone; RSS after {args.settle:.0f} s ...")
    time.sleep(args.settle)
    result["idle_after"] = measure(owner, other, None, args)
    return result
