"""Picture diagnosis against its targets: what it costs, how fast it alarms, how often wrongly.

Run from the checkout with the project's virtualenv (the cost stage also needs the
GStreamer RTSP test server's system packages, see ``tests/rtsp_fixtures.py``)::

    .venv/bin/python bench/analysis.py             # everything: about 30 minutes
    .venv/bin/python bench/analysis.py --quick     # a short run of each stage: about 8 minutes
    .venv/bin/python bench/analysis.py --stages alarm,false

Three stages, one after the other (never two at once):

``cost`` (:mod:`bench._analysis_cost`)
    each check's time per picture at 320 px and the decode of one keyframe at 1080p and
    360p; then 16 RTSP cameras (1080p25, 4 Mbit/s, a keyframe every 2 s), without and
    with a 640x360 sub-stream each, pulled by fresh service processes with analysis on
    and off, alternated: the process CPU with analysis on minus off, RSS on and off.
    Target: at most 10 % of one core.
``alarm`` (:mod:`bench._analysis_alarm`)
    a camera goes black, another is covered by a hand, while its stream goes on: seconds
    from the picture's change to the alarm, and from its return to the alarm's end.
    Targets: raise_after + interval (7 s) and clear_after + interval (12 s).
``false`` (:mod:`bench._analysis_false`)
    normal scenes filmed faster than real time and diagnosed at the service's spacing
    of 2 s of scene time: the alarms raised. Target: none.

Progress goes to stderr, the figures to stdout, the targets in a table at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._analysis_alarm import alarm_stage  # noqa: E402
from bench._analysis_cost import CLIP_SECONDS, check_costs, cost_stage, decode_costs  # noqa: E402
from bench._analysis_false import false_alarm_stage  # noqa: E402
from bench._analysis_report import (  # noqa: E402
    Row,
    alarm_section,
    checks_section,
    cost_section,
    false_section,
    summary,
)
from bench._fixtures import interrupt_on_sigterm  # noqa: E402
from bench._hall import FULL_HD, MAIN_KBPS, SUB, SUB_KBPS, au_file  # noqa: E402

STAGES = ("cost", "alarm", "false")
FULL = {
    "cameras": 16,
    "reps": 3,
    "warmup": 50.0,
    "window": 30.0,
    "trials": 6,
    "scenes": 8,
    "scene_minutes": 4.0,
}
QUICK = {
    "cameras": 4,
    "reps": 1,
    "warmup": 45.0,
    "window": 10.0,
    "trials": 1,
    "scenes": 2,
    "scene_minutes": 1.0,
}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short run of each stage")
    parser.add_argument("--stages", default=",".join(STAGES), help="which of cost,alarm,false to run")
    parser.add_argument("--cameras", type=int, help=f"cameras of the cost stage ({FULL['cameras']})")
    parser.add_argument("--reps", type=int, help=f"on/off pairs per camera set ({FULL['reps']})")
    parser.add_argument("--warmup", type=float, help=f"seconds before measuring a run ({FULL['warmup']:g})")
    parser.add_argument("--window", type=float, help=f"seconds measured per run ({FULL['window']:g})")
    parser.add_argument("--faults", default="black,covered90", help="faults of the alarm stage")
    parser.add_argument("--trials", type=int, help=f"trials per fault ({FULL['trials']})")
    parser.add_argument("--scenes", type=int, help=f"cameras of the false-alarm stage ({FULL['scenes']})")
    parser.add_argument("--scene-minutes", type=float, help=f"minutes per scene ({FULL['scene_minutes']:g})")
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.stages = [s for s in args.stages.split(",") if s]
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages: {', '.join(sorted(unknown))}")
    return args


def run_cost(args: argparse.Namespace) -> list[Row]:
    say("cost of each check, and of decoding a keyframe ...")
    decodes = {
        f"{w}x{h}": decode_costs(au_file((w, h), kbps, CLIP_SECONDS)[1])
        for (w, h), kbps in ((FULL_HD, MAIN_KBPS), (SUB, SUB_KBPS))
    }
    checks_section(check_costs(), decodes)
    say(f"{args.cameras} cameras, analysis on and off, {args.reps} pairs per camera set ...")
    return cost_section(cost_stage(args.cameras, args.reps, args.warmup, args.window))


def run_alarm(args: argparse.Namespace) -> list[Row]:
    faults = args.faults.split(",")
    say(f"time to alarm: {', '.join(faults)}, {args.trials} trials each (the baseline is learned first) ...")
    return alarm_section(asyncio.run(alarm_stage(faults, args.trials)))


def run_false(args: argparse.Namespace) -> list[Row]:
    say(f"false alarms: {args.scenes} scenes of {args.scene_minutes:g} minutes ...")
    return false_section(false_alarm_stage(args.scenes, args.scene_minutes))


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    args = parse()
    interrupt_on_sigterm()
    runs = {"cost": run_cost, "alarm": run_alarm, "false": run_false}
    rows: list[Row] = []
    for stage in args.stages:
        rows += runs[stage](args)
        sys.stdout.flush()
    summary(rows)


if __name__ == "__main__":
    main()
