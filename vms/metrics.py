"""Prometheus metrics: one registry per app, the relay's figures read at scrape time.

:func:`install` gives an app its own :class:`~prometheus_client.CollectorRegistry`
(never the process-wide default one, so a test may build many apps) holding:

* :class:`RelayCollector`, which asks the app's stream manager for every camera's
  figures when Prometheus scrapes, so nothing is counted twice and nothing has to
  be kept in step;
* :class:`RecordingCollector`, the recorders' figures (bytes, segments, errors,
  whether each writes) and the segments deleted for space;
* :class:`~vms.metrics_diagnosis.DiagnosisCollector`, the picture diagnosis's scores and
  conditions per camera and the alarms raised by kind;
* :class:`WebhookCollector`, each centre's alarm webhook: deliveries by result,
  events waiting, failed attempts in a row;
* :class:`~vms.metrics_gb28181.CascadeCollector`, the GB/T 28181 superior platforms:
  registration, sessions by kind, INVITEs started and refused, malformed messages;
* :class:`~vms.metrics_cluster.ClusterCollector`, the live instances of a cluster and
  which cameras this instance pulls;
* :class:`HttpMetrics`, the request counter and duration histogram that
  :mod:`vms.middleware` feeds;
* :class:`RuntimeCollector`, the event loop's tasks and the process's threads,
  whose growth over viewers joining and leaving tells a leak (open file
  descriptors come with the process collector);
* the process, platform and garbage-collector collectors of ``prometheus_client``.

Labels are bounded and never user controlled: camera, hall and centre ids from the
configuration, the ingest states, route templates (never a raw path), a fixed set
of HTTP methods and the status code. No URL, user name or credential is ever a label.

Event loop only: the manager's statistics are read on the loop, so ``/metrics``
renders the text on the loop too (it takes well under a millisecond per camera).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.datastructures import State

from streams import CameraStats, IngestState, StreamManager
from vms.config import Config
from vms.metrics_cluster import ClusterCollector
from vms.metrics_diagnosis import DiagnosisCollector
from vms.metrics_gb28181 import CascadeCollector
from vms.webhooks import Webhooks, WebhookSender

__all__ = [
    "HTTP_METHODS",
    "HttpMetrics",
    "Metrics",
    "RelayCollector",
    "RuntimeCollector",
    "WebhookCollector",
    "install",
    "metrics_of",
]

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods counted under their own name; anything else is counted as ``other``."""

UNMATCHED = "unmatched"
"""The route label of a request no route matched."""


class RelayCollector:
    """Yields the cameras' figures from ``state.manager`` and ``state.config`` at scrape time."""

    def __init__(self, state: State) -> None:
        self._state = state

    def describe(self) -> Iterable[Metric]:
        return _relay_families([], {})

    def collect(self) -> Iterable[Metric]:
        manager: StreamManager | None = getattr(self._state, "manager", None)
        config: Config | None = getattr(self._state, "config", None)
        if manager is None or config is None:
            return _relay_families([], {})
        halls = {camera.id: camera.hall for camera in config.cameras}
        stats = [s for s in manager.all_stats() if s.id in halls]
        return _relay_families(stats, halls)


