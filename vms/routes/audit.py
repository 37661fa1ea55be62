"""The audit trail over HTTP: a filtered JSON listing and a streamed CSV export.

Both need the "audit" permission (operators and admins) and show only the records
of the caller's own centre, whatever the filters ask for; administrators also see
the failed and refused logins aimed at no account (they carry no centre, and any
centre may be their target). Exporting is itself recorded in the trail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from vms.access import Principal
from vms.audit import AuditError, AuditLog, AuditQuery, as_utc
from vms.deps import CurrentUser, require
from vms.login_audit import UNATTRIBUTED_ACTIONS
from vms.problems import Problem
from vms.schemas import DB_INT_MAX, Offset
from vms.schemas_audit import AuditRecordOut

router = APIRouter(tags=["audit"], dependencies=[Depends(require("audit"))])

MAX_LIMIT = 1000


def get_audit(request: Request) -> AuditLog:
    audit: AuditLog | None = getattr(request.app.state, "audit", None)
    if audit is None:
        raise Problem(503, "the audit trail is not available")
    return audit


AuditDep = Annotated[AuditLog, Depends(get_audit)]


class _Filters:
    """The query filters shared by the listing and the export."""

    def __init__(
        self,
        since: Annotated[datetime | None, Query(description="ISO 8601; events at or after")] = None,
        until: Annotated[datetime | None, Query(description="ISO 8601; events before")] = None,
        user: Annotated[str | None, Query(max_length=64, description="username")] = None,
        camera: Annotated[str | None, Query(max_length=64, description="camera id")] = None,
        action: Annotated[str | None, Query(max_length=32, description="view, login_failure, …")] = None,
    ) -> None:
        if since is not None and until is not None and as_utc(since) > as_utc(until):
            raise Problem(400, "'since' is after 'until'")
        self.since, self.until, self.user, self.camera, self.action = since, until, user, camera, action

    def query(self, principal: Principal, *, limit: int | None, offset: int) -> AuditQuery:
        return AuditQuery(
            centre_id=principal.centre_id,
            since=self.since,
            until=self.until,
            username=self.user,
            camera_id=self.camera,
            action=self.action,
            limit=limit,
            offset=offset,
            unattributed=UNATTRIBUTED_ACTIONS if principal.role == "admin" else frozenset(),
        )


FiltersDep = Annotated[_Filters, Depends()]


@router.get("/audit")
async def list_audit(
    principal: CurrentUser,
    audit: AuditDep,
    filters: FiltersDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    offset: Offset = 0,
) -> list[AuditRecordOut]:
    """Audit events of the caller's centre (and, for admins, logins aimed at no account), newest first."""
    try:
        records = await audit.query(filters.query(principal, limit=limit, offset=offset))
    except AuditError as err:
        raise Problem(503, str(err)) from err
    return [AuditRecordOut(**asdict(record)) for record in records]


@router.get("/audit.csv", response_class=StreamingResponse)
async def export_audit(
    principal: CurrentUser,
    audit: AuditDep,
    filters: FiltersDep,
    limit: Annotated[int | None, Query(ge=1, le=DB_INT_MAX, description="at most this many rows")] = None,
) -> StreamingResponse:
    """Audit events of the caller's centre as CSV (header row, ISO 8601 times), newest first."""
    query = filters.query(principal, limit=limit, offset=0)
    try:
        await audit.record("audit_export", principal=principal, detail=_describe(query))
    except AuditError as err:
        raise Problem(503, str(err)) from err
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    filename = f"audit-{principal.centre_id}-{stamp}.csv"
    return StreamingResponse(
        _chunks(audit, query),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def _chunks(audit: AuditLog, query: AuditQuery) -> AsyncIterator[bytes]:
    async for text in audit.export_csv(query):
        yield text.encode()


def _describe(query: AuditQuery) -> str:
    parts = {
        "since": query.since.isoformat() if query.since else None,
        "until": query.until.isoformat() if query.until else None,
        "user": query.username,
        "camera": query.camera_id,
        "action": query.action,
        "limit": query.limit,
    }
    return "CSV export " + " ".join(f"{k}={v}" for k, v in parts.items() if v is not None)
