"""The superior platforms' state for administrators: ``GET /api/v1/gb28181/platforms``.

Each platform of the caller's centre: registered or not, since when, the last error,
live sessions and malformed messages received. The password never appears.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel

from vms.deps import AdminUser
from vms.gb28181 import Cascade
from vms.problems import Problem

router = APIRouter(tags=["gb28181"])


class PlatformOut(BaseModel):
    name: str
    server_id: str
    local_id: str
    address: str
    transport: str
    registered: bool
    since: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    registrations: int
    live_sessions: int
    malformed: int


@router.get("/gb28181/platforms")
async def list_platforms(request: Request, admin: AdminUser) -> list[PlatformOut]:
    """The superior platforms cascading the caller's centre, and their registration (admins)."""
    cascade: Cascade | None = getattr(request.app.state, "gb28181", None)
    if cascade is None:
        raise Problem(503, "the service is starting or stopping")
    return [
        PlatformOut(
            name=p.settings.name,
            server_id=p.settings.server_id,
            local_id=p.settings.local_id,
            address=f"{p.settings.host}:{p.settings.port}",
            transport=p.settings.transport,
            registered=p.status.registered,
            since=p.status.since,
            last_error=p.status.last_error,
            last_error_at=p.status.last_error_at,
            registrations=p.status.registrations,
            live_sessions=cascade.live.count(p),
            malformed=p.status.malformed,
        )
        for p in cascade.platforms
        if p.settings.centre == admin.centre_id
    ]
