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
others. The fragments are computed once per camera (see
:mod:`streams.outputs.mse_fragments`), and the same bytes object goes to every
session of that camera: another viewer costs sending, not muxing.

Audio: a session opened with the camera's audio hub, when that hub carries
AAC, also reads an audio subscription and has an AAC track in its init
segments (a player appends both to one SourceBuffer); one fragment per audio
frame, shared per audio hub like the video ones, interleaved with the video
fragments in the order the packets arrived. Audio before the session's first
keyframe is not sent. Whether the track is there is decided at the first
keyframe, by whether audio is flowing then, and kept for the session: a
browser plays a muxed SourceBuffer only as far as both tracks reach, so
audio that stops (for ``audio_timeout`` while video goes on) or changes its
description ends the session, and the player's reconnection gets a fresh
one. Other audio codecs are not carried here (an AAC transcoder would be
needed): their hubs are ignored.

Event loop only; muxing is a few microseconds of byte shuffling per access
unit, done inline.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable

from streams.errors import CapacityError
from streams.hub import Hub, HubClosed, Subscription
from streams.outputs.interleave import AudioEnded, Interleaved
from streams.outputs.mse_fragments import (
    DEFAULT_CACHE_FRAGMENTS,
    MseFragment,
    MseInit,
    MseMessage,
    SharedAudio,
    SharedFragments,
)
from streams.packets import AudioInfo, MediaPacket
from streams.viewers import Seat, ViewerLedger

__all__ = [
    "MseFragment",
    "MseInit",
    "MseMessage",
    "MseOutput",
    "MseSession",
    "SharedAudio",
    "SharedFragments",
]

log = logging.getLogger(__name__)

DEFAULT_AUDIO_TIMEOUT = 3.0
"""Seconds without audio, while video goes on, that end a session with an audio track."""


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
        audio: tuple[Hub, Subscription, SharedAudio] | None = None,
        audio_timeout: float = DEFAULT_AUDIO_TIMEOUT,
    ) -> None:
        self.id = secrets.token_urlsafe(12)
        self.camera_id = camera_id
        self.hub = hub
        """The hub the session reads (a camera may have several: main, sub-stream, transcoded)."""
        self.audio_hub = None if audio is None else audio[0]
        """The audio hub the session was opened with, if it carries AAC."""
        self.started = time.time()
        """Wall-clock time (``time.time()``) the session opened."""
        self.ended: float | None = None
        """Wall-clock time it ended, or None while it runs."""
        self.end_reason: str | None = None
        self.bytes_sent = 0
        """Bytes of every message handed out (init segments included)."""
        self.fragments_sent = 0
        self.audio_sent = 0
        """Audio fragments among ``fragments_sent``."""
        self._sub = subscription
        self._packets = Interleaved(subscription, None if audio is None else audio[1])
        self._shared = shared
        self._on_end = on_end
        self._init: MseInit | None = None
        self._held: MseFragment | None = None
        self._audio_shared = None if audio is None else audio[2]
        self._audio_info: AudioInfo | None = None
        """The audio track's description, once the first init message has one."""
        self._audio_timeout = audio_timeout
        self._audio_seen = 0.0

    @property
    def audio(self) -> AudioInfo | None:
        """The audio track sent to this viewer (decided at its first keyframe), or None."""
        return self._audio_info

    @property
    def dropped(self) -> int:
        """Access units the hub skipped because this viewer fell behind."""
        return self._sub.dropped

    def pending(self) -> int:
        """Messages at hand (queued packets, plus a fragment held back behind an init message)."""
        return self._packets.pending() + (self._held is not None)

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
                packet = await self._next_packet()
            except HubClosed:
                self._end("camera stream ended")
                raise StopAsyncIteration from None
            message = self._audio_message(packet) if packet.is_audio else self._video_message(packet)
            if self.ended is not None:
                raise StopAsyncIteration
            if message is not None:
                return self._count(message)

    async def _next_packet(self) -> MediaPacket:
        """The next packet of either subscription, the earlier arrival first. Raises
        :class:`HubClosed` when the video hub closes, or the audio hub of a sound track."""
        try:
            return await self._packets.get()
        except AudioEnded:
            self._end("audio stream ended")
            raise HubClosed from None

    def _video_message(self, packet: MediaPacket) -> MseMessage | None:
        if self._audio_info is not None and time.monotonic() - self._audio_seen > self._audio_timeout:
            self._end("audio stopped")
            return None
        if self._init is None and packet.keyframe and self._packets.has_audio:
            self._choose_audio()
        found = self._shared.get(packet, self._audio_info)
        if found is None:
            return None
        init, fragment = found
        if init is not self._init:
            if not packet.keyframe:
                return None  # the new description starts at a keyframe
            self._init = init
            self._held = fragment
            return init
        return fragment

    def _audio_message(self, packet: MediaPacket) -> MseMessage | None:
        if self._init is None or self._audio_info is None or self._audio_shared is None:
            return None  # nothing before the first keyframe
        self._audio_seen = time.monotonic()
        assert self.audio_hub is not None
        if self.audio_hub.audio != self._audio_info:
            self._end("audio stream changed")
            return None
        return self._audio_shared.get(packet, self._audio_info)

    def _choose_audio(self) -> None:
        """At the first keyframe: an audio track if AAC audio is flowing, else none for good."""
        assert self.audio_hub is not None
        info, last = self.audio_hub.audio, self.audio_hub.stats.last_packet
        now = time.monotonic()
        if (
            info is not None
            and info.codec == "aac"
            and last is not None
            and now - last <= self._audio_timeout
        ):
            self._audio_info = info
            self._audio_seen = now
            self._packets.audio_required = True
        else:
            log.debug("MSE session %s: no audio flowing, video only", self.id)
            self._packets.drop_audio()

    def _count(self, message: MseMessage) -> MseMessage:
        self.bytes_sent += len(message.data)
        if isinstance(message, MseFragment):
            self.fragments_sent += 1
            self.audio_sent += message.audio
        return message

    def close(self, reason: str = "closed") -> None:
        """End the session and leave the hubs. Idempotent; a pending iteration stops."""
        self._end(reason)

    def _end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = time.time()
            self.end_reason = reason
            self._packets.close()
            self._on_end(self)

    def __repr__(self) -> str:
        return f"MseSession({self.id!r}, camera={self.camera_id!r}, ended={self.ended is not None})"


