"""Liveness and readiness probes: no login, nothing secret."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """200 as long as the event loop answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """200 once the configuration is loaded and every enabled camera's ingest runs."""
    manager = getattr(request.app.state, "manager", None)
    if manager is None:
        return JSONResponse({"status": "not ready", "reason": "starting up"}, status_code=503)
    if not manager.running:
        return JSONResponse(
            {"status": "not ready", "reason": "the ingest supervisor is not running"}, status_code=503
        )
    return JSONResponse({"status": "ready", "cameras": len(manager.camera_ids())})
