"""MSE egress: fragmented MP4 for browsers that play video through Media Source Extensions.

:class:`MseOutput` owns every MSE viewer session of the relay. A session
(:class:`MseSession`) is an async iterator of messages for one viewer: an
:class:`MseInit` first (codec, MIME type, size and the init segment), then one
:class:`MseFragment` per access unit; a new :class:`MseInit` comes before the
keyframe where the camera's parameter sets (codec, size, profile) change. The
transport (a WebSocket, in the control plane) only sends what it gets.

Each session reads its own hub subscription, so it starts at the GOP cache's
keyframe, and a session whose viewer reads too slowly is skipped forward to
the next keyframe by the hub, like any subscriber, without holding back the
others. The fragments are computed once per camera, by a shared
:class:`~streams.outputs.fmp4.Fmp4Writer`, and the same bytes object goes to
every session of that camera: another viewer costs sending, not muxing.

Event loop only; muxing is a few microseconds of byte shuffling per access
unit, done inline.
"""

from __future__ import annotations

import collections
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from streams.errors import CapacityError
from streams.hub import Hub, HubClosed, Subscription
from streams.outputs.fmp4 import Fmp4Writer, InitSegment
from streams.packets import MediaPacket

__all__ = ["MseFragment", "MseInit", "MseMessage", "MseOutput", "MseSession", "SharedFragments"]

log = logging.getLogger(__name__)

DEFAULT_CACHE_FRAGMENTS = 512
"""Fragments a camera keeps for its sessions: more than a hub subscription can queue."""


@dataclass(frozen=True, slots=True)
class MseInit:
    """Sent first, and again before a keyframe whose stream description changed."""

    codec: str
    """RFC 6381 codec string, for example ``avc1.64001f``."""
    mime: str
    """For ``MediaSource.isTypeSupported`` / ``addSourceBuffer``: ``video/mp4; codecs="..."``."""
    width: int
    height: int
    data: bytes
    """The init segment (``ftyp`` + ``moov``)."""


@dataclass(frozen=True, slots=True)
class MseFragment:
    """One access unit as ``moof`` + ``mdat``; the same object for every session of a camera."""

    data: bytes
    keyframe: bool
    pts: int
    """Presentation time of the access unit in the hub's 90 kHz clock (without the file's offset)."""


MseMessage = MseInit | MseFragment


class SharedFragments:
    """One camera's fragments, computed once and shared by its sessions.

    Keeps the most recent ``capacity`` fragments, keyed by packet identity (the
    hub hands the same MediaPacket object to every subscriber).
    """

    def __init__(self, capacity: int = DEFAULT_CACHE_FRAGMENTS) -> None:
        self._capacity = capacity
        self._writer = Fmp4Writer()
        self._cache: collections.OrderedDict[int, tuple[MediaPacket, tuple[MseInit, MseFragment] | None]] = (
            collections.OrderedDict()
        )
        self._inits: dict[InitSegment, MseInit] = {}

    @property
    def muxed(self) -> int:
        """Fragments written so far."""
        return self._writer.written

    def get(self, packet: MediaPacket) -> tuple[MseInit, MseFragment] | None:
        """``packet``'s fragment and the init message it needs, or None if it cannot be
        sent (no init segment known yet)."""
        entry = self._cache.get(id(packet))
        if entry is not None and entry[0] is packet:
            return entry[1]
        written = self._writer.write(packet)
        result = None
        if written is not None:
            fragment = MseFragment(written.data, written.keyframe, written.pts)
            result = (self._init_message(written.init), fragment)
        self._cache[id(packet)] = (packet, result)
        self._cache.move_to_end(id(packet))
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return result

    def _init_message(self, init: InitSegment) -> MseInit:
        message = self._inits.get(init)
        if message is None:
            message = MseInit(init.codec, init.mime, init.width, init.height, init.data)
            self._inits = {init: message}  # only the current one is worth keeping
        return message


