"""One WHEP viewer session as the control plane sees it: id, answer, state, figures.

:class:`WhepSession` is created and driven by
:class:`~streams.webrtc.output.WebRtcOutput`, which owns its peer connection
and tasks; the session object only reports. Event loop only.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from streams.hub import Hub
from streams.viewers import Seat
from streams.webrtc.audio import AudioHubTrack
from streams.webrtc.fanout import FastRtpSender


class _Feed(Protocol):
    """What feeds a viewer: aiortc's sender reading a HubTrack, or a FastRtpSender."""

    frames: int
    bytes: int

    @property
    def dropped(self) -> int: ...

    @property
    def backlog_frames(self) -> int: ...


@dataclass(frozen=True, slots=True)
class SessionStats:
    """A snapshot of one viewer session."""

    id: str
    camera_id: str
    created: float
    """Wall-clock time (``time.time()``) of the offer."""
    state: str
    """``connecting``, ``connected``, ``disconnected``, ``failed`` or ``closed``."""
    connect_seconds: float | None
    """From the offer to the connection being up, or None while connecting."""
    packets_sent: int
    """Access units handed to the RTP packetizer."""
    bytes_sent: int
    dropped: int
    """Access units the hub skipped because this viewer fell behind."""
    backlog_frames: int
    """GOP-cache frames sent with compressed timestamps to reach the live edge."""
    fast_path: bool
    """True when the shared-packetization RTP fan-out feeds this viewer."""
    retransmitted: int
    """RTP packets sent again because the viewer reported them lost (fast path only)."""


class WhepSession:
    """One viewer: its id (the last segment of the WHEP resource URL) and its answer."""

    def __init__(
        self,
        session_id: str,
        camera_id: str,
        answer_sdp: str,
        pc: RTCPeerConnection,
        track: MediaStreamTrack,
        feed: _Feed | None,
        *,
        stream: Hub,
        seat: Seat,
    ) -> None:
        self.id = session_id
        self.camera_id = camera_id
        self.seat = seat
        """Its place among the capped sessions: pending until connected, then live."""
        self.owner = seat.owner
        """The opaque key of whoever opened it (a user), or None."""
        self.stream = stream
        """The hub this viewer watches: the camera's main, sub or transcoded stream."""
        self.answer_sdp = answer_sdp
        self.created = time.time()
        self._started = time.monotonic()
        self._pc = pc
        self._track = track
        self._feed = feed
        self._fanout: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._close_reason: str | None = None
        self._connected_at: float | None = None
        self._silent = False
        self._ended = False
        self.end_reason: str | None = None
        self._task: asyncio.Task[None] | None = None
        self.audio: AudioHubTrack | None = None
        """The audio track, when the session sends audio (its counters: ``frames``, ``bytes``)."""
        self.audio_codec: str | None = None
        """``opus``, ``PCMU`` or ``PCMA`` when the session sends audio."""

    @property
    def state(self) -> str:
        if self._ended:
            return "closed"
        if self._silent:
            return "disconnected"
        state = self._pc.connectionState
        return "connecting" if state == "new" else state

    @property
    def packets_sent(self) -> int:
        return self._feed.frames if self._feed is not None else 0

    @property
    def bytes_sent(self) -> int:
        return self._feed.bytes if self._feed is not None else 0

    @property
    def dropped(self) -> int:
        return self._feed.dropped if self._feed is not None else 0

    def stats(self) -> SessionStats:
        connected = self._connected_at
        return SessionStats(
            id=self.id,
            camera_id=self.camera_id,
            created=self.created,
            state=self.state,
            connect_seconds=None if connected is None else connected - self._started,
            packets_sent=self.packets_sent,
            bytes_sent=self.bytes_sent,
            dropped=self.dropped,
            backlog_frames=self._feed.backlog_frames if self._feed is not None else 0,
            fast_path=self._fanout is not None,
            retransmitted=self._feed.retransmitted if isinstance(self._feed, FastRtpSender) else 0,
        )

    def _feed_ended(self) -> bool:
        if self._fanout is not None:
            return self._fanout.done()
        return self._track.readyState == "ended"

    def _request_close(self, reason: str) -> None:
        if self._close_reason is None:
            self._close_reason = reason
        self._wake.set()

    def __repr__(self) -> str:
        return f"WhepSession({self.id!r}, camera={self.camera_id!r}, state={self.state!r})"
