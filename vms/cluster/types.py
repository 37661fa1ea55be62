"""What the cluster tells the rest of the service: instances, their state, and its errors.

Plain frozen data; any thread.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime

from vms.config import Config
from vms.config_cluster import ClusterSettings


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """An instance and the addresses the others reach it at (the inter-instance path)."""

    id: str
    http_url: str
    """HTTP base URL, e.g. ``http://10.0.0.11:8000``."""
    rtsp_url: str | None
    """RTSP re-serve base URL, e.g. ``rtsp://10.0.0.11:8554``; None without an RTSP server."""


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    """One row of the cluster's membership, as the database sees it now."""

    info: InstanceInfo
    started_at: datetime
    heartbeat_age: float
    """Seconds since its last heartbeat, by the database's clock."""
    live: bool
    """Its heartbeat is younger than the lease timeout."""
    ready: bool
    cameras: tuple[str, ...]
    """The cameras it holds a valid lease on, sorted."""


class ClusterError(Exception):
    """This instance cannot join the cluster."""


class ConfigMismatch(ClusterError):
    """The shared part of this instance's configuration differs from the live instances'."""

    def __init__(self, sections: list[str], instances: list[str]) -> None:
        self.sections = sections
        self.instances = instances
        super().__init__(
            f"the configuration differs from that of the live instance(s) {', '.join(instances)} in: "
            f"{', '.join(sections)}; every instance of a cluster must have the same {', '.join(sections)} "
            "(copy the configuration file, keeping only server, database, webrtc, metrics, rtsp_server, "
            "gb28181 and cluster's instance_id, http_url and rtsp_url of this instance's own)"
        )


class InstanceIdTaken(ClusterError):
    """A live instance already has this instance's id."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        super().__init__(
            f"a live instance already has the id {instance_id!r}: give each instance its own "
            "cluster.instance_id (or leave it empty for <host name>-<process id>)"
        )


def this_instance(config: Config, settings: ClusterSettings) -> InstanceInfo:
    """This instance's id and addresses: configured, else from the host name and the ports."""
    host = socket.gethostname()
    instance_id = settings.instance_id or f"{host}-{os.getpid()}"
    http_url = settings.http_url or f"http://{host}:{config.server.port}"
    rtsp_url = settings.rtsp_url
    if rtsp_url is None and config.rtsp_server.enabled:
        rtsp_url = f"rtsp://{host}:{config.rtsp_server.port}"
    return InstanceInfo(instance_id, http_url, rtsp_url)