class MseOutput:
    """Every MSE viewer session of the relay, and the shared fragments of each hub they read."""

    def __init__(
        self,
        *,
        viewers: ViewerLedger | None = None,
        cache_fragments: int = DEFAULT_CACHE_FRAGMENTS,
        audio_timeout: float = DEFAULT_AUDIO_TIMEOUT,
    ) -> None:
        self._viewers = viewers or ViewerLedger()
        """Where each session takes its viewer seat (the relay's, shared with the other outputs)."""
        self._seats: dict[str, Seat] = {}
        self._cache_fragments = cache_fragments
        self._audio_timeout = audio_timeout
        self._sessions: dict[str, MseSession] = {}
        self._shared: dict[Hub, SharedFragments] = {}
        self._shared_audio: dict[Hub, SharedAudio] = {}
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

    def shared_audio(self, audio_hub: Hub) -> SharedAudio | None:
        """The audio hub's shared fragments while it has sessions (for figures and tests)."""
        return self._shared_audio.get(audio_hub)

    def open(
        self, camera_id: str, hub: Hub, audio_hub: Hub | None = None, *, owner: str | None = None
    ) -> MseSession:
        """A new session on ``hub``'s camera, with the AAC audio of ``audio_hub`` if it has
        some (see the module docstring); ``owner`` is an opaque key of the viewer, for the
        per-owner caps. Raises :class:`CapacityError` when a viewer cap is reached or the
        output is stopping, and :class:`~streams.hub.HubClosed` if ``hub`` is closed (a
        closed audio hub just leaves the audio out)."""
        if self._stopped:
            raise CapacityError("the MSE output is shutting down")
        seat = self._viewers.admit(camera_id, "mse", owner)
        try:
            subscription = hub.subscribe()
        except HubClosed:
            self._viewers.release(seat)
            raise
        shared = self._shared.get(hub)
        if shared is None:  # the hub's first MSE viewer
            shared = self._shared[hub] = SharedFragments(self._cache_fragments)
        audio = self._subscribe_audio(audio_hub) if audio_hub is not None else None
        session = MseSession(camera_id, hub, subscription, shared, self._ended, audio, self._audio_timeout)
        self._sessions[session.id] = session
        self._seats[session.id] = seat
        log.info("MSE session %s for %s opened", session.id, camera_id)
        return session

    def _subscribe_audio(self, audio_hub: Hub) -> tuple[Hub, Subscription, SharedAudio] | None:
        info = audio_hub.audio
        if info is not None and info.codec != "aac":
            log.debug("%s: %s audio cannot go into MP4 here, video only", audio_hub.name, info.codec)
            return None
        try:
            subscription = audio_hub.subscribe()
        except HubClosed:
            return None
        shared = self._shared_audio.get(audio_hub)
        if shared is None:
            shared = self._shared_audio[audio_hub] = SharedAudio(self._cache_fragments)
        return audio_hub, subscription, shared

    def _ended(self, session: MseSession) -> None:
        if self._sessions.pop(session.id, None) is None:
            return
        self._viewers.release(self._seats.pop(session.id))
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
        audio_hub = session.audio_hub
        if audio_hub is not None and not any(s.audio_hub is audio_hub for s in self._sessions.values()):
            self._shared_audio.pop(audio_hub, None)

    async def stop(self) -> None:
        """Close every session. Idempotent."""
        self._stopped = True
        for session in list(self._sessions.values()):
            session.close("relay stopping")
