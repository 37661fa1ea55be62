"""What the cascade needs from the media plane: a live PS-over-RTP session to a superior.

The signalling (:mod:`vms.gb28181.invite`) asks a :class:`MediaStarter` to open a
session for a camera towards ``(host, port, transport, ssrc)`` before it answers
the INVITE (a ``tcp-passive`` session must already listen, and the answer carries
its port), starts it when the ACK arrives, and stops it on BYE. The session's
``done`` future ends with a reason when the media plane gives up on its own (the
superior vanished: RTCP silence, send or connection failures), and the dialog then
sends BYE. The media plane's PS sender implements this; nothing here imports it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
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
