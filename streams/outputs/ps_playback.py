"""GB/T 28181 playback and download: recorded video as MPEG-PS over RTP to a superior platform.

A :class:`PsPlayback` is a :class:`~streams.outputs.ps_sender.PsSession` fed by
recorded access units (:func:`streams.recording.packets.recorded_packets`) instead
of a hub: its own PS muxer, its own SSRC, the same three transports. It paces the
units on their media time at ``scale`` times real time (playback; a superior may
change the scale or pause and resume while it plays), or sends them as fast as the
socket takes them when ``scale`` is None (download over TCP, where the connection's
backpressure is the pace). Every access unit is sent at any scale.

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

from streams.outputs.ps_sender import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_SEND_TIMEOUT,
    PsSession,
    PsTransport,
    _Link,
)
from streams.packets import CLOCK_RATE
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
    ) -> None:
        super().__init__(
            destination,
            transport,
            ssrc,
            bind_host=bind_host,
            connect_timeout=connect_timeout,
            send_timeout=send_timeout,
        )
        self._packets = packets
        self._scale = scale
        self._playing = asyncio.Event()
        self._playing.set()
        self._anchor: tuple[float, int] | None = None
        """``(time.monotonic(), media ticks)`` the pace counts from; None: the next unit sets it."""
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

    def resume(self) -> None:
        self._anchor = None
        self._playing.set()

    def set_scale(self, scale: float) -> None:
        """Play at ``scale`` times real time from the next access unit on."""
        if scale <= 0:
            raise ValueError(f"a playback scale is positive, not {scale}")
        self._scale, self._anchor = scale, None

    async def _feed(self, link: _Link) -> str:
        async with contextlib.aclosing(self._packets) as packets:
            async for recorded in packets:
                await self._due(recorded.packet.decode_ts)
                await self._send(link, recorded.packet)
                self.position_ms = recorded.wall_ms
        self.finished = True
        return END_OF_RECORDING

    async def _due(self, ticks: int) -> None:
        """Wait while paused, then until ``ticks`` is due at the current scale."""
        while True:
            if not self._playing.is_set():
                await self._playing.wait()
            scale = self._scale
            if scale is None:
                return
            now = time.monotonic()
            if self._anchor is None:
                self._anchor = (now, ticks)
                return
            wall, media = self._anchor
            wait = wall + (ticks - media) / CLOCK_RATE / scale - now
            if wait < -MAX_LAG:
                self._anchor = (now, ticks)
                return
            if wait <= 0:
                return
            await asyncio.sleep(wait)
            if self._playing.is_set() and self._anchor == (wall, media):
                return
