"""A camera's picture diagnosis over HTTP: its health and its reference picture.

- ``GET /cameras/{id}/health``: the last scores, the conditions raised, the picture
  alarms not cleared, and the reference picture (who set it, when); everyone who sees
  the camera.
- ``POST /cameras/{id}/reference``: the camera's current picture becomes the view it
  should have (operators and admins: the "acknowledge" permission, as for alarms);
  audited as ``reference_set``.
- ``GET /cameras/{id}/reference.jpg``: that picture (who may take snapshots).

A camera outside the caller's centre answers 404, like one that does not exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from streams import NoPicture
from vms.access import Principal
from vms.deps import ConfigDep, CurrentUser, SnapshotUser, require, visible_camera
from vms.diagnosis import DiagnosisService, NotDiagnosed
from vms.problems import Problem

router = APIRouter(tags=["diagnosis"])

OperatorUser = Annotated[Principal, Depends(require("acknowledge"))]


def _service(request: Request) -> DiagnosisService:
    service: DiagnosisService | None = getattr(request.app.state, "diagnosis", None)
    if service is None:
        raise Problem(503, "the service is starting or stopping")
    return service


@router.get("/cameras/{camera_id}/health")
async def camera_health(
    camera_id: str, request: Request, config: ConfigDep, user: CurrentUser
) -> dict[str, Any]:
    """The camera's picture diagnosis: ``enabled``, ``learned``, ``scores``, ``raised`` conditions (with
    their ``texts``), picture ``alarms`` not cleared, and the ``reference`` picture."""
    visible_camera(config, user, camera_id)
    return _service(request).health(camera_id)


@router.post("/cameras/{camera_id}/reference")
async def set_reference(
    camera_id: str, request: Request, config: ConfigDep, user: OperatorUser
) -> dict[str, Any]:
    """Take the camera's current picture as the view it should have; answers the camera's health."""
    visible_camera(config, user, camera_id)
    service = _service(request)
    try:
        await service.set_reference(camera_id, user)
    except NotDiagnosed:
        raise Problem(409, f"the pictures of camera {camera_id!r} are not diagnosed") from None
    except NoPicture:
        raise Problem(409, "no picture of this camera was analysed yet; try again in a few seconds") from None
    return service.health(camera_id)


@router.get("/cameras/{camera_id}/reference.jpg", response_class=Response)
async def reference_picture(
    camera_id: str, request: Request, config: ConfigDep, user: SnapshotUser
) -> Response:
    """The camera's reference picture, as set by an operator."""
    visible_camera(config, user, camera_id)
    jpeg = await _service(request).reference_picture(camera_id)
    if jpeg is None:
        raise Problem(404, f"camera {camera_id!r} has no reference picture")
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
