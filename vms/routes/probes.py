"""Per-camera probes for external monitors: ``GET /api/v1/probe/cameras/{id}``.

No login, and nothing secret in the answer (no URL, no error text): 200 while the
camera delivers a good picture, 503 with its state otherwise (and, while it delivers
video, with ``picture``: the picture conditions raised, such as ``covered``), 404 for an
unknown id, so a monitor can raise one alarm per camera from the status code alone.

Only monitoring systems may ask (:func:`vms.routes.metrics.monitoring_access`:
the allowed networks or the metrics token). Anyone else gets 403 (401 when a
token is configured) before the id is looked at, the same answer for every id:
a 404 would make a misconfigured monitor report a camera as gone, and answering
alike for known and unknown ids already tells an outsider nothing.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from streams import IngestState, StreamManager
from vms.deps import ConfigDep
from vms.diagnosis import DiagnosisService
from vms.problems import Problem
from vms.routes.metrics import monitoring_access

router = APIRouter(tags=["health"], dependencies=[Depends(monitoring_access)])


@router.get("/probe/cameras/{camera_id}")
async def camera_probe(camera_id: str, request: Request, config: ConfigDep) -> JSONResponse:
    """200 ``{"camera": id, "state": "online"}`` when online with a good picture; 503 with the
    state when not, and the raised picture conditions (``"picture": ["covered"]``)."""
    if camera_id not in {camera.id for camera in config.cameras}:
        raise Problem(404, "no such camera")
    manager: StreamManager | None = getattr(request.app.state, "manager", None)
    if manager is None:
        return JSONResponse({"camera": camera_id, "state": "starting"}, status_code=503)
    state = manager.stats(camera_id).state
    body: dict[str, object] = {"camera": camera_id, "state": state.value}
    diagnosis: DiagnosisService | None = getattr(request.app.state, "diagnosis", None)
    bad = diagnosis.bad_picture(camera_id) if diagnosis is not None else []
    if bad and state is IngestState.ONLINE:
        body["picture"] = bad
    status = 200 if state is IngestState.ONLINE and not bad else 503
    return JSONResponse(body, status_code=status)
