"""The cluster drives the media plane: where this instance pulls each camera from.

Every camera starts pulled from nowhere (:meth:`ClusterMedia.prepare`, before the relay
and the cluster start), then follows what :class:`~vms.cluster.Cluster` says of its
owner: this instance → from the camera itself; another live instance → from that
instance's RTSP re-serve, on demand, as :data:`~vms.cluster.peers.CLUSTER_USER`; nobody
→ from nowhere. Each camera has one task that applies the latest decision, one at a
time under the camera's lock, so repoints of one camera never overlap and a decision
overtaken while a repoint runs is skipped; the cameras move independently, so the
fencing drop (every lease lost at once) stops every pull at once. A camera handed to
another instance is let go first (:meth:`ClusterMedia.let_go`, awaited by the cluster
before it writes the lease over), so its receiver never pulls it while this one does.
A camera that leaves this instance's hands also ends the pulls that other instances
had of it here: they reconnect to the new owner.

:func:`when_owned` keeps a camera's state changes from its alarms unless this instance
owns it: a peer pull that fails, or a camera nobody owns for a moment, is no camera
fault (the owner alone raises those); the state still shows in the statistics.

Event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from streams import NOWHERE, OWN, IngestState, StreamManager, Upstream
from vms.cluster.cluster import Cluster
from vms.cluster.peers import CLUSTER_USER, PeerLogin
from vms.cluster.types import InstanceInfo

log = logging.getLogger(__name__)

StateListener = Callable[[str, IngestState, IngestState, str | None], None]


def when_owned(manager: StreamManager, listener: StateListener) -> StateListener:
    """``listener``, told only of the cameras this instance pulls from the camera itself."""

    def owned_only(camera_id: str, old: IngestState, new: IngestState, error: str | None) -> None:
        if manager.upstream(camera_id) == OWN:
            listener(camera_id, old, new, error)

    return owned_only


class ClusterMedia:
    """See the module docstring."""

    def __init__(self, cluster: Cluster, manager: StreamManager, login: PeerLogin) -> None:
        self.login = login
        self._cluster = cluster
        self._manager = manager
        cameras = manager.camera_ids()
        self._wanted: dict[str, Upstream] = dict.fromkeys(cameras, NOWHERE)
        self._wake = {camera: asyncio.Event() for camera in cameras}
        self._applying = {camera: asyncio.Lock() for camera in cameras}
        self._tasks: list[asyncio.Task[None]] = []
        self.before_owning: Callable[[str], Awaitable[object]] | None = None
        """Called with a camera before this instance starts pulling (and recording) it: the
        recordings' recovery of what its previous owner left open."""

    def owns(self, camera_id: str) -> bool:
        """Whether this instance holds the camera's lease now."""
        return self._cluster.epoch(camera_id) is not None

    async def prepare(self) -> None:
        """Before the relay starts: every camera pulled from nowhere, and the cluster followed."""
        for camera in self._wanted:
            await self._manager.repoint(camera, NOWHERE)
        self._cluster.on_change(self._changed)
        self._cluster.letting_go = self.let_go

    def start(self) -> None:
        """Once the relay runs: apply what the cluster said so far, and every change from now on."""
        for camera, wake in self._wake.items():
            wake.set()
            self._tasks.append(asyncio.create_task(self._follow(camera, wake), name=f"pull of {camera}"))

    async def stop(self) -> None:
        """Stop following the cluster (before the relay stops). Idempotent."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _changed(self, camera_id: str, owner: InstanceInfo | None, mine: bool) -> None:
        wake = self._wake.get(camera_id)
        if wake is None:
            return
        self._wanted[camera_id] = self._upstream(owner, mine)
        wake.set()

    def _upstream(self, owner: InstanceInfo | None, mine: bool) -> Upstream:
        if mine:
            return OWN
        if owner is None:
            return NOWHERE
        upstream = self.login.upstream(owner)
        if upstream is None:
            log.warning("cluster: %s owns cameras but has no RTSP re-serve to pull them from", owner.id)
            return NOWHERE
        return upstream

    async def _follow(self, camera_id: str, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            wake.clear()
            await self._apply(camera_id)

    async def let_go(self, cameras: list[str]) -> None:
        """Apply what the cluster last said of ``cameras`` now (they were dropped: stop
        pulling them) and return once done: the cluster hands them over after this."""
        await asyncio.gather(*(self._apply(camera) for camera in cameras))

    async def _apply(self, camera_id: str) -> None:
        async with self._applying[camera_id]:
            wanted, was = self._wanted[camera_id], self._manager.upstream(camera_id)
            if wanted == was:
                return
            try:
                if wanted == OWN and self.before_owning is not None:
                    await self.before_owning(camera_id)
                await self._manager.repoint(camera_id, wanted)
            except Exception:
                log.exception("cluster: camera %s could not be pulled from %s", camera_id, wanted)
                return
            log.info("cluster: camera %s now pulled from %s", camera_id, wanted)
            if was == OWN:
                await self._end_peer_pulls(camera_id)

    async def _end_peer_pulls(self, camera_id: str) -> None:
        for session in self._manager.rtsp.sessions():
            if session.camera_id == camera_id and session.verdict.user == CLUSTER_USER:
                await session.stop("the camera moved to another instance")
