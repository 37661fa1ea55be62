"""A camera's video and sound read as one: two hub subscriptions, the earlier arrival first.

A :class:`Peeker` holds one subscription read alongside another (the packet taken
but not handed on yet, the task waiting for the next one); :class:`Interleaved`
reads a video subscription and an audio one through two of them, in the order the
packets arrived, as one stream of :class:`~streams.packets.MediaPacket`. It ends
(:class:`~streams.hub.HubClosed`) when the video does; audio that ends leaves the
video going alone, unless the reader said the sound is required (an MSE session
whose init segment has a sound track): then :class:`AudioEnded` says so. The MSE
output and the GB/T 28181 PS sender read their hubs through it.

Event loop only.
"""

from __future__ import annotations

import asyncio

from streams.hub import HubClosed, Subscription
from streams.packets import MediaPacket

__all__ = ["AudioEnded", "Interleaved", "Peeker"]


class AudioEnded(Exception):
    """The audio hub closed while its sound was required."""


class Peeker:
    """A subscription read alongside another one: the packet taken but not yet handed on, and
    the task waiting for the next one while the session waits for either."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self._next: MediaPacket | None = None
        self._task: asyncio.Task[MediaPacket] | None = None

    @property
    def idle(self) -> bool:
        """Nothing held, nothing waited for: the subscription can be read directly."""
        return self._next is None and self._task is None

    def peek(self) -> MediaPacket | None:
        """The next packet if one is at hand. Raises :class:`HubClosed`."""
        if self._next is None:
            task = self._task
            if task is None:
                self._next = self.subscription.get_nowait()
            elif task.done():
                self._task = None
                self._next = task.result()
        return self._next

    def take(self) -> MediaPacket:
        packet, self._next = self._next, None
        assert packet is not None
        return packet

    def waiter(self) -> asyncio.Task[MediaPacket]:
        if self._task is None:
            self._task = asyncio.ensure_future(self.subscription.get())
        return self._task

    def pending(self) -> int:
        task = self._task
        ready = task is not None and task.done() and not task.cancelled() and task.exception() is None
        return self.subscription.pending() + (self._next is not None) + ready

    def close(self) -> None:
        task, self._task, self._next = self._task, None, None
        if task is not None:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved: a HubClosed here is expected
        self.subscription.close()


class Interleaved:
    """A video subscription and, if given, an audio one, read as one; see the module docstring."""

    def __init__(self, video: Subscription, audio: Subscription | None) -> None:
        self.video = video
        self._video = Peeker(video)
        self._audio = None if audio is None else Peeker(audio)
        self.audio_required = False
        """Whether the audio hub closing ends the reading (:class:`AudioEnded`)."""

    @property
    def has_audio(self) -> bool:
        return self._audio is not None

    def pending(self) -> int:
        """Packets at hand in both subscriptions."""
        return self._video.pending() + (0 if self._audio is None else self._audio.pending())

    def drop_audio(self) -> None:
        """Read the video alone from now on."""
        if self._audio is not None:
            self._audio.close()
            self._audio = None

    async def get(self) -> MediaPacket:
        """The next packet of either, the earlier arrival first. Raises :class:`HubClosed`
        when the video hub closes, :class:`AudioEnded` when the audio hub closes while
        :attr:`audio_required`."""
        if self._audio is None and self._video.idle:
            return await self.video.get()
        while True:
            video = self._video.peek()
            audio = None
            if self._audio is not None:
                try:
                    audio = self._audio.peek()
                except HubClosed:
                    if self.audio_required:
                        raise AudioEnded from None
                    self.drop_audio()
                    continue
            if video is not None and (audio is None or video.received <= audio.received):
                return self._video.take()
            if audio is not None and self._audio is not None:
                return self._audio.take()
            waiters = {self._video.waiter()}
            if self._audio is not None:
                waiters.add(self._audio.waiter())
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)

    def close(self) -> None:
        self._video.close()
        self.drop_audio()
