"""Liveness and readiness probes: no login, nothing secret.

``/healthz`` answers as long as the event loop does. ``/readyz`` answers 200 only
when the configuration is loaded, the database takes writes (a heartbeat write, see
:mod:`vms.storage.health`: locked by another process, disk full, read-only, not
answering, file removed or replaced are each named), the ingest supervisor runs and,
in a cluster, the camera leases are renewed (an instance that cannot renew them has
dropped its cameras; it takes its share again by itself once the database answers);
otherwise 503 with the reasons, for a load balancer or an orchestrator. When ready it
also counts the cameras that record and those whose recording fails.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from streams import StreamManager
from vms.cluster import Cluster
from vms.config import Config
from vms.storage import Database
from vms.storage.health import DatabaseHealth

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """200 as long as the event loop answers."""
    return {"status": "ok"}


async def readiness(app: FastAPI) -> list[str]:
    """Why the service is not ready to serve (empty when it is): the config must be
    loaded, the database must take writes, the ingest supervisor must run and a cluster's
    leases must be renewed."""
    state = app.state
    reasons: list[str] = []
    if not isinstance(getattr(state, "config", None), Config):
        reasons.append("the configuration is not loaded")
    db: Database | None = getattr(state, "db", None)
    health: DatabaseHealth | None = getattr(state, "db_health", None)
    if db is None or health is None:
        reasons.append("the database is not open")
    else:
        reason = await health.current()
        if reason is not None:
            reasons.append(reason)
    manager: StreamManager | None = getattr(state, "manager", None)
    if manager is None:
        reasons.append("the relay is starting up")
    elif not manager.running:
        reasons.append("the ingest supervisor is not running")
    cluster: Cluster | None = getattr(state, "cluster", None)
    if cluster is not None and not cluster.renewing:
        reasons.append("the camera leases cannot be renewed in the database: this instance owns no camera")
    return reasons


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """200 when the config is loaded, the database takes writes, the ingest supervisor runs and a
    cluster's leases are renewed; else 503."""
    reasons = await readiness(request.app)
    if reasons:
        log.debug("not ready: %s", "; ".join(reasons))
        return JSONResponse({"status": "not ready", "reasons": reasons}, status_code=503)
    manager: StreamManager | None = getattr(request.app.state, "manager", None)
    if manager is None:
        return JSONResponse({"status": "ready", "cameras": 0})
    return JSONResponse(
        {"status": "ready", "cameras": len(manager.camera_ids()), "recording": recording_health(manager)}
    )


def recording_health(manager: StreamManager) -> dict[str, int]:
    """How many cameras record and how many of those cannot write now (counts only: the
    probe names nothing). A failing recorder does not make the service unready, since
    live viewing goes on; it raises an alarm and shows in /metrics."""
    recorders = manager.statistics_of("recorder").values()
    return {"cameras": len(recorders), "failing": sum(1 for r in recorders if r.get("failed"))}
