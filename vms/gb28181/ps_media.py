"""The cascade's live sessions sent by the media plane: :class:`~vms.gb28181.media.MediaStarter`
over the relay's PS-over-RTP output (:class:`streams.PsOutput`).

A session is prepared when the INVITE is answered (its socket open, a ``tcp-passive``
one already listening, so the SDP answer carries a real port) and starts sending at the
ACK, from the GOP cache's keyframe. It sends the camera's main stream, as it arrives.

Event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib

from streams import PsOutput, PsSender, StreamManager
from vms.gb28181.media import MediaSession, MediaTarget


class _Session:
    """One prepared :class:`~streams.PsSender`, seen as a :class:`~vms.gb28181.media.MediaSession`."""

    def __init__(self, sender: PsSender) -> None:
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

    def __init__(self, manager: StreamManager) -> None:
        self._manager = manager
        self.output = PsOutput()

    async def open(self, camera_id: str, target: MediaTarget) -> MediaSession:
        hub = self._manager.hub(camera_id)
        sender = await self.output.open(
            hub, (target.host, target.port), target.transport, target.ssrc, start=False
        )
        return _Session(sender)

    async def stop(self) -> None:
        await self.output.stop()
