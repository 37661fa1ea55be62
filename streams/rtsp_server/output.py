"""Every RTSP viewer session of the relay: counted, capped, and their payloads shared.

:class:`RtspOutput` belongs to the stream manager, beside the WebRTC and MSE
outputs, so RTSP viewers count in the camera's statistics and keep the memory
trimmer waiting, and each session holds a seat in the relay's viewer ledger
(:mod:`streams.viewers`), so the caps on viewers per camera, in total and per
user count RTSP clients together with every other protocol. The RTP packets of an access unit are
built once per hub, framed and with their headers but for what each session
sets (:class:`~streams.rtsp_server.payloads.SharedTemplates`), and shared by
every session reading that hub: another viewer costs a copy of them with its
sequence numbers, timestamp, SSRC and channel written in, and sending.

Event loop only.
"""

from __future__ import annotations

import logging
from typing import Protocol

from streams.errors import CapacityError
from streams.hub import Hub
from streams.packets import Codec
from streams.rtsp_server.access import Verdict
from streams.rtsp_server.payloads import SharedTemplates, packetizer_of
from streams.viewers import Seat, ViewerLedger

log = logging.getLogger(__name__)


class Session(Protocol):
    id: str
    camera_id: str
    verdict: Verdict

    def hubs(self) -> list[Hub]: ...

    async def stop(self, reason: str) -> None: ...


class RtspOutput:
    """See the module docstring."""

    def __init__(self, viewers: ViewerLedger | None = None) -> None:
        self._viewers = viewers or ViewerLedger()
        self._sessions: dict[str, Session] = {}
        self._seats: dict[str, Seat] = {}
        self._shared: dict[tuple[Hub, int], SharedTemplates] = {}
        self._stopped = False

    def session_count(self, camera_id: str | None = None) -> int:
        if camera_id is None:
            return len(self._sessions)
        return sum(1 for s in self._sessions.values() if s.camera_id == camera_id)

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def add(self, session: Session) -> None:
        """Count a new session, seated as its verdict's owner unless the verdict says it takes
        no seat. Raises :class:`CapacityError` at a viewer cap or while stopping."""
        if self._stopped:
            raise CapacityError("the RTSP output is shutting down")
        if session.verdict.seated:
            self._seats[session.id] = self._viewers.admit(session.camera_id, "rtsp", session.verdict.owner)
        self._sessions[session.id] = session

    def remove(self, session: Session) -> None:
        """Forget an ended session, and the shared packets of hubs nobody reads any more."""
        self._sessions.pop(session.id, None)
        seat = self._seats.pop(session.id, None)
        if seat is not None:
            self._viewers.release(seat)
        reading = {hub for s in self._sessions.values() for hub in s.hubs()}
        for key in [key for key in self._shared if key[0] not in reading]:
            del self._shared[key]

    def templates(self, hub: Hub, codec: Codec, payload_type: int) -> SharedTemplates:
        """The RTP packets of ``hub``'s access units, shared by its sessions."""
        shared = self._shared.get((hub, payload_type))
        if shared is None:
            shared = self._shared[hub, payload_type] = SharedTemplates(packetizer_of(codec), payload_type)
        return shared

    async def stop(self) -> None:
        """End every session. Idempotent."""
        self._stopped = True
        for session in list(self._sessions.values()):
            await session.stop("relay stopping")
