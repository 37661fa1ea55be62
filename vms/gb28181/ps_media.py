"""The cascade's sessions sent by the media plane: :class:`~vms.gb28181.media.MediaStarter`
over the relay's PS-over-RTP output (:class:`streams.PsOutput`), and
:class:`~vms.gb28181.media.RecordStarter` over recorded segments (:class:`streams.PsPlayback`).

A session is prepared when the INVITE is answered (its socket open, a ``tcp-passive``
one already listening, so the SDP answer carries a real port) and starts sending at the
ACK: a live one from the GOP cache's keyframe, sending the camera's main stream as it
arrives, with its sound when that is relayed and a program stream can carry it,
seated among the camera's viewers (it counts against the relay's viewer caps with
every other protocol, and a full camera refuses it with
:class:`~streams.CapacityError`); a playback one from the keyframe at or before the
range's start, of the stream the camera records (:meth:`vms.config.Config.record_stream`),
read from the segments :class:`~vms.recordings.RecordingIndex` lists when the INVITE comes.
A seek in a playback lists them again from the point asked, as the INVITE did from its
start, and the media time stays the position in the range (see :class:`~streams.PsPlayback`).

Event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from streams import (
    DEFAULT_RTCP_TIMEOUT,
    PsOutput,
    PsPlayback,
    PsSession,
    RecordedPacket,
    SourceSegment,
    StreamManager,
    recorded_packets,
)
from vms.config import Config
from vms.gb28181.media import InvalidRange, MediaSession, MediaTarget, PlaybackSession, Span
from vms.recordings import RecordingIndex, to_ms


class _Session:
    """One prepared :class:`~streams.PsSession`, seen as a :class:`~vms.gb28181.media.MediaSession`."""

    def __init__(self, sender: PsSession) -> None:
        self._sender = sender
        self._done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._watch: asyncio.Task[None] | None = None

    @property
    def local_port(self) -> int:
        return self._sender.local_port or 0

    @property
    def bytes_sent(self) -> int:
        return self._sender.bytes

    @property
    def done(self) -> asyncio.Future[str]:
        return self._done

    async def start(self) -> None:
        await self._sender.start()
        self._watch = asyncio.create_task(self._wait(), name=f"ps-session-{self._sender.ssrc}")

    async def _wait(self) -> None:
        reason = await self._sender.wait()
        if not self._done.done():
            self._done.set_result(reason)

    async def stop(self) -> None:
        await self._sender.stop()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if not self._done.done():
            self._done.set_result("stopped")


class PsMedia:
    """Live sessions of the manager's cameras, sharing one PS mux per camera."""

    def __init__(self, manager: StreamManager, *, rtcp_timeout: float = DEFAULT_RTCP_TIMEOUT) -> None:
        self._manager = manager
        self.output = PsOutput(viewers=manager.viewers, rtcp_timeout=rtcp_timeout)

    async def open(self, camera_id: str, target: MediaTarget) -> MediaSession:
        hub, audio_hub = self._manager.rtsp_media(camera_id)
        sender = await self.output.open(
            camera_id,
            hub,
            (target.host, target.port),
            target.transport,
            target.ssrc,
            audio_hub=audio_hub,
            bind_host=target.bind_host,
            start=False,
        )
        return _Session(sender)

    async def stop(self) -> None:
        await self.output.stop()


Opener = Callable[[datetime], Awaitable[AsyncGenerator[RecordedPacket, None]]]
"""The recorded units of a playback's range from a moment in it on."""


class _Playback(_Session):
    """A :class:`~streams.PsPlayback`, seen as a :class:`~vms.gb28181.media.PlaybackSession`."""

    def __init__(self, sender: PsPlayback, start: datetime, end: datetime, opener: Opener) -> None:
        super().__init__(sender)
        self._playback = sender
        self._start, self._end = start, end
        self._opener = opener

    @property
    def finished(self) -> bool:
        return self._playback.finished

    def pause(self) -> None:
        self._playback.pause()

    def resume(self) -> None:
        self._playback.resume()

    def set_scale(self, scale: float) -> None:
        self._playback.set_scale(scale)

    async def seek(self, position: float) -> float:
        length = (self._end - self._start).total_seconds()
        if not 0 <= position < length:
            raise InvalidRange(f"npt={position:g} is outside the playback's {length:g} s")
        first = await self._playback.seek(await self._opener(self._start + timedelta(seconds=position)))
        if first is None:
            raise InvalidRange(f"nothing is recorded from npt={position:g} to the playback's end")
        return max(0.0, first.wall_ms / 1000 - self._start.timestamp())


class RecordedMedia:
    """Playback and download sessions of the cameras' recordings."""

    def __init__(
        self, config: Config, index: RecordingIndex, *, rtcp_timeout: float = DEFAULT_RTCP_TIMEOUT
    ) -> None:
        self._config = config
        self._index = index
        self._rtcp_timeout = rtcp_timeout

    def _stream(self, camera_id: str) -> str:
        return self._config.record_stream(self._config.camera(camera_id))

    async def spans(self, camera_id: str, start: datetime, end: datetime) -> list[Span]:
        found = await self._index.spans(camera_id, self._stream(camera_id), start, end)
        return [(span.start, span.end) for span in found.spans]

    async def open_recording(
        self, camera_id: str, target: MediaTarget, start: datetime, end: datetime, scale: float | None
    ) -> PlaybackSession:
        async def opener(at: datetime) -> AsyncGenerator[RecordedPacket, None]:
            sources = await self._index.playable(camera_id, self._stream(camera_id), at, end)
            return recorded_packets(_each(sources), to_ms(at), to_ms(end), origin_ms=to_ms(start))

        packets = await opener(start)
        sender = PsPlayback(
            packets,
            (target.host, target.port),
            target.transport,
            target.ssrc,
            scale=scale,
            bind_host=target.bind_host,
            rtcp_timeout=self._rtcp_timeout,
        )
        try:
            await sender.prepare()
        except OSError:
            await packets.aclose()
            raise
        return _Playback(sender, start, end, opener)


async def _each(sources: Sequence[SourceSegment]) -> AsyncIterator[SourceSegment]:
    for source in sources:
        yield source
