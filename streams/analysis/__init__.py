"""Video-quality diagnosis: picture checks over decoded pictures, per-camera baselines and
verdicts with hysteresis. Pure computation; no I/O, no threads of its own."""

from streams.analysis.baseline import Baseline
from streams.analysis.checks import Picture, Reference, prepare
from streams.analysis.diagnosis import Diagnosis
from streams.analysis.verdict import Condition, Scores, Thresholds, Verdict, judge

__all__ = [
    "Baseline",
    "Condition",
    "Diagnosis",
    "Picture",
    "Reference",
    "Scores",
    "Thresholds",
    "Verdict",
    "judge",
    "prepare",
]
