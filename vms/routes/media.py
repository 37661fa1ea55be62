"""Video out: WHEP (WebRTC) sessions, JPEG snapshots and MJPEG streams.

In a cluster a WHEP session's URL names the instance holding it, and a ``DELETE``
that reaches another instance is passed on to the holder (:mod:`vms.cluster.whep`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from streams import MJPEG_BOUNDARY, StreamName, mjpeg_part
from vms.cluster.whep import pass_on, public_id, split_id
from vms.deps import ClusterDep, ConfigDep, CurrentUser, ManagerDep, SnapshotUser, WatchUser, visible_camera
from vms.problems import Problem
from vms.viewing import RecordRefused, Viewer, ViewingRecorder

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


def _viewing(request: Request) -> ViewingRecorder:
    viewing: ViewingRecorder | None = getattr(request.app.state, "viewing", None)
    if viewing is None:
        raise Problem(503, "the service is starting or stopping")
    return viewing


def _live_viewing(request: Request) -> ViewingRecorder:
    """The viewing recorder, when a new live viewing can be recorded somewhere (the database
    or the local journal); 503 otherwise, so no viewing starts without its record."""
    viewing = _viewing(request)
    try:
        viewing.check_recordable()
    except RecordRefused as err:
        raise Problem(503, str(err), {"Retry-After": "5"}) from err
    return viewing


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.post("/cameras/{camera_id}/whep", status_code=201)
async def whep_offer(
    camera_id: str,
    request: Request,
    manager: ManagerDep,
    config: ConfigDep,
    user: WatchUser,
    cluster: ClusterDep,
    stream: StreamName = "main",
) -> Response:
    """WHEP (RFC 9725): an SDP offer in, ``201 Created`` with the answer and the session's URL out.

    ``stream=sub`` plays the camera's sub-stream (its main stream if it has none). An
    H.265 stream is sent transcoded to H.264; a stream with B-frames is refused with
    409, since WebRTC cannot carry it: play it over MSE. An offer without a DTLS
    fingerprint or ICE credentials is refused with 400. Over one of the user's own
    caps the answer is 429, over a camera's or the service's 503 (both with
    ``Retry-After``)."""
    visible_camera(config, user, camera_id)
    viewing = _live_viewing(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/sdp":
        raise Problem(415, "send the SDP offer with Content-Type: application/sdp")
    body = await _read_body(request, MAX_SDP_BYTES)
    try:
        offer = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(400, "the SDP offer is not UTF-8 text") from None
    started = datetime.now(UTC)
    session = await manager.whep_offer(camera_id, offer, stream, owner=str(user.user_id))
    viewing.whep_started(session.id, Viewer(user, camera_id, "webrtc", _client(request), started))
    session_id = public_id(cluster, session.id)
    return Response(
        session.answer_sdp,
        status_code=201,
        media_type="application/sdp",
        headers={"Location": f"/api/v1/whep/{session_id}", "ETag": f'"{session_id}"'},
    )


@router.delete("/whep/{session_id}", status_code=200)
async def whep_delete(
    session_id: str, request: Request, manager: ManagerDep, user: CurrentUser, cluster: ClusterDep
) -> Response:
    """End a WHEP session and free everything it held: its viewer, or an admin of the same centre.
    In a cluster, a session another instance holds is ended there."""
    holder, local_id = split_id(session_id)
    if cluster is not None and holder is not None and holder != cluster.instance.id:
        return await pass_on(cluster, holder, request)
    owner = _viewing(request).whep_owner(local_id)
    allowed = owner is not None and (
        owner.user_id == user.user_id or (user.can("admin") and owner.centre_id == user.centre_id)
    )
    if not allowed or not await manager.whep_close(local_id):
        raise Problem(404, "no such WHEP session (it may have ended already)")
    return Response(status_code=200)


@router.get("/cameras/{camera_id}/snapshot.jpg")
async def snapshot(
    camera_id: str, request: Request, manager: ManagerDep, config: ConfigDep, user: SnapshotUser
) -> Response:
    """A JPEG of the camera's latest keyframe (operators and admins); recorded in the audit trail
    (or its local journal) before it is served, refused with 503 when neither can record it."""
    visible_camera(config, user, camera_id)
    viewing = _viewing(request)
    jpeg = await manager.snapshot(camera_id)
    try:  # recorded before it is served: no picture leaves without its record
        await viewing.record_now(
            "snapshot",
            principal=user,
            camera_id=camera_id,
            protocol="snapshot",
            source_addr=_client(request),
            bytes=len(jpeg),
        )
    except RecordRefused as err:
        raise Problem(503, str(err), {"Retry-After": "5"}) from err
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get("/cameras/{camera_id}/stream.mjpeg")
async def mjpeg(
    camera_id: str,
    request: Request,
    manager: ManagerDep,
    config: ConfigDep,
    user: WatchUser,
    stream: StreamName = "main",
) -> StreamingResponse:
    """Motion JPEG at a capped frame rate; decoding is shared by every viewer of the camera.
    The viewing is recorded in the audit trail when the viewer leaves. A viewer counts
    against the same caps as those of every other protocol: 429 over one of the user's
    own, 503 over the camera's or the service's."""
    visible_camera(config, user, camera_id)
    viewing = _live_viewing(request)
    viewer = Viewer(user, camera_id, "mjpeg", _client(request), datetime.now(UTC))
    frames = manager.mjpeg(camera_id, stream, owner=str(user.user_id))

    async def body() -> AsyncIterator[bytes]:
        sent = 0
        try:
            async for jpeg in frames:
                part = mjpeg_part(jpeg, MJPEG_BOUNDARY)
                sent += len(part)
                yield part
        finally:
            viewing.viewing_ended(viewer, sent)
            aclose = getattr(frames, "aclose", None)
            if aclose is not None:
                await aclose()

    return StreamingResponse(
        body(),
        media_type=f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
