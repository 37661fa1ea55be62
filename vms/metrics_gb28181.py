"""Prometheus metrics of the GB/T 28181 cascade, read at scrape time from ``state.gb28181``.

* ``hallwatch_gb28181_registered{platform}``: 1 while registered with the superior;
* ``hallwatch_gb28181_sessions{platform,kind}``: sessions open now, ``kind`` live,
  playback or download;
* ``hallwatch_gb28181_sessions_started_total{platform,kind}`` and
  ``hallwatch_gb28181_sessions_refused_total{platform,status}``: INVITEs answered 200,
  and answered with an error by SIP status;
* ``hallwatch_gb28181_registrations_total{platform}`` and
  ``hallwatch_gb28181_malformed_total{platform}``: registrations made, and messages from
  the superior that could not be parsed.

Labels are the configured platform names, the fixed session kinds and SIP statuses.
Event loop only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import get_args

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.datastructures import State

from vms.gb28181 import Cascade
from vms.gb28181.invite import SessionKind


class CascadeCollector:
    """See the module docstring."""

    def __init__(self, state: State) -> None:
        self._state = state

    def describe(self) -> Iterable[Metric]:
        return _families(None)

    def collect(self) -> Iterable[Metric]:
        cascade = getattr(self._state, "gb28181", None)
        return _families(cascade if isinstance(cascade, Cascade) else None)


def _families(cascade: Cascade | None) -> list[Metric]:
    registered = GaugeMetricFamily(
        "hallwatch_gb28181_registered", "1 while registered with the superior platform.", labels=["platform"]
    )
    sessions = GaugeMetricFamily(
        "hallwatch_gb28181_sessions", "Media sessions open to the platform.", labels=["platform", "kind"]
    )
    started = CounterMetricFamily(
        "hallwatch_gb28181_sessions_started",
        "INVITEs from the platform answered 200.",
        labels=["platform", "kind"],
    )
    refused = CounterMetricFamily(
        "hallwatch_gb28181_sessions_refused",
        "INVITEs from the platform answered with an error.",
        labels=["platform", "status"],
    )
    registrations = CounterMetricFamily(
        "hallwatch_gb28181_registrations", "Registrations with the platform.", labels=["platform"]
    )
    malformed = CounterMetricFamily(
        "hallwatch_gb28181_malformed",
        "Messages from the platform that could not be parsed.",
        labels=["platform"],
    )
    families: list[Metric] = [registered, sessions, started, refused, registrations, malformed]
    if cascade is None:
        return families
    live = cascade.live
    for platform in cascade.platforms:
        name = platform.settings.name
        registered.add_metric([name], 1.0 if platform.status.registered else 0.0)
        registrations.add_metric([name], platform.status.registrations)
        malformed.add_metric([name], platform.status.malformed)
        for kind in get_args(SessionKind):
            sessions.add_metric([name, kind], live.count(platform, kind))
            started.add_metric([name, kind], live.started.get((name, kind), 0))
        for (who, status), count in sorted(live.refused.items()):
            if who == name:
                refused.add_metric([name, str(status)], count)
    return families
