"""What the RTSP server asks the control plane, and what it reports back.

The media plane knows no users: for each request that names a camera, the
server checks the Digest nonce itself and hands the client's answer to an
:data:`Authorizer`, which decides who it is and whether they may watch that
camera, and returns a :class:`Verdict`. A session admitted this way reports its
end through the verdict's ``on_end`` with a :class:`RtspViewing` (for the audit
trail).

Pure data; the authorizer runs on the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from streams.rtsp_server.digest import DigestCredentials
from streams.specs import StreamName


@dataclass(frozen=True, slots=True)
class AccessRequest:
    credentials: DigestCredentials
    camera_id: str
    peer: str | None
    """The client's IP address."""


@dataclass(frozen=True, slots=True)
class RtspViewing:
    """One RTSP session that has ended."""

    camera_id: str
    stream: StreamName
    peer: str | None
    transport: str
    """``tcp`` (interleaved) or ``udp``."""
    started: float
    """``time.time()`` when the session was set up."""
    ended: float
    bytes_sent: int
    """RTP payload and header bytes sent, every track."""
    reason: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """The control plane's answer: ``status`` 200 admits; anything else is the RTSP status
    to answer (401 unknown credentials, 403 role, 404 camera not visible, 503 cannot audit)."""

    status: int
    user: str | None = None
    """Who was admitted: a session is only ever used by the user who set it up."""
    owner: str | None = None
    """An opaque key of that user for the per-user viewer caps, the same the other
    protocols' viewers are seated under (:mod:`streams.viewers`)."""
    reason: str = ""
    on_end: Callable[[RtspViewing], None] | None = None
    seated: bool = True
    """Whether the session takes a viewer seat. False for another instance of the same
    deployment pulling the camera for its own viewers, who hold their seats there."""


Authorizer = Callable[[AccessRequest], Awaitable[Verdict]]
