"""The cluster benchmark's printed report, from the figures :mod:`cluster` collected.

Pure formatting, main thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

import psutil
from _units import median, percentile

TAKEOVER_TARGET = 10.0


def _s(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines: list[str] = []
    clip = results["clip"]
    lines += [
        "",
        f"Hallwatch cluster benchmark: {args.instances} instances, {args.cameras} cameras "
        f"({clip['size']} {clip['mbps'] * 1000:.0f} kbit/s; cam00 {clip['cost_size']} "
        f"{clip['cost_mbps']:.2f} Mbit/s; keyframe every {clip['gop_s']:.0f} s), default lease timing; "
        f"{psutil.cpu_count()} CPUs, load {' '.join(f'{v:.1f}' for v in os.getloadavg())} at the end",
    ]
    lines += _settle(results)
    lines += _kills(results)
    lines += _cost(results["cost"], args)
    lines += [f"NOTE: {note}" for note in results["notes"]]
    return "\n".join(lines)


def _settle(results: dict[str, Any]) -> list[str]:
    settle = results["settle"]
    pulls = " / ".join(",".join(str(v) for v in seen) for seen in settle["pulls"])
    listed = " / ".join(str(n) for n in settle["listed"].values())
    out = [
        "",
        "1. Settling: sessions at the camera's side, sampled every 150 ms",
        f"   from the start of the processes: all ready {_s(settle['ready_s'])} s, every camera pulled "
        f"once {_s(settle['once_s'])} s, evenly spread (and held 3 s) {_s(settle['settled_s'])} s",
        f"   steady ({settle['steady_samples']} samples): sessions per camera min {settle['steady_min']}, "
        f"max {settle['steady_max']}; cameras pulled per instance {pulls} "
        f"(GET /api/v1/cluster lists {listed})",
        f"   whole run: {results['samples']} samples, the most sessions a camera had: "
        f"{results['run_max']}, samples with a camera pulled twice: {results['doubles']}, "
        f"not answered: {results['watch_failures']}",
    ]
    changes = settle["spread"]
    shown = changes if len(changes) <= 12 else [*changes[:6], None, *changes[-5:]]
    steps = ", ".join("..." if c is None else f"{c[0]:.1f} s {'/'.join(str(p) for p in c[1])}" for c in shown)
    out.append(f"   cameras pulled per instance until then: {steps}")
    for phase, cameras, pulls in results["double_samples"][:10]:
        twice = ", ".join(f"{c} {n}" for c, n in cameras.items())
        out.append(f"   ! pulled twice at {phase}: {twice} (per instance {'/'.join(map(str, pulls))})")
    alarms = results.get("alarms")
    if alarms:
        out.append(
            f"   after the cameras went away and came back: {alarms['alarms']} alarms, the same list "
            f"on every instance: {alarms['same']}"
        )
    return out


def _kills(results: dict[str, Any]) -> list[str]:
    kills = results["kills"]
    if not kills:
        return []
    out = [
        "",
        "2. kill -9 of one instance: seconds until each of its cameras had its one session again",
        f"   {'round':<5} {'victim':<6} {'cams':>4} {'p50':>5} {'max':>5} | {'gap max':>7} | "
        f"{'alarms same':>11} | {'audit kept':>10} | {'doubles':>7} | {'rejoin':>6}",
    ]
    worst, every, gaps, ended = list[float](), list[float](), list[float](), list[str]()
    for n, kill in enumerate(kills, 1):
        times = [t for t in kill["recovery"].values() if t is not None]
        missing = len(kill["recovery"]) - len(times)
        every += times
        if times and not missing:
            worst.append(max(times))
        viewers = []
        for who, got in kill["gaps"].items():
            gaps.append(got["gap"])
            viewers.append(f"{who} {got['gap']:.1f}{'!' if got['error'] else ''}")
            if got["error"]:
                ended.append(f"   ! round {n}, {who} viewer: {got['error']}")
        same = "no" if kill["alarms_same_s"] is None else f"{kill['alarms_same_s']:.1f} s"
        kept = f"{kill['audit_before'] - kill['audit_lost']}/{kill['audit_before']}"
        longest = max((got["gap"] for got in kill["gaps"].values()), default=None)
        out += [
            f"   {n:<5} {kill['victim']:<6} {kill['cameras']:4d} {_s(median(times)):>5} "
            f"{_s(max(times, default=None)):>5} | {_s(longest):>7} | {same:>11} | {kept:>10} | "
            f"{kill['doubles']:7d} | {_s(kill['rejoin_s']):>6}"
            + (f"  ({missing} cameras never back)" if missing else ""),
            f"         viewers of {kill['watched']}, longest gap in s: {', '.join(viewers)}",
        ]
    met = len(worst) == len(kills) and max(worst) < TAKEOVER_TARGET
    out += [
        f"   takeover, the last camera of each kill: p50 {_s(median(worst))} s, "
        f"max {_s(max(worst, default=None))} s over {len(kills)} kills (target < {TAKEOVER_TARGET:.0f} s: "
        f"{'met' if met else 'MISSED'}); every camera: p50 {_s(median(every))} s, "
        f"p90 {_s(percentile(every, 0.9))} s",
        f"   viewers on the survivors (an MSE and an RTSP re-serve viewer on each): longest gap "
        f"{_s(max(gaps, default=None))} s, median {_s(median(gaps))} s; '!': the stream ended, gap until "
        "the end of the round",
        *ended,
        "   audit records written through the victim just before each kill: "
        f"{', '.join(str(k['audit_written']) for k in kills)}; "
        f"rows lost: {sum(k['audit_lost'] for k in kills)}",
        "   (alarms same: seconds after recovery until every survivor listed the same alarms; rejoin: "
        "seconds from restarting the victim until the cameras were evenly spread again)",
    ]
    return out


def _cpu(m: dict[str, Any], k: int) -> float:
    return statistics.median(m["cpu"][k])


def _cost(cost: dict[str, Any], args: argparse.Namespace) -> list[str]:
    out = [
        "",
        f"3. A viewer through another instance than the owner: {args.kind} viewers of cam00, owner "
        f"{cost['owner']}, other {cost['other']}; CPU share of one core, medians of {args.windows} windows "
        f"of {args.window:.1f} s",
        f"   {'stage':<10} {'n':>2} {'round':>5} {'CPU owner':>9} {'CPU other':>9} {'both-idle':>9} "
        f"{'per viewer':>10} {'lat p50':>7} {'p90':>5} {'fps min':>7} {'pulls':>5} "
        f"{'RSS own':>7} {'RSS oth':>7}",
    ]
    idle = {r: m for where, _, r, m in cost["stages"] if where == "idle"}
    moved = [
        (w, n, r, m["owner_after"]) for w, n, r, m in cost["stages"] if m["owner_after"] != cost["owner"]
    ]
    per_viewer: dict[tuple[str, int], list[float]] = {}
    latency: dict[tuple[str, int], list[float]] = {}
    for where, n, r, m in cost["stages"]:
        base = idle[r]
        extra = _cpu(m, 0) + _cpu(m, 1) - _cpu(base, 0) - _cpu(base, 1)
        each = extra / n if n else None
        if n:
            per_viewer.setdefault((where, n), []).append(extra / n)
            latency.setdefault((where, n), []).extend(m["latencies"])
        out.append(
            f"   {where:<10} {n:2d} {r + 1:5d} {_pct(_cpu(m, 0)):>9} {_pct(_cpu(m, 1)):>9} "
            f"{_pct(extra if n else None):>9} {_pct(each):>10} {_s(median(m['latencies']), 0):>7} "
            f"{_s(percentile(m['latencies'], 0.9), 0):>5} {_s(min(m['fps'], default=None)):>7} "
            f"{m['peer_pulls']:5d} {max(m['rss'][0]):7.0f} {max(m['rss'][1]):7.0f}"
        )
    out.append(
        "   (both-idle: CPU of both instances over the same round's no-viewer stage; latency in ms, "
        "burnt-in clock to arrival; pulls: the other's RTSP sessions at the owner's re-serve)"
    )
    out += [f"   ! cam00 was pulled by {o} after the {w} stage ({n}, round {r + 1})" for w, n, r, o in moved]
    both = {(where, n, r): _cpu(m, 0) + _cpu(m, 1) for where, n, r, m in cost["stages"]}
    for n in args.counts:
        own, other = per_viewer.get(("owner", n)), per_viewer.get(("other", n))
        if not own or not other:
            continue
        extra = [both[("other", n, r)] - both[("owner", n, r)] for r in range(args.rounds)]
        added = (median(latency[("other", n)]) or 0) - (median(latency[("owner", n)]) or 0)
        hop = statistics.median(extra)
        out += [
            f"   {n} viewer(s): per viewer on the owner {_pct(median(own))}, on the other "
            f"{_pct(median(other))}; latency added by the hop {added:+.0f} ms at p50",
            f"      both instances' CPU, viewers on the other minus on the owner: {_pct(hop)} (rounds "
            f"{' '.join(_pct(x) for x in extra)}), {_pct(hop / n)} per viewer",
        ]
    out += _first(cost) + _rss(cost)
    return out


def _first(cost: dict[str, Any]) -> list[str]:
    out = []
    for where in ("owner", "other"):
        got = [g for w, g in cost["first"] if w == where]
        ok = [g for g in got if g["error"] is None]
        received = [1000 * g["received"] for g in ok]
        decoded = [1000 * g["decoded"] for g in ok]
        first = f"{decoded[0]:.0f}" if decoded else "n/a"
        out.append(
            f"   first picture on the {where:<5}: first fragment median {_s(median(received), 0)} ms, "
            f"decoded median {_s(median(decoded), 0)} ms, max {_s(max(decoded, default=None), 0)} ms "
            f"(the first join: {first} ms; {len(got) - len(ok)} failed of {len(got)})"
        )
    return out


def _rss(cost: dict[str, Any]) -> list[str]:
    before, after = cost["idle_before"], cost["idle_after"]
    out = []
    for k, name in ((0, cost["owner"]), (1, cost["other"])):
        under = max((max(m["rss"][k]) for _, n, _, m in cost["stages"] if n), default=0.0)
        b, a = statistics.median(before["rss"][k]), statistics.median(after["rss"][k])
        out.append(
            f"   RSS of {name}: before {b:.0f} MB, under load up to {under:.0f} MB, after {a:.0f} MB "
            f"(after/before {a / b:.2f})"
        )
    return out
