"""Prometheus metrics of camera ownership, read at scrape time from ``state.cluster``.

* ``hallwatch_cluster_instances``: live instances sharing the cameras (1 without a cluster);
* ``hallwatch_camera_owned{camera,hall}``: 1 for each enabled camera this instance pulls
  (holds the lease on), 0 for the others; without a cluster, 1 for every enabled camera.

Labels are camera and hall ids from the configuration. Event loop only.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.datastructures import State

from vms.cluster import Cluster
from vms.config import Config


class ClusterCollector:
    """See the module docstring."""

    def __init__(self, state: State) -> None:
        self._state = state

    def describe(self) -> Iterable[Metric]:
        return _families(None, None)

    def collect(self) -> Iterable[Metric]:
        config = getattr(self._state, "config", None)
        cluster = getattr(self._state, "cluster", None)
        return _families(
            config if isinstance(config, Config) else None, cluster if isinstance(cluster, Cluster) else None
        )


def _families(config: Config | None, cluster: Cluster | None) -> list[Metric]:
    instances = GaugeMetricFamily(
        "hallwatch_cluster_instances", "Live instances sharing the cameras (1 without a cluster)."
    )
    owned = GaugeMetricFamily(
        "hallwatch_camera_owned",
        "1 while this instance pulls the camera (holds its lease), else 0.",
        labels=["camera", "hall"],
    )
    if config is None:
        return [instances, owned]
    instances.add_metric([], float(cluster.live_instances() if cluster is not None else 1))
    mine = cluster.owned() if cluster is not None else None
    for camera in config.cameras:
        if camera.enabled:
            owned.add_metric([camera.id, camera.hall], 1.0 if mine is None or camera.id in mine else 0.0)
    return [instances, owned]
