"""Several instances as one system: membership and camera leases in PostgreSQL.

Active when the configuration has a ``cluster:`` section and the database is
PostgreSQL (:func:`cluster_for`); otherwise this instance owns every camera, as a
single instance always has. The public surface:

* :class:`Cluster`: ``start()``, ``stop()``, ``owned()``, ``owner_of(camera_id)``,
  ``epoch(camera_id)``, ``on_change(listener)``, ``describe()``, ``set_ready(flag)``;
* :class:`InstanceInfo` (an instance's id and addresses) and :class:`InstanceStatus`
  (a membership row);
* :class:`ClusterError` and its kinds :class:`ConfigMismatch` and :class:`InstanceIdTaken`,
  raised by ``start()`` when this instance may not join.
"""

from vms.cluster.cluster import Cluster, Listener, cluster_for
from vms.cluster.types import ClusterError, ConfigMismatch, InstanceIdTaken, InstanceInfo, InstanceStatus

__all__ = [
    "Cluster",
    "ClusterError",
    "ConfigMismatch",
    "InstanceIdTaken",
    "InstanceInfo",
    "InstanceStatus",
    "Listener",
    "cluster_for",
]
