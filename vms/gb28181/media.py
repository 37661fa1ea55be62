"""What the cascade needs from the media plane: a live PS-over-RTP session to a superior.

The signalling (:mod:`vms.gb28181.invite`) asks a :class:`MediaStarter` to open a
session for a camera towards ``(host, port, transport, ssrc)`` before it answers
the INVITE (a ``tcp-passive`` session must already listen, and the answer carries
its port), starts it when the ACK arrives, and stops it on BYE. The session's
``done`` future ends with a reason when the media plane gives up on its own (the
superior vanished: RTCP silence, send or connection failures), and the dialog then
sends BYE. The media plane's PS sender implements this; nothing here imports it.

Playback and download (``s=Playback``, ``s=Download``) ask a :class:`RecordStarter`
instead: it lists what is recorded and opens a :class:`PlaybackSession` over a
range of the recordings, which a superior may pause, resume, play at another
scale and seek in (:class:`InvalidRange` when it cannot), and which says whether
it ended because the recording did (``finished``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from vms.gb28181.sdp import MediaTransport


@dataclass(frozen=True, slots=True)
class MediaTarget:
    """Where and how one live session sends."""

    host: str
    port: int
    transport: MediaTransport
    ssrc: int
    payload_type: int = 96
    bind_host: str = "0.0.0.0"
    """Our side's address: the platform's signalling address (``local_host``)."""


class MediaSession(Protocol):
    @property
    def local_port(self) -> int:
        """Our side's port: the UDP source port, the TCP port we listen on or connect from."""
        ...

    @property
    def bytes_sent(self) -> int: ...

    @property
    def done(self) -> asyncio.Future[str]:
        """Resolves with the reason when the session ends by itself."""
        ...

    async def start(self) -> None:
        """Begin sending (after the ACK)."""
        ...

    async def stop(self) -> None:
        """Stop sending and free the sockets; idempotent."""
        ...


class MediaStarter(Protocol):
    async def open(self, camera_id: str, target: MediaTarget) -> MediaSession:
        """Prepare a session of the camera's live stream; raises ``OSError`` when the
        sockets cannot be had, or ``streams.StreamError`` when the camera cannot be served."""
        ...


class PlaybackSession(MediaSession, Protocol):
    @property
    def finished(self) -> bool:
        """Whether the session ended because the recording was sent to its end."""
        ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def set_scale(self, scale: float) -> None:
        """Play at ``scale`` (positive) times real time from now on."""
        ...

    async def seek(self, position: float) -> float:
        """Go on from the keyframe at or before ``position`` seconds after the range's start;
        where that keyframe is (seconds after the start, 0 before it). Raises
        :class:`InvalidRange` when the position is outside the range or nothing is recorded
        from there to its end."""
        ...


class InvalidRange(ValueError):
    """A seek the playback cannot serve; the text says why."""


Span = tuple[datetime, datetime]
"""A recorded stretch of time, timezone-aware."""


class RecordStarter(Protocol):
    async def spans(self, camera_id: str, start: datetime, end: datetime) -> list[Span]:
        """The camera's recorded stretches within ``[start, end)``, oldest first."""
        ...

    async def open_recording(
        self, camera_id: str, target: MediaTarget, start: datetime, end: datetime, scale: float | None
    ) -> PlaybackSession:
        """Prepare a session of the camera's recording from ``start`` to ``end`` at ``scale``
        times real time (None: as fast as the connection takes it); raises ``OSError`` when
        the sockets cannot be had."""
        ...
