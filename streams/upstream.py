"""Where a camera is pulled from when several instances share the cameras.

Alone, an instance pulls every camera from the camera itself (:data:`OWN`). In a
deployment of several, each camera has one owner instance, which pulls it from
the camera (always, or on demand as configured) and runs its owner-only outputs
(the picture analysis and the recorder: work done once for the whole
deployment, see :mod:`streams.outputs.base`). Every other instance pulls it from
the owner's RTSP re-serve (a :class:`Peer`), and only while someone here needs
it: on demand, closed ``idle_timeout`` after the last local viewer. While nobody
owns it (its owner died and no other instance took it over yet) it is pulled
from nowhere (:data:`NOWHERE`): its state is ``unowned``, new viewers wait up to
``info_timeout`` for an owner and are then refused with :class:`CameraUnowned`.

The control plane decides who owns what and calls
:meth:`~streams.manager.StreamManager.repoint`; :class:`CameraPull` carries the
switch out for one camera: owner-only outputs stop before the camera leaves
this instance's hands and start once it is back; each of its streams (main and
sub) is repointed (:meth:`~streams.ingest.Ingest.repoint`), so its hubs, and the
viewers on them, stay: they see a gap, then the new source's first keyframe, on
a timeline that goes on.

Event loop only.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from streams.errors import StreamNotReady
from streams.ingest import Ingest, IngestPolicy
from streams.outputs.base import StreamOutput
from streams.sources import Source, SourceOptions, open_source
from streams.specs import CameraSpec, StreamName, UpstreamKind

__all__ = ["NOWHERE", "OWN", "CameraPull", "CameraUnowned", "Peer", "Upstream", "UpstreamKind"]


class CameraUnowned(StreamNotReady):
    """No instance pulls the camera now: its owner is gone and none took it over yet."""


@dataclass(frozen=True, slots=True)
class Peer:
    """The instance that owns a camera, as another instance pulls it: through its RTSP re-serve."""

    instance: str
    """The owner's id, shown in statistics."""
    rtsp_root: str
    """The owner's RTSP re-serve, ``rtsp://host:port``: the camera's streams are at
    ``/<camera>`` and ``/<camera>/sub`` below it."""
    username: str
    """An account the owner's RTSP re-serve admits (Digest), for the pulls between instances."""
    password: str = dataclasses.field(repr=False)

    def url(self, camera_id: str, stream: StreamName) -> str:
        path = camera_id if stream == "main" else f"{camera_id}/sub"
        return f"{self.rtsp_root.rstrip('/')}/{path}"


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where a camera is pulled from: :data:`OWN`, :data:`NOWHERE` or :meth:`of` a peer."""

    kind: UpstreamKind
    peer: Peer | None = None

    def __post_init__(self) -> None:
        if (self.kind == "peer") != (self.peer is not None):
            raise ValueError("a peer upstream names its peer, and only it does")

    @classmethod
    def of(cls, peer: Peer) -> Upstream:
        """Pull from ``peer``, which owns the camera."""
        return cls("peer", peer)

    def __str__(self) -> str:
        return f"peer {self.peer.instance}" if self.peer is not None else self.kind


OWN = Upstream("own")
"""This instance owns the camera: pull it from the camera itself."""
NOWHERE = Upstream("none")
"""Nobody owns the camera now: pull nothing."""


class PulledStream(Protocol):
    """One stream of a camera, as a switch of upstream sees it."""

    @property
    def kind(self) -> StreamName: ...

    @property
    def ingest(self) -> Ingest: ...

    @property
    def owner_outputs(self) -> Sequence[StreamOutput]:
        """Its outputs that run only while this instance owns the camera."""
        ...


class CameraPull:
    """Where one camera is pulled from, and the switch from one upstream to another.

    ``answer_within``: seconds an owner may take to answer an RTSP request of a peer:
    its ``DESCRIBE`` waits for the stream's first keyframe (``info_timeout``), which
    takes a moment when the owner itself connects the camera on demand.
    """

    def __init__(self, spec: CameraSpec, streams: Sequence[PulledStream], *, answer_within: float) -> None:
        self.spec = spec
        self._streams = streams
        self._answer_within = answer_within
        self._upstream = OWN
        self._lock = asyncio.Lock()
        self._pulled = asyncio.Event()
        self._pulled.set()

    @property
    def upstream(self) -> Upstream:
        return self._upstream

    @property
    def owned(self) -> bool:
        return self._upstream.kind == "own"

    async def start(self) -> None:
        """Start the owner-only outputs if this instance owns the camera (the manager's start)."""
        if self.owned:
            await self._start_owner_outputs()

    async def repoint(self, upstream: Upstream, *, running: bool) -> None:
        """Pull the camera from ``upstream`` from now on. ``running``: the manager is started,
        so outputs start and stop with the switch; before that, only the upstream is set."""
        async with self._lock:
            if upstream == self._upstream:
                return
            was_owned = self.owned
            if was_owned and running:
                for stream in self._streams:
                    for output in reversed(stream.owner_outputs):
                        await output.stop()
            self._upstream = upstream
            if upstream.kind == "none":
                self._pulled.clear()
            else:
                self._pulled.set()
            for stream in self._streams:
                await stream.ingest.repoint(self._source(stream.kind), self._policy())
            if self.owned and not was_owned and running:
                await self._start_owner_outputs()

    async def _start_owner_outputs(self) -> None:
        for stream in self._streams:
            for output in stream.owner_outputs:
                await output.start()

    def _source(self, stream: StreamName) -> Source | None:
        upstream = self._upstream
        if upstream.kind == "none":
            return None
        sub = self.spec.sub_source
        options = sub if stream == "sub" and sub is not None else self.spec.source
        if upstream.peer is not None:
            options = self._from_peer(options, upstream.peer, stream)
        return open_source(options)

    def _from_peer(self, options: SourceOptions, peer: Peer, stream: StreamName) -> SourceOptions:
        """The camera's own options, pointed at the owner's re-serve of ``stream``. Always over
        TCP: one port to open between instances, and no loss to conceal."""
        return dataclasses.replace(
            options,
            url=peer.url(self.spec.id, stream),
            transport="tcp",
            username=peer.username,
            password=peer.password,
            connect_timeout=max(options.connect_timeout, self._answer_within + 1.0),
        )

    def _policy(self) -> IngestPolicy:
        """The camera's own policy; from a peer, always on demand."""
        policy = self.spec.policy
        return dataclasses.replace(policy, on_demand=True) if self._upstream.peer is not None else policy

    def check_pulled(self) -> None:
        """Raise :class:`CameraUnowned` while the camera is pulled from nowhere."""
        if not self._pulled.is_set():
            raise CameraUnowned(f"no instance pulls camera {self.spec.id!r} now; try again shortly")

    async def wait_pulled(self, timeout: float) -> None:  # noqa: ASYNC109 - bounds the wait only
        """Return once the camera is pulled from somewhere, waiting up to ``timeout`` seconds
        for an owner; then raise :class:`CameraUnowned`."""
        if self._pulled.is_set():
            return
        try:
            async with asyncio.timeout(timeout):
                await self._pulled.wait()
        except TimeoutError:
            self.check_pulled()
