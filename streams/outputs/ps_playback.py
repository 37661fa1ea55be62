"""GB/T 28181 playback and download: recorded video as MPEG-PS over RTP to a superior platform.

A :class:`PsPlayback` is a :class:`~streams.outputs.ps_sender.PsSession` fed by
recorded access units (:func:`streams.recording.packets.recorded_packets`) instead
of a hub: its own PS muxer, its own SSRC, the same three transports. It paces the
units on their media time at ``scale`` times real time (playback; a superior may
change the scale or pause and resume while it plays), or sends them as fast as the
socket takes them when ``scale`` is None (download over TCP, where the connection's
backpressure is the pace). Every access unit is sent at any scale.

:meth:`PsPlayback.seek` hands it the recorded units from another point (read up
to their first keyframe before it returns, so the caller knows where it lands):
what was not sent yet of the old ones is dropped, the pace starts again from that
keyframe at the current scale, and the RTP sequence numbers run on. The media time,
hence the PES timestamps and the RTP timestamps, is whatever the new units carry:
:func:`~streams.recording.packets.recorded_packets` with the range's start as origin
makes it the position in the range, so it jumps with the seek (forward or back), as
a file read from another point does; receivers of the field (ZLMediaKit's stamp
correction, FFmpeg) take a jump as a discontinuity.

Sound: the recorded AAC frames go into the program stream with the video (the
muxer's PSM lists the sound of the file being sent, from its first keyframe on).

When the recording has been sent to its end (the asked range's, or where nothing
more is recorded) the session ends by itself with :data:`END_OF_RECORDING` and
:attr:`PsPlayback.finished` is True, so signalling can tell the superior the file
ended. Event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator

from streams.formats.mpeg_ps import PsMuxer
from streams.formats.ps_rtp import SharedPsUnits
from streams.outputs.ps_sender import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_SEND_TIMEOUT,
    PsSession,
    PsTransport,
    _Link,
)
from streams.outputs.ps_udp import DEFAULT_RTCP_TIMEOUT
from streams.packets import CLOCK_RATE, AudioInfo
from streams.recording.packets import RecordedPacket

__all__ = ["END_OF_RECORDING", "MAX_LAG", "PsPlayback"]

END_OF_RECORDING = "end of recording"
MAX_LAG = 1.0
"""Seconds behind its pace after which the session re-anchors instead of bursting."""


class PsPlayback(PsSession):
    """One playback or download session; see the module docstring."""

    def __init__(
        self,
        packets: AsyncGenerator[RecordedPacket, None],
        destination: tuple[str, int],
        transport: PsTransport,
        ssrc: int,
        *,
        scale: float | None = 1.0,
        bind_host: str = "0.0.0.0",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        rtcp_timeout: float = DEFAULT_RTCP_TIMEOUT,
    ) -> None:
        super().__init__(
            destination,
            transport,
            ssrc,
            bind_host=bind_host,
            connect_timeout=connect_timeout,
            send_timeout=send_timeout,
            rtcp_timeout=rtcp_timeout,
        )
        self._packets = packets
        self._seek: tuple[RecordedPacket, AsyncGenerator[RecordedPacket, None]] | None = None
        """The first unit and the rest of a seek not yet taken up by the feed."""
        self._scale = scale
        self._playing = asyncio.Event()
        self._playing.set()
        self._changed = asyncio.Event()
        """Set when a wait for the pace should look again (pause, resume, scale, seek)."""
        self._anchor: tuple[float, int] | None = None
        """``(time.monotonic(), media ticks)`` the pace counts from; None: the next unit sets it."""
        self._audio: AudioInfo | None = None
        """The sound the muxer lists."""
        self.finished = False
        """True once the recording was sent to its end."""
        self.position_ms: int | None = None
        """The wall clock of the last access unit sent."""

    @property
    def scale(self) -> float | None:
        return self._scale

    @property
    def paused(self) -> bool:
        return not self._playing.is_set()

    def pause(self) -> None:
        self._playing.clear()
        self._changed.set()

    def resume(self) -> None:
        self._anchor = None
        self._playing.set()
        self._changed.set()

    def set_scale(self, scale: float) -> None:
        """Play at ``scale`` times real time from the next access unit on."""
        if scale <= 0:
            raise ValueError(f"a playback scale is positive, not {scale}")
        self._scale, self._anchor = scale, None
        self._changed.set()

    async def seek(self, packets: AsyncGenerator[RecordedPacket, None]) -> RecordedPacket | None:
        """Go on with ``packets`` instead of the units not sent yet; their first unit (None,
        and nothing changes, when they are empty: ``packets`` is then closed)."""
        first = await anext(packets, None)
        if first is None:
            await packets.aclose()
            return None
        await self._drop_seek()
        self._seek = (first, packets)
        self._changed.set()
        return first

    async def _drop_seek(self) -> None:
        pending, self._seek = self._seek, None
        if pending is not None:
            await pending[1].aclose()

    async def _feed(self, link: _Link) -> str:
        recorded: RecordedPacket | None = None
        try:
            while True:
                if self._seek is not None:
                    recorded, following = self._seek
                    self._seek, self._anchor = None, None
                    await self._packets.aclose()
                    self._packets = following
                else:
                    recorded = await anext(self._packets, None)
                if recorded is None:
                    break
                if await self._due(recorded.packet.decode_ts) and self._muxes(recorded):
                    await self._send(link, recorded.packet)
                    self.position_ms = recorded.wall_ms
        finally:
            await self._packets.aclose()
            await self._drop_seek()
        self.finished = True
        return END_OF_RECORDING

    def _muxes(self, recorded: RecordedPacket) -> bool:
        """Whether the unit goes into the program stream: a keyframe of a file with other sound
        starts a muxer listing that sound; sound the muxer does not list is left out."""
        if recorded.packet.is_audio:
            return recorded.audio is not None and recorded.audio == self._audio
        if recorded.packet.keyframe and recorded.audio != self._audio:
            self._audio = recorded.audio
            self._shared = SharedPsUnits(PsMuxer(recorded.audio))
        return True

    async def _due(self, ticks: int) -> bool:
        """Wait while paused, then until ``ticks`` is due at the current scale; False when a
        seek came meanwhile (the unit is not to be sent)."""
        while self._seek is None:
            self._changed.clear()
            if not self._playing.is_set():
                await self._changed.wait()
                continue
            scale = self._scale
            if scale is None:
                return True
            now = time.monotonic()
            if self._anchor is None:
                self._anchor = (now, ticks)
                return True
            wall, media = self._anchor
            wait = wall + (ticks - media) / CLOCK_RATE / scale - now
            if wait < -MAX_LAG:
                self._anchor = (now, ticks)
                return True
            if wait <= 0:
                return True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._changed.wait()
        return False

    async def stop(self) -> None:
        await super().stop()
        await self._drop_seek()