class MseSession:
    """One MSE viewer: an async iterator of :data:`MseMessage`. See the module docstring.

    Created by :meth:`MseOutput.open`; :meth:`close` ends it (iteration stops),
    as does the camera's hub closing.
    """

    def __init__(
        self,
        camera_id: str,
        hub: Hub,
        subscription: Subscription,
        shared: SharedFragments,
        on_end: Callable[[MseSession], None],
    ) -> None:
        self.id = secrets.token_urlsafe(12)
        self.camera_id = camera_id
        self.hub = hub
        """The hub the session reads (a camera may have several: main, sub-stream, transcoded)."""
        self.started = time.time()
        """Wall-clock time (``time.time()``) the session opened."""
        self.ended: float | None = None
        """Wall-clock time it ended, or None while it runs."""
        self.end_reason: str | None = None
        self.bytes_sent = 0
        """Bytes of every message handed out (init segments included)."""
        self.fragments_sent = 0
        self._sub = subscription
        self._shared = shared
        self._on_end = on_end
        self._init: MseInit | None = None
        self._held: MseFragment | None = None

    @property
    def dropped(self) -> int:
        """Access units the hub skipped because this viewer fell behind."""
        return self._sub.dropped

    def pending(self) -> int:
        """Messages at hand (queued packets, plus a fragment held back behind an init message)."""
        return self._sub.pending() + (self._held is not None)

    def __aiter__(self) -> AsyncIterator[MseMessage]:
        return self

    async def __anext__(self) -> MseMessage:
        if self.ended is not None:
            raise StopAsyncIteration
        if self._held is not None:
            fragment, self._held = self._held, None
            return self._count(fragment)
        while True:
            try:
                packet = await self._sub.get()
            except HubClosed:
                self._end("camera stream ended")
                raise StopAsyncIteration from None
            found = self._shared.get(packet)
            if found is None:
                continue
            init, fragment = found
            if init is not self._init:
                if not packet.keyframe:
                    continue  # the new description starts at a keyframe
                self._init = init
                self._held = fragment
                return self._count(init)
            return self._count(fragment)

    def _count(self, message: MseMessage) -> MseMessage:
        self.bytes_sent += len(message.data)
        if isinstance(message, MseFragment):
            self.fragments_sent += 1
        return message

    def close(self, reason: str = "closed") -> None:
        """End the session and leave the hub. Idempotent; a pending iteration stops."""
        self._end(reason)

    def _end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = time.time()
            self.end_reason = reason
            self._sub.close()
            self._on_end(self)

    def __repr__(self) -> str:
        return f"MseSession({self.id!r}, camera={self.camera_id!r}, ended={self.ended is not None})"


class MseOutput:
    """Every MSE viewer session of the relay, and the shared fragments of each hub they read."""

    def __init__(
        self,
        *,
        max_sessions_per_camera: int = 32,
        max_sessions_total: int = 256,
        cache_fragments: int = DEFAULT_CACHE_FRAGMENTS,
    ) -> None:
        self._max_per_camera = max_sessions_per_camera
        self._max_total = max_sessions_total
        self._cache_fragments = cache_fragments
        self._sessions: dict[str, MseSession] = {}
        self._shared: dict[Hub, SharedFragments] = {}
        self._stopped = False

    def session_count(self, camera_id: str | None = None) -> int:
        """Open sessions, of one camera or of all."""
        if camera_id is None:
            return len(self._sessions)
        return sum(1 for s in self._sessions.values() if s.camera_id == camera_id)

    def sessions(self) -> list[MseSession]:
        return list(self._sessions.values())

    def shared(self, hub: Hub) -> SharedFragments | None:
        """The hub's shared fragments while it has sessions (for figures and tests)."""
        return self._shared.get(hub)

    def open(self, camera_id: str, hub: Hub) -> MseSession:
        """A new session on ``hub``'s camera. Raises :class:`CapacityError` when a cap is
        reached or the output is stopping, and :class:`~streams.hub.HubClosed` if the hub is."""
        if self._stopped:
            raise CapacityError("the MSE output is shutting down")
        if len(self._sessions) >= self._max_total:
            raise CapacityError(f"the relay already serves {self._max_total} MSE viewers")
        if self.session_count(camera_id) >= self._max_per_camera:
            raise CapacityError(f"camera {camera_id} already has {self._max_per_camera} MSE viewers")
        subscription = hub.subscribe()
        shared = self._shared.get(hub)
        if shared is None:  # the hub's first MSE viewer
            shared = self._shared[hub] = SharedFragments(self._cache_fragments)
        session = MseSession(camera_id, hub, subscription, shared, self._ended)
        self._sessions[session.id] = session
        log.info("MSE session %s for %s opened", session.id, camera_id)
        return session

    def _ended(self, session: MseSession) -> None:
        if self._sessions.pop(session.id, None) is None:
            return
        log.info(
            "MSE session %s for %s ended (%s): %d fragments, %d bytes, %d dropped",
            session.id,
            session.camera_id,
            session.end_reason,
            session.fragments_sent,
            session.bytes_sent,
            session.dropped,
        )
        if not any(s.hub is session.hub for s in self._sessions.values()):
            self._shared.pop(session.hub, None)

    async def stop(self) -> None:
        """Close every session. Idempotent."""
        self._stopped = True
        for session in list(self._sessions.values()):
            session.close("relay stopping")
