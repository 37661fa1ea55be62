"""Video out: WHEP (WebRTC) sessions, JPEG snapshots and MJPEG streams."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from streams import MJPEG_BOUNDARY, mjpeg_part
from vms.deps import ManagerDep
from vms.problems import Problem

router = APIRouter(tags=["media"])

MAX_SDP_BYTES = 64 * 1024


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"the body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Problem(413, f"the body is larger than {limit} bytes")
    return bytes(body)


@router.post("/cameras/{camera_id}/whep", status_code=201)
async def whep_offer(camera_id: str, request: Request, manager: ManagerDep) -> Response:
    """WHEP (RFC 9725): an SDP offer in, ``201 Created`` with the answer and the session's URL out."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/sdp":
        raise Problem(415, "send the SDP offer with Content-Type: application/sdp")
    body = await _read_body(request, MAX_SDP_BYTES)
    try:
        offer = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(400, "the SDP offer is not UTF-8 text") from None
    session = await manager.whep_offer(camera_id, offer)
    location = f"/api/v1/whep/{session.id}"
    return Response(
        session.answer_sdp,
        status_code=201,
        media_type="application/sdp",
        headers={"Location": location, "ETag": f'"{session.id}"'},
    )


@router.delete("/whep/{session_id}", status_code=200)
async def whep_delete(session_id: str, manager: ManagerDep) -> Response:
    """End a WHEP session and free everything it held."""
    if not await manager.whep_close(session_id):
        raise Problem(404, "no such WHEP session (it may have ended already)")
    return Response(status_code=200)


@router.get("/cameras/{camera_id}/snapshot.jpg")
async def snapshot(camera_id: str, manager: ManagerDep) -> Response:
    """A JPEG of the camera's latest keyframe."""
    jpeg = await manager.snapshot(camera_id)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get("/cameras/{camera_id}/stream.mjpeg")
async def mjpeg(camera_id: str, manager: ManagerDep) -> StreamingResponse:
    """Motion JPEG at a capped frame rate; decoding is shared by every viewer of the camera."""
    frames = manager.mjpeg(camera_id)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for jpeg in frames:
                yield mjpeg_part(jpeg, MJPEG_BOUNDARY)
        finally:
            aclose = getattr(frames, "aclose", None)
            if aclose is not None:
                await aclose()

    return StreamingResponse(
        body(),
        media_type=f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
