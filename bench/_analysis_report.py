"""``bench/analysis.py``'s report: a section per stage, and the targets in a table at the end.

Each ``*_section`` prints a stage's figures and returns its rows of the final table:
(what, measured, target, met).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence

from bench._analysis_alarm import Trials
from bench._analysis_cost import Cost
from bench._analysis_false import WORST, SceneResult, threshold
from streams.specs import AnalysisSpec

Row = tuple[str, str, str, str]

COST_TARGET = 10.0
"""Percent of one core that analysing 16 cameras may cost, decoding included."""


def spread(values: Sequence[float], unit: str = "s") -> str:
    """Median / max of ``values``, or a dash."""
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} / {max(values):.2f} {unit}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    for row in (header, ["-" * w for w in widths], *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def checks_section(checks: dict[str, float], decodes: dict[str, dict[str, float]]) -> None:
    print("\n== Cost per picture, one thread, median ms ==")
    table(["check at 320 px", "ms"], [[name, f"{ms:.2f}"] for name, ms in checks.items()])
    print(f"all checks: {sum(checks.values()):.2f} ms")
    rows = [
        [size, f"{d['wall']:.2f}", f"{d['cpu']:.2f}", f"{d['to_bgr']:.2f}"] for size, d in decodes.items()
    ]
    table(["keyframe", "decode wall ms", "decode CPU ms", "to BGR at 640 px ms"], rows)


def cost_section(costs: Sequence[Cost]) -> list[Row]:
    print("\n== Cost in the service: analysis on minus off, nobody watching ==")
    rows, out = [], []
    for cost in costs:
        diff = [100 * d for d in cost.differences("cpu")]
        rss = cost.differences("rss_mb")
        rows.append(
            [
                f"{cost.cameras} x {cost.label}",
                str(len(diff)),
                f"{100 * cost.median('cpu', False):.1f} %",
                f"{100 * cost.median('cpu', True):.1f} %",
                f"{statistics.median(diff):+.1f} % ({min(diff):+.1f}..{max(diff):+.1f})",
                f"{cost.median('rss_mb', False):.0f} / {cost.median('rss_mb', True):.0f}",
                f"{statistics.median(rss):+.1f}",
                f"{cost.analysed_per_second():.2f}",
                f"{cost.per_analysis_ms():.1f}",
                f"{cost.decodes_per_analysis():.2f}",
                f"{100 * cost.skipped_share():.1f} %",
                f"{100 * statistics.median(r.server for r in cost.runs):.0f} %",
                f"{100 * statistics.median(r.machine for r in cost.runs):.0f} %",
            ]
        )
        met = "yes" if statistics.median(diff) <= COST_TARGET else "NO"
        out.append(
            (f"CPU, {cost.cameras} x {cost.label}", f"{statistics.median(diff):+.1f} %", "<= 10 %", met)
        )
        out.append((f"RSS, {cost.cameras} x {cost.label}", f"{statistics.median(rss):+.1f} MB", "-", "-"))
    header = ["cameras", "pairs", "CPU off", "CPU on", "on - off (range)", "RSS off/on MB", "RSS diff"]
    table([*header, "analysed/s", "ms/analysis", "decodes/analysis", "skipped", "server", "machine"], rows)
    alarms = [(c, e) for c in costs for e in c.alarms()]
    print(f"alarms raised in the runs with analysis on: {len(alarms)}")
    for cost, event in alarms:
        print(f"  {cost.label} {event['camera']}: {event['condition']} {event['scores']}")
    return out


def alarm_section(trials: Sequence[Trials]) -> list[Row]:
    spec = AnalysisSpec()
    raise_target, clear_target = spec.raise_after + spec.interval, spec.clear_after + spec.interval
    print("\n== Time to alarm (median / max, seconds from the picture's change) ==")
    rows, out = [], []
    for t in trials:
        gaps = t.gaps()
        rows.append(
            [
                f"{t.fault} ({t.condition.value})",
                str(len(t.trials)),
                spread(t.seen(True)),
                spread(t.raised()),
                spread(t.seen(False)),
                spread(t.cleared()),
                str(t.missed()),
                ", ".join(f"{k} x{n}" for k, n in Counter(t.others).items()) or "-",
                spread(gaps),
            ]
        )
        for what, values, target in (
            ("raised", t.raised(), raise_target),
            ("cleared", t.cleared(), clear_target),
        ):
            met = "yes" if values and max(values) <= target and not t.missed() else "NO"
            out.append((f"{t.fault} {what}", spread(values), f"<= {target:g} s", met))
    header = ["fault", "trials", "first seen", "raised", "healthy seen", "cleared", "missed", "other events"]
    table([*header, "between analyses"], rows)
    return out


def false_section(results: Sequence[SceneResult]) -> list[Row]:
    print("\n== False alarms: normal scenes, keyframes every 2 s of scene time ==")
    rows = []
    for r in results:
        present = ", ".join(f"{c.value} x{n}" for c, n in r.present.items()) or "-"
        rows.append(
            [
                str(r.scene),
                f"{r.seconds / 60:.1f}",
                str(r.pictures),
                str(r.judged),
                str(len(r.alarms)),
                present,
            ]
        )
    table(["scene", "minutes", "pictures", "judged", "alarms", "present (pictures)"], rows)
    worst = []
    for name, (pick, _) in WORST.items():
        values = [r.worst[name] for r in results if name in r.worst]
        if values:
            worst.append([name, f"{pick(values):.3g}", f"{threshold(name):g}"])
    print("worst score over the judged pictures of every scene, and its threshold:")
    table(["score", "worst", "threshold"], worst)
    for r in results:
        for at, condition, scores in r.alarms:
            print(f"  ALARM {r.scene} at {at:.0f} s: {condition.value}, {scores}")
    minutes = sum(r.seconds for r in results) / 60
    alarms = sum(len(r.alarms) for r in results)
    return [
        (f"false alarms in {minutes:.0f} camera-minutes", str(alarms), "0", "yes" if alarms == 0 else "NO")
    ]


def summary(rows: Sequence[Row]) -> None:
    print("\n== Targets ==")
    table(["what", "measured", "target", "met"], rows)
