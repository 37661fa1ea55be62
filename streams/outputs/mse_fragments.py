"""What MSE sessions send, computed once per hub: init messages and fragments.

:class:`SharedFragments` turns one video hub's packets into fragments (with a
shared :class:`~streams.formats.fmp4.Fmp4Writer`) and builds the init message a
session needs, with or without an AAC track; :class:`SharedAudio` does the
same for one audio hub's AAC frames (with an
:class:`~streams.formats.fmp4_audio.AacWriter`). Both keep the most recent
results keyed by packet identity (a hub hands the same MediaPacket object to
every subscriber), so every session of a camera gets the same bytes objects:
another viewer costs sending, not muxing.

Event loop only, like the sessions that use them.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Generic, TypeVar

from streams.formats.fmp4 import TIME_OFFSET, Fmp4Writer, InitSegment, with_audio
from streams.formats.fmp4_audio import AacWriter
from streams.packets import AudioInfo, MediaPacket

__all__ = [
    "DEFAULT_CACHE_FRAGMENTS",
    "MseFragment",
    "MseInit",
    "MseMessage",
    "SharedAudio",
    "SharedFragments",
]

DEFAULT_CACHE_FRAGMENTS = 512
"""Fragments a hub keeps for its sessions: more than a hub subscription can queue."""

T = TypeVar("T")


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
    audio: str | None = None
    """RFC 6381 codec string of the audio track (``mp4a.40.2``), None without one."""


@dataclass(frozen=True, slots=True)
class MseFragment:
    """One access unit or audio frame as ``moof`` + ``mdat``; the same object for every
    session of a camera."""

    data: bytes
    keyframe: bool
    """True for a video keyframe, and for every audio frame."""
    pts: int
    """Presentation time of the access unit in the hub's 90 kHz clock (without the file's offset)."""
    audio: bool = False
    """An audio frame (track 2), not video."""


MseMessage = MseInit | MseFragment


class SharedFragments:
    """One camera's fragments, computed once and shared by its sessions.

    Keeps the most recent ``capacity`` fragments, keyed by packet identity (the
    hub hands the same MediaPacket object to every subscriber).
    """

    def __init__(self, capacity: int = DEFAULT_CACHE_FRAGMENTS) -> None:
        self._writer = Fmp4Writer()
        self._cache = _PacketCache[tuple[InitSegment, MseFragment]](capacity)
        self._inits: dict[tuple[InitSegment, AudioInfo | None], MseInit] = {}

    @property
    def muxed(self) -> int:
        """Fragments written so far."""
        return self._writer.written

    def get(self, packet: MediaPacket, audio: AudioInfo | None = None) -> tuple[MseInit, MseFragment] | None:
        """``packet``'s fragment and the init message it needs (with an AAC track described
        by ``audio``, if given), or None if it cannot be sent (no init segment known yet)."""
        found, result = self._cache.get(packet)
        if not found:
            written = self._writer.write(packet)
            if written is not None:
                result = (written.init, MseFragment(written.data, written.keyframe, written.pts))
            self._cache.put(packet, result)
        if result is None:
            return None
        return self._init_message(result[0], audio), result[1]

    def _init_message(self, init: InitSegment, audio: AudioInfo | None) -> MseInit:
        message = self._inits.get((init, audio))
        if message is None:
            if not any(key[0] == init for key in self._inits):
                self._inits = {}  # only the current video description is worth keeping
            full = with_audio(init, audio)
            codec = None if audio is None else audio.codec_string
            message = MseInit(init.codec, full.mime, init.width, init.height, full.data, codec)
            self._inits[(init, audio)] = message
        return message


class SharedAudio:
    """One audio hub's fragments (AAC), computed once and shared by its sessions."""

    def __init__(self, capacity: int = DEFAULT_CACHE_FRAGMENTS) -> None:
        self._writer: AacWriter | None = None
        self._cache = _PacketCache[MseFragment](capacity)

    @property
    def muxed(self) -> int:
        """Fragments written so far (by the current writer)."""
        return 0 if self._writer is None else self._writer.written

    def get(self, packet: MediaPacket, info: AudioInfo) -> MseFragment | None:
        """The fragment of one AAC frame described by ``info``, or None for a frame left out
        to keep the audio timeline free of overlaps."""
        found, fragment = self._cache.get(packet)
        if not found:
            if self._writer is None or self._writer.info != info:
                self._writer = AacWriter(info, TIME_OFFSET)
            written = self._writer.write(packet)
            if written is not None:
                fragment = MseFragment(written.data, True, written.pts, audio=True)
            self._cache.put(packet, fragment)
        return fragment


class _PacketCache(Generic[T]):
    """What was computed for the most recent packets, keyed by identity: the hub hands the
    same MediaPacket object to every subscriber."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: collections.OrderedDict[int, tuple[MediaPacket, T | None]] = collections.OrderedDict()

    def get(self, packet: MediaPacket) -> tuple[bool, T | None]:
        """(whether ``packet`` is known, what was stored for it)."""
        entry = self._entries.get(id(packet))
        if entry is not None and entry[0] is packet:
            return True, entry[1]
        return False, None

    def put(self, packet: MediaPacket, value: T | None) -> None:
        self._entries[id(packet)] = (packet, value)
        self._entries.move_to_end(id(packet))
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