def _relay_families(stats: Sequence[CameraStats], halls: dict[str, str]) -> list[Metric]:
    cam = ["camera", "hall"]
    up = GaugeMetricFamily("hallwatch_camera_up", "1 while the camera delivers video, else 0.", labels=cam)
    state = GaugeMetricFamily(
        "hallwatch_camera_state",
        "1 for the camera's current ingest state, 0 for the others.",
        labels=[*cam, "state"],
    )
    fps = GaugeMetricFamily("hallwatch_camera_fps", "Frames per second received from the camera.", labels=cam)
    counters = {
        "bytes": CounterMetricFamily(
            "hallwatch_camera_inbound_bytes", "Bytes of video received from the camera.", labels=cam
        ),
        "packets": CounterMetricFamily(
            "hallwatch_camera_inbound_packets", "Access units received from the camera.", labels=cam
        ),
        "reconnects": CounterMetricFamily(
            "hallwatch_camera_reconnects", "Times the ingest reconnected to the camera.", labels=cam
        ),
        "stalls": CounterMetricFamily(
            "hallwatch_camera_stalls", "Times the camera stopped sending and the watchdog fired.", labels=cam
        ),
        "dropped": CounterMetricFamily(
            "hallwatch_camera_dropped_packets",
            "Packets skipped for viewers that fell behind (each viewer counts).",
            labels=cam,
        ),
    }
    viewers = GaugeMetricFamily(
        "hallwatch_viewers", "Viewers watching the camera, by protocol.", labels=[*cam, "protocol"]
    )
    sessions = GaugeMetricFamily(
        "hallwatch_whep_sessions", "WebRTC (WHEP) sessions open on the whole service."
    )
    transcoding = GaugeMetricFamily(
        "hallwatch_camera_transcoding", "1 while an H.265 to H.264 transcoder of the camera runs.", labels=cam
    )
    for s in stats:
        labels = [s.id, halls[s.id]]
        up.add_metric(labels, 1.0 if s.state is IngestState.ONLINE else 0.0)
        for each in IngestState:
            state.add_metric([*labels, each.value], 1.0 if s.state is each else 0.0)
        fps.add_metric(labels, s.fps)
        for field, family in counters.items():
            family.add_metric(labels, float(getattr(s, field)))
        viewers.add_metric([*labels, "webrtc"], float(s.webrtc_viewers))
        viewers.add_metric([*labels, "mjpeg"], float(s.mjpeg_viewers))
        viewers.add_metric([*labels, "mse"], float(s.mse_viewers))
        viewers.add_metric([*labels, "rtsp"], float(s.rtsp_viewers))
        viewers.add_metric([*labels, "gb28181"], float(s.gb28181_viewers))
        transcoding.add_metric(labels, 1.0 if s.transcoding else 0.0)
    sessions.add_metric([], float(sum(s.webrtc_viewers for s in stats)))
    return [up, state, fps, *counters.values(), viewers, sessions, transcoding]


class RuntimeCollector:
    """The tasks of the event loop that scrapes, and the process's Python threads."""

    def describe(self) -> Iterable[Metric]:
        return _runtime_families(None, None)

    def collect(self) -> Iterable[Metric]:
        try:
            tasks: int | None = len(asyncio.all_tasks())
        except RuntimeError:  # scraped from outside an event loop: no loop to count
            tasks = None
        return _runtime_families(tasks, threading.active_count())


def _runtime_families(tasks: int | None, threads: int | None) -> list[Metric]:
    loop_tasks = GaugeMetricFamily(
        "hallwatch_event_loop_tasks", "asyncio tasks alive on the service's event loop (not done)."
    )
    python_threads = GaugeMetricFamily(
        "hallwatch_python_threads", "Python threads alive in the process (threading.active_count())."
    )
    if tasks is not None:
        loop_tasks.add_metric([], float(tasks))
    if threads is not None:
        python_threads.add_metric([], float(threads))
    return [loop_tasks, python_threads]


class RecordingCollector:
    """Each recorded camera's recorder figures and the index's deletions, at scrape time."""

    def __init__(self, state: State) -> None:
        self._state = state

    def describe(self) -> Iterable[Metric]:
        return _recording_families({}, {}, {})

    def collect(self) -> Iterable[Metric]:
        manager: StreamManager | None = getattr(self._state, "manager", None)
        config: Config | None = getattr(self._state, "config", None)
        index: Any = getattr(self._state, "recordings", None)
        if manager is None or config is None:
            return _recording_families({}, {}, {})
        halls = {camera.id: camera.hall for camera in config.cameras}
        recorders = {
            camera_id: figures
            for camera_id, figures in manager.statistics_of("recorder").items()
            if camera_id in halls
        }
        reclaimed = dict(getattr(index, "reclaimed", {}))
        return _recording_families(recorders, halls, reclaimed)


