"""Exports: request one, list and read them, download the file and its signed manifest,
and the public key that checks the signatures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from vms.access import Principal
from vms.audit import AuditLog, as_utc
from vms.deps import ConfigDep, PlaybackUser, visible_camera
from vms.export_signing import public_pem
from vms.exports import ExportsBusy, ExportService
from vms.exports import Request as ExportRequest
from vms.problems import Problem
from vms.recordings import from_ms
from vms.storage.tables import Export

router = APIRouter(tags=["exports"])

MAX_RANGE = timedelta(hours=2)
MIN_RANGE = timedelta(seconds=1)
API = "/api/v1"


class ExportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    camera_id: str = Field(max_length=64)
    start: datetime
    end: datetime
    reason: str | None = Field(default=None, max_length=500)
    stream: Literal["main", "sub"] | None = None


class ExportOut(BaseModel):
    id: str
    camera_id: str
    stream: Literal["main", "sub"]
    start: datetime | None
    """Wall clock of the file's first frame (the keyframe at or before ``requested_start``), once ready."""
    end: datetime | None
    requested_start: datetime
    requested_end: datetime
    reason: str | None
    status: Literal["pending", "running", "ready", "failed"]
    error: str | None
    """Why it failed; for a ready export that ends before ``requested_end``, why it ends there."""
    created_at: datetime
    created_by: str
    centre_id: str
    bytes: int | None
    sha256: str | None
    file_url: str | None
    manifest_url: str | None


class SigningKeyOut(BaseModel):
    algorithm: Literal["ed25519"]
    key_id: str
    public_key: str
    """PEM (SubjectPublicKeyInfo)."""


def _out(row: Export) -> ExportOut:
    ready = row.status == "ready"
    return ExportOut(
        id=row.id,
        camera_id=row.camera_id,
        stream="sub" if row.stream == "sub" else "main",
        start=from_ms(row.start_ms) if row.start_ms is not None else None,
        end=from_ms(row.end_ms) if row.end_ms is not None else None,
        requested_start=from_ms(row.requested_start_ms),
        requested_end=from_ms(row.requested_end_ms),
        reason=row.reason,
        status=row.status,  # type: ignore[arg-type]
        error=row.error,
        created_at=as_utc(row.created_at),
        created_by=row.created_by,
        centre_id=row.centre_id,
        bytes=row.bytes,
        sha256=row.sha256,
        file_url=f"{API}/exports/{row.id}/file" if ready else None,
        manifest_url=f"{API}/exports/{row.id}/manifest" if ready else None,
    )


def _service(request: Request) -> ExportService:
    service: ExportService = request.app.state.exports
    return service


async def _ready(request: Request, user: Principal, export_id: str) -> Export:
    row = await _service(request).get(user, export_id)
    if row is None:
        raise Problem(404, f"no export {export_id!r}")
    if row.status != "ready":
        raise Problem(409, f"the export is {row.status}, not ready")
    return row


@router.post("/exports", status_code=202)
async def create_export(body: ExportIn, request: Request, config: ConfigDep, user: PlaybackUser) -> ExportOut:
    """Export a recorded range (1 s to 2 h) of a camera to an MP4 file with a signed manifest;
    made in the background: poll the answer's export until it is ready or failed."""
    camera = visible_camera(config, user, body.camera_id)
    start, end = as_utc(body.start), as_utc(body.end)
    if end - start < MIN_RANGE:
        raise Problem(400, "end must be at least 1 second after start")
    if end - start > MAX_RANGE:
        raise Problem(400, "export at most 2 hours at a time")
    if start > datetime.now(UTC):
        raise Problem(400, "start is in the future")
    if body.stream == "sub" and camera.sub_url is None:
        raise Problem(400, f"camera {camera.id!r} has no sub-stream")
    reason = body.reason.strip() or None if body.reason is not None else None
    stream = body.stream or config.record_stream(camera)
    try:
        row = await _service(request).create(user, ExportRequest(camera, stream, start, end, reason))
    except ExportsBusy as err:
        raise Problem(429, str(err), {"Retry-After": "60"}) from err
    return _out(row)


@router.get("/exports")
async def list_exports(
    request: Request,
    user: PlaybackUser,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many, newest first.")] = 200,
) -> list[ExportOut]:
    """The exports made in your centre of cameras you see, newest first."""
    return [_out(row) for row in await _service(request).visible(user, limit)]


@router.get("/exports/signing-key")
async def signing_key(request: Request, user: PlaybackUser) -> SigningKeyOut:
    """The public key that signs this instance's export manifests, and its id."""
    key = await _service(request).signing_key()
    return SigningKeyOut(algorithm="ed25519", key_id=key.id, public_key=public_pem(key.public))


@router.get("/exports/{export_id}")
async def get_export(export_id: str, request: Request, user: PlaybackUser) -> ExportOut:
    row = await _service(request).get(user, export_id)
    if row is None:
        raise Problem(404, f"no export {export_id!r}")
    return _out(row)


@router.get("/exports/{export_id}/file", response_class=FileResponse)
async def export_file(export_id: str, request: Request, user: PlaybackUser) -> FileResponse:
    """The MP4 file, as an attachment."""
    row = await _ready(request, user, export_id)
    service = _service(request)
    path = service.file_path(row)
    if not path.is_file():
        raise Problem(410, "the export's file is gone")
    audit: AuditLog = request.app.state.audit
    await audit.record(
        "export_download",
        principal=user,
        camera_id=row.camera_id,
        source_addr=request.client.host if request.client else None,
        bytes=row.bytes,
        detail={"export": row.id},
    )
    return FileResponse(path, media_type="video/mp4", filename=path.name)


@router.get("/exports/{export_id}/manifest", response_class=FileResponse)
async def export_manifest(export_id: str, request: Request, user: PlaybackUser) -> FileResponse:
    """The signed manifest (JSON): what was exported, from which segments, by whom, and its signature."""
    row = await _ready(request, user, export_id)
    path = _service(request).manifest_path(row)
    if not path.is_file():
        raise Problem(410, "the export's manifest is gone")
    return FileResponse(path, media_type="application/json", filename=path.name)
