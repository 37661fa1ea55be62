"""``GET /api/v1/cluster`` (administrators): the instances sharing the cameras, their health,
and which cameras each pulls.

Without a cluster the answer describes this one instance owning every enabled camera.
The camera lists hold only cameras the administrator's centre may see.
"""

from __future__ import annotations

import socket

from fastapi import APIRouter

from vms.deps import AdminUser, ClusterDep, ConfigDep
from vms.schemas_cluster import ClusterOut, InstanceOut

router = APIRouter(prefix="/cluster", tags=["cluster"])


@router.get("")
async def cluster_status(admin: AdminUser, config: ConfigDep, cluster: ClusterDep) -> ClusterOut:
    def visible(cameras: list[str] | tuple[str, ...]) -> list[str]:
        return [camera for camera in cameras if admin.may_see_camera(config, camera)]

    if cluster is None:
        alone = InstanceOut(
            id=socket.gethostname(),
            http_url=None,
            rtsp_url=None,
            this=True,
            live=True,
            ready=True,
            started_at=None,
            heartbeat_age=None,
            cameras=visible([camera.id for camera in config.cameras if camera.enabled]),
        )
        return ClusterOut(clustered=False, lease_timeout=None, instances=[alone])
    instances = [
        InstanceOut(
            id=status.info.id,
            http_url=status.info.http_url,
            rtsp_url=status.info.rtsp_url,
            this=status.info.id == cluster.instance.id,
            live=status.live,
            ready=status.ready,
            started_at=status.started_at,
            heartbeat_age=round(status.heartbeat_age, 3),
            cameras=visible(status.cameras),
        )
        for status in await cluster.describe()
    ]
    return ClusterOut(clustered=True, lease_timeout=cluster.settings.lease_timeout, instances=instances)
