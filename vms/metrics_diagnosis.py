"""Prometheus metrics of the picture diagnosis and of alarms, read at scrape time.

* ``hallwatch_picture_score{camera,hall,score}``: the last analysed picture's scores
  (:class:`streams.analysis.Scores`; their meaning is in :mod:`streams.analysis.checks`);
* ``hallwatch_picture_condition{camera,hall,condition}``: 1 while a picture condition is
  raised, else 0, for every condition;
* ``hallwatch_picture_analysed`` and ``hallwatch_picture_analysis_seconds``: pictures
  analysed per camera and the time their checks took;
* ``hallwatch_alarms{kind}``: alarms raised since the start, by kind (every kind, 0 included).

Labels come from the configuration and fixed tables only. Event loop only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, get_args

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.datastructures import State

from streams import Condition, StreamManager
from vms.alarms import AlarmCentre, AlarmKind
from vms.config import Config

SCORE_PREFIX = "score_"


class DiagnosisCollector:
    """See the module docstring."""

    def __init__(self, state: State) -> None:
        self._state = state

    def describe(self) -> Iterable[Metric]:
        return _families({}, {}, None)

    def collect(self) -> Iterable[Metric]:
        manager: StreamManager | None = getattr(self._state, "manager", None)
        config: Config | None = getattr(self._state, "config", None)
        alarms: AlarmCentre | None = getattr(self._state, "alarms", None)
        if manager is None or config is None:
            return _families({}, {}, alarms)
        halls = {camera.id: camera.hall for camera in config.cameras}
        analyses = {c: f for c, f in manager.statistics_of("analysis").items() if c in halls}
        return _families(analyses, halls, alarms)


def _families(
    analyses: dict[str, dict[str, Any]], halls: dict[str, str], alarms: AlarmCentre | None
) -> list[Metric]:
    cam = ["camera", "hall"]
    score = GaugeMetricFamily(
        "hallwatch_picture_score", "The last analysed picture's score.", labels=[*cam, "score"]
    )
    condition = GaugeMetricFamily(
        "hallwatch_picture_condition", "1 while the picture condition is raised.", labels=[*cam, "condition"]
    )
    analysed = CounterMetricFamily(
        "hallwatch_picture_analysed", "Pictures of the camera analysed.", labels=cam
    )
    seconds = CounterMetricFamily(
        "hallwatch_picture_analysis_seconds", "Seconds the picture checks took (decoding not).", labels=cam
    )
    for camera_id, figures in analyses.items():
        labels = [camera_id, halls[camera_id]]
        for key, value in figures.items():
            if key.startswith(SCORE_PREFIX) and isinstance(value, int | float):
                score.add_metric([*labels, key.removeprefix(SCORE_PREFIX)], float(value))
        raised = set(str(figures.get("raised") or "").split(","))
        for c in Condition:
            condition.add_metric([*labels, c.value], 1.0 if c.value in raised else 0.0)
        analysed.add_metric(labels, float(figures.get("analysed") or 0))
        seconds.add_metric(labels, float(figures.get("seconds") or 0))
    raised_alarms = CounterMetricFamily(
        "hallwatch_alarms", "Alarms raised since the start, by kind.", labels=["kind"]
    )
    counts = alarms.raised_counts if alarms is not None else {}
    for kind in get_args(AlarmKind):
        raised_alarms.add_metric([kind], float(counts.get(kind, 0)))
    return [score, condition, analysed, seconds, raised_alarms]