def _recording_families(
    recorders: dict[str, dict[str, Any]], halls: dict[str, str], reclaimed: dict[str, int]
) -> list[Metric]:
    cam = ["camera", "hall"]
    active = GaugeMetricFamily(
        "hallwatch_recording_active", "1 while the camera's recorder writes, 0 while it fails.", labels=cam
    )
    counters = {
        "bytes_written": CounterMetricFamily(
            "hallwatch_recording_bytes", "Bytes of recordings written for the camera.", labels=cam
        ),
        "segments": CounterMetricFamily(
            "hallwatch_recording_segments", "Segment files of the camera closed.", labels=cam
        ),
        "errors": CounterMetricFamily(
            "hallwatch_recording_errors", "Writes of the camera's recording that failed.", labels=cam
        ),
        "dropped": CounterMetricFamily(
            "hallwatch_recording_dropped_packets",
            "Packets the recorder skipped (to the next keyframe) because the disk fell behind.",
            labels=cam,
        ),
    }
    deleted = CounterMetricFamily(
        "hallwatch_recording_deleted_for_space",
        "Segments of the camera deleted before their retention to stay within the disk limits.",
        labels=cam,
    )
    for camera_id, figures in recorders.items():
        labels = [camera_id, halls[camera_id]]
        active.add_metric(labels, 0.0 if figures.get("failed") else 1.0)
        for field, family in counters.items():
            family.add_metric(labels, float(figures.get(field) or 0))
    for camera_id, count in reclaimed.items():
        if camera_id in halls:
            deleted.add_metric([camera_id, halls[camera_id]], float(count))
    return [active, *counters.values(), deleted]


class WebhookCollector:
    """Each centre's alarm webhook, from ``state.webhooks`` at scrape time."""

    def __init__(self, state: State) -> None:
        self._state = state

    def describe(self) -> Iterable[Metric]:
        return _webhook_families([])

    def collect(self) -> Iterable[Metric]:
        webhooks: Webhooks | None = getattr(self._state, "webhooks", None)
        return _webhook_families(list(webhooks.senders.values()) if webhooks is not None else [])


def _webhook_families(senders: Sequence[WebhookSender]) -> list[Metric]:
    deliveries = CounterMetricFamily(
        "hallwatch_webhook_deliveries",
        "Alarm events of the centre's webhook by result: delivered, failed (refused, or failing after "
        "every attempt), dropped (pushed out of the full queue).",
        labels=["centre", "result"],
    )
    queued = GaugeMetricFamily(
        "hallwatch_webhook_queued", "Alarm events waiting for the centre's webhook.", labels=["centre"]
    )
    failing = GaugeMetricFamily(
        "hallwatch_webhook_consecutive_failures",
        "Failed attempts of the centre's webhook since its last delivery.",
        labels=["centre"],
    )
    for sender in senders:
        status = sender.status
        centre = [status.centre_id]
        deliveries.add_metric([*centre, "delivered"], float(status.delivered))
        deliveries.add_metric([*centre, "failed"], float(status.failed))
        deliveries.add_metric([*centre, "dropped"], float(status.dropped))
        queued.add_metric(centre, float(sender.queued))
        failing.add_metric(centre, float(status.consecutive_failures))
    return [deliveries, queued, failing]


class HttpMetrics:
    """The request counter and duration histogram, fed by :mod:`vms.middleware`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "hallwatch_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "hallwatch_http_request_duration_seconds",
            "Seconds from a request's arrival to the end of its answer (streams count their whole life).",
            ["route", "method"],
            registry=registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request; ``route`` must be a template or ``unmatched``."""
        method = method if method in HTTP_METHODS else "other"
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route, method).observe(seconds)


@dataclass(frozen=True, slots=True)
class Metrics:
    """An app's registry and the HTTP metrics recorded into it."""

    registry: CollectorRegistry
    http: HttpMetrics


def install(app: FastAPI) -> Metrics:
    """Build the app's registry, keep it as ``app.state.metrics`` and return it. Idempotent."""
    existing: Any = getattr(app.state, "metrics", None)
    if isinstance(existing, Metrics):
        return existing
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(RelayCollector(app.state))
    registry.register(RuntimeCollector())
    registry.register(RecordingCollector(app.state))
    registry.register(DiagnosisCollector(app.state))
    registry.register(WebhookCollector(app.state))
    registry.register(CascadeCollector(app.state))
    registry.register(ClusterCollector(app.state))
    metrics = Metrics(registry, HttpMetrics(registry))
    app.state.metrics = metrics
    return metrics


def metrics_of(state: State) -> Metrics | None:
    """The metrics :func:`install` put on an app's state, if any."""
    metrics: Any = getattr(state, "metrics", None)
    return metrics if isinstance(metrics, Metrics) else None
