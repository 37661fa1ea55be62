"""Halls, centres and cameras with their live state (JSON)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from streams import CameraStats, IngestState, redact_url
from vms.config import Camera
from vms.deps import ConfigDep, CurrentUser, ManagerDep, visible_camera
from vms.schemas import CameraOut, CameraState, CentreOut, HallOut

router = APIRouter(tags=["cameras"])


def _state(stats: CameraStats) -> CameraState:
    # The media plane's figures as they are; only a few names differ on the wire.
    sub = asdict(stats.sub) | {"state": stats.sub.state.value} if stats.sub is not None else None
    return CameraState.model_validate(
        asdict(stats)
        | {
            "state": stats.state.value,
            "since": stats.state_since,
            "dropped_packets": stats.dropped,
            "sub": sub,
        }
    )


def _camera_out(camera: Camera, stats: CameraStats) -> CameraOut:
    base = f"/api/v1/cameras/{camera.id}"
    return CameraOut(
        id=camera.id,
        name=camera.name,
        hall=camera.hall,
        source=redact_url(camera.url),
        transport=camera.transport,
        enabled=camera.enabled,
        streams=["main", "sub"] if camera.sub_url else ["main"],
        live=_state(stats),
        links={
            "whep": f"{base}/whep",
            "mse": f"{base}/mse.ws",
            "mjpeg_ws": f"{base}/mjpeg.ws",
            "snapshot": f"{base}/snapshot.jpg",
            "mjpeg": f"{base}/stream.mjpeg",
        },
    )


@router.get("/cameras")
async def list_cameras(
    config: ConfigDep, manager: ManagerDep, user: CurrentUser, hall: str | None = None
) -> list[CameraOut]:
    """The cameras of the halls the caller's centre may see."""
    halls = user.visible_hall_ids(config)
    return [
        _camera_out(cam, manager.stats(cam.id))
        for cam in config.cameras
        if cam.hall in halls and (hall is None or cam.hall == hall)
    ]


@router.get("/cameras/{camera_id}")
async def get_camera(camera_id: str, config: ConfigDep, manager: ManagerDep, user: CurrentUser) -> CameraOut:
    camera = visible_camera(config, user, camera_id)
    return _camera_out(camera, manager.stats(camera.id))


@router.get("/halls")
async def list_halls(config: ConfigDep, manager: ManagerDep, user: CurrentUser) -> list[HallOut]:
    """The halls the caller's centre may see, with their cameras' online count."""
    out = []
    visible = user.visible_hall_ids(config)
    for hall in (h for h in config.halls if h.id in visible):
        cams = [c.id for c in config.cameras if c.hall == hall.id]
        online = sum(1 for c in cams if manager.stats(c).state is IngestState.ONLINE)
        out.append(
            HallOut(
                id=hall.id,
                name=hall.name,
                department=hall.department,
                plate=hall.plate,
                cameras=cams,
                online=online,
                total=len(cams),
            )
        )
    return out


@router.get("/centres")
async def list_centres(config: ConfigDep, user: CurrentUser) -> list[CentreOut]:
    """The caller's own centre and the halls it may see."""
    return [
        CentreOut(id=c.id, name=c.name, halls=[h.id for h in config.halls_for_centre(c.id)])
        for c in config.centres
        if c.id == user.centre_id
    ]
