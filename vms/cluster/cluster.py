"""This instance's membership of the cluster and its camera leases.

:class:`Cluster` joins at :meth:`~Cluster.start` (refusing when a live instance has its
id or another shared configuration), then every ``renew_interval`` writes its
heartbeat, renews all its leases in one statement and reads who owns what; under the
cluster's advisory lock it then takes free leases up to its share and hands cameras to
less loaded instances (:mod:`vms.cluster.balance`), each only once it pulls it no more
(``letting_go``); a camera being handed over counts as its receiver's from the
decision on. An instance joining a cluster where nobody holds a camera (the whole
cluster is starting) waits one renewal before its first take, so that the instances
started with it share the cameras from the start. :meth:`~Cluster.stop` drops every
camera locally, then releases the leases, so the others take them over at their next
renewal.

Fencing: the start of the last successful renewal, on this process's monotonic clock,
bounds how long the leases are surely held. Past ``lease_timeout - fence_margin`` the
instance drops every camera at once (listeners hear ``mine=False``), before the
database could give any to another. The loop checks that age first thing on every
round, so a process woken from SIGSTOP drops its cameras before doing anything else,
and :meth:`~Cluster.owned` applies the same test whenever it is asked. A dropped
instance releases what the database may still show as its own before taking anything
again, so each new holding has a new epoch.

Listeners are called on the event loop, synchronously, for every change of a
camera's owner: ``(camera_id, owner or None, mine)``. Event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from vms.cluster import leases
from vms.cluster.balance import handovers, to_take
from vms.cluster.config_hash import config_hash, section_hashes
from vms.cluster.types import InstanceInfo, InstanceStatus, this_instance
from vms.config import Config
from vms.config_cluster import ClusterSettings
from vms.storage import Database
from vms.storage.faults import describe

log = logging.getLogger(__name__)

Listener = Callable[[str, InstanceInfo | None, bool], None]
"""``(camera_id, owner, mine)``: the camera's new owner (None: nobody live holds it)."""

FORGET_AFTER = 10
"""An instance silent for this many lease timeouts (at least a minute) is removed from the list."""


def cluster_for(config: Config, db: Database) -> Cluster | None:
    """The cluster this instance is part of, or None to own every camera alone (no
    ``cluster:`` section, or a SQLite database)."""
    if config.cluster is None:
        return None
    if db.dialect != "postgresql":
        log.warning("cluster: needs a PostgreSQL database.url; on SQLite this instance owns every camera")
        return None
    return Cluster(db, config, config.cluster)


def _reason(err: BaseException) -> str:
    """The fault, never the error's text (it may quote SQL)."""
    return "no answer in time" if isinstance(err, TimeoutError) else describe(err)


class Cluster:
    """See the module docstring."""

    def __init__(self, db: Database, config: Config, settings: ClusterSettings) -> None:
        self._db = db
        self._settings = settings
        self._me = this_instance(config, settings)
        self._cameras = sorted(camera.id for camera in config.cameras if camera.enabled)
        self._sections = section_hashes(config)
        self._digest = config_hash(self._sections)
        self._lease = timedelta(seconds=settings.lease_timeout)
        self._idle_limit = settings.renew_every
        self._listeners: list[Listener] = []
        self._owners: dict[str, str | None] = dict.fromkeys(self._cameras)
        self._epochs: dict[str, int] = {}
        self._live: dict[str, InstanceInfo] = {self._me.id: self._me}
        self._renewed_at = -float("inf")
        self._release_first = False
        self._ready = True
        self._moved_at = -float("inf")
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        self.letting_go: Callable[[list[str]], Awaitable[object]] | None = None
        """Called with the cameras about to be handed to other instances, once they are dropped
        here; returns when this instance pulls them no more."""

    @property
    def instance(self) -> InstanceInfo:
        return self._me

    @property
    def settings(self) -> ClusterSettings:
        return self._settings

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def owned(self) -> set[str]:
        """The cameras this instance holds a lease on now (none once the lease may have lapsed)."""
        return set() if self._lapsed() else set(self._epochs)

    def owner_of(self, camera_id: str) -> InstanceInfo | None:
        """The live instance holding the camera's lease, or None (free, or its owner died)."""
        owner = self._owners.get(camera_id)
        if owner == self._me.id:
            return None if self._lapsed() else self._me
        return self._live.get(owner) if owner is not None else None

    def epoch(self, camera_id: str) -> int | None:
        """The fencing token of this instance's lease on the camera, or None when not held."""
        return None if self._lapsed() else self._epochs.get(camera_id)

    def live(self, instance_id: str) -> InstanceInfo | None:
        """The live instance with this id at the last renewal, or None."""
        return self._live.get(instance_id)

    @property
    def renewing(self) -> bool:
        """Whether the last round of renewals went through (false while the database fails)."""
        return not self._failing and not self._lapsed()

    def live_instances(self) -> int:
        """Live instances at the last renewal, this one included."""
        return len(self._live)

    def set_ready(self, ready: bool) -> None:
        """Whether this instance may take cameras; one not ready takes none and receives none."""
        self._ready = ready

    async def describe(self) -> list[InstanceStatus]:
        """Every instance the database knows, with its cameras, read now."""
        async with asyncio.timeout(self._settings.fence_after), self._db.engine.begin() as conn:
            await leases.bound(conn, self._idle_limit)
            view = await leases.view(conn, self._lease)
        held: dict[str, list[str]] = {}
        for lease in view.leases:
            if lease.valid and lease.owner is not None:
                held.setdefault(lease.owner, []).append(lease.camera_id)
        return [
            InstanceStatus(
                row.info, row.started_at, row.age, row.live, row.ready, tuple(held.get(row.info.id, ()))
            )
            for row in view.instances
        ]

    async def check(self) -> None:
        """Raise :class:`~vms.cluster.types.ClusterError` if this instance could not join now."""
        async with asyncio.timeout(self._settings.fence_after), self._db.engine.begin() as conn:
            await leases.bound(conn, self._idle_limit)
            await leases.refuse_if_differs(conn, self._me, self._sections, self._digest, self._lease)

    async def start(self) -> None:
        """Join (raising :class:`~vms.cluster.types.ClusterError` when refused), take this
        instance's share, then keep the leases renewed in a task."""
        if self._task is not None:
            return
        async with asyncio.timeout(self._settings.fence_after), self._db.engine.begin() as conn:
            await leases.bound(conn, self._idle_limit)
            held = await leases.join(conn, self._me, self._sections, self._digest, self._cameras, self._lease)
        log.info("cluster: joined as %s (%s)", self._me.id, self._me.http_url)
        if held == 0 and self._cameras:
            # Nobody holds a camera: the whole cluster is starting. Instances started together
            # join within moments of each other; waiting one renewal lets the first take of
            # each see the others, rather than one taking every camera and handing most of
            # them over later at the rebalancing rate.
            await asyncio.sleep(self._settings.renew_every)
        await self._round()
        self._task = asyncio.create_task(self._run(), name=f"cluster {self._me.id}")

    async def stop(self) -> None:
        """Drop every camera, release the leases and leave. Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._drop_all()
        try:
            async with asyncio.timeout(self._settings.fence_after), self._db.engine.begin() as conn:
                await leases.bound(conn, self._idle_limit)
                await leases.leave(conn, self._me.id)
        except (SQLAlchemyError, OSError, TimeoutError) as err:
            log.warning("cluster: could not release the leases (%s); they expire by themselves", _reason(err))
        log.info("cluster: %s left", self._me.id)

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            self._fence_if_lapsed()
            await self._round()
            self._fence_if_lapsed()
            await asyncio.sleep(max(0.0, began + self._settings.renew_every - time.monotonic()))

    async def _round(self) -> None:
        deadline = time.monotonic() + self._settings.fence_after
        if self._epochs:
            deadline = min(deadline, self._renewed_at + self._settings.fence_after)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await self._renew()
                await self._balance()
        except (SQLAlchemyError, OSError, TimeoutError) as err:
            if not self._failing:
                log.warning("cluster: renewing the leases failed: %s", _reason(err))
            self._failing = True
            return
        if self._failing:
            log.info("cluster: the database answers again")
        self._failing = False

    def _lapsed(self) -> bool:
        return time.monotonic() - self._renewed_at > self._settings.fence_after

    def _fence_if_lapsed(self) -> None:
        if self._epochs and self._lapsed():
            log.warning(
                "cluster: no lease renewal for %.1f s (limit %.1f s): dropping all %d cameras",
                time.monotonic() - self._renewed_at,
                self._settings.fence_after,
                len(self._epochs),
            )
            self._drop_all()
            self._release_first = True

    def _drop_all(self) -> None:
        for camera in sorted(self._epochs):
            del self._epochs[camera]
            self._set_owner(camera, None)

    async def _renew(self) -> None:
        sent = time.monotonic()
        async with self._db.engine.begin() as conn:
            await leases.bound(conn, self._idle_limit)
            await leases.heartbeat(conn, self._me, self._ready, self._sections, self._digest)
            if self._release_first:
                await leases.release(conn, self._me.id)
                held: dict[str, int] = {}
            else:
                held = await leases.renew(conn, self._me.id, self._lease)
            view = await leases.view(conn, self._lease)
        if time.monotonic() - sent > self._settings.fence_after:
            raise TimeoutError("the renewal came back too late to count")
        self._release_first = False
        self._renewed_at = sent
        self._live = {row.info.id: row.info for row in view.instances if row.live} | {self._me.id: self._me}
        for camera in sorted(self._epochs.keys() - held.keys()):
            del self._epochs[camera]
            self._set_owner(camera, None)
        self._gain(held)
        for lease in view.leases:
            if lease.owner != self._me.id and lease.camera_id in self._owners:
                alive = lease.valid and lease.owner in self._live
                self._set_owner(lease.camera_id, lease.owner if alive else None)

    async def _balance(self) -> None:
        settings = self._settings
        sent = time.monotonic()
        moving = sent - self._moved_at >= settings.rebalance_interval
        async with self._db.engine.begin() as conn:
            await leases.bound(conn, self._idle_limit)
            await leases.lock(conn)
            counts = await leases.counts(conn, self._lease)
            self._live.update(counts.instances)  # a receiver that joined since the renewal
            mine = counts.held.get(self._me.id, 0)
            wanted = to_take(mine, counts.cameras, len(counts.held), counts.free) if self._ready else 0
            taken = await leases.take(conn, self._me.id, wanted, self._lease) if wanted else {}
            moves: list[tuple[str, str]] = []
            if not taken and not counts.free and moving and self._me.id in counts.held:
                receivers = handovers(self._me.id, counts.held, settings.max_moves)
                moves = list(zip(sorted(self._epochs, reverse=True), receivers, strict=False))
                for camera, receiver in moves:
                    # Counted as the receiver's by every round from now on, before this
                    # instance has let it go: no other giver sends the receiver its share too.
                    await leases.promise(conn, self._me.id, camera, receiver)
            after = max(timedelta(minutes=1), FORGET_AFTER * self._lease)
            await leases.forget_dead(conn, after)
        if time.monotonic() - sent > settings.fence_after:
            raise TimeoutError("the leases taken came back too late to count")
        self._gain(taken)
        if moves:
            self._moved_at = sent
            await self._hand_over(moves)

    async def _hand_over(self, moves: list[tuple[str, str]]) -> None:
        """Give each camera to its receiver: first stop pulling it here (``letting_go``), and
        only then write the lease over, so the receiver can never start while this instance
        still pulls. A lease that lapsed meanwhile is simply free for whoever takes it."""
        for camera, _ in moves:
            del self._epochs[camera]
            self._set_owner(camera, None)
        if self.letting_go is not None:
            await self.letting_go([camera for camera, _ in moves])
        async with self._db.engine.begin() as conn:
            await leases.bound(conn, self._idle_limit)
            for camera, receiver in moves:
                if await leases.hand_over(conn, self._me.id, camera, receiver, self._lease):
                    self._set_owner(camera, receiver)

    def _gain(self, held: dict[str, int]) -> None:
        for camera, epoch in sorted(held.items()):
            new = camera not in self._epochs
            self._epochs[camera] = epoch
            if new:
                self._set_owner(camera, self._me.id)

    def _set_owner(self, camera: str, owner: str | None) -> None:
        if self._owners.get(camera) == owner:
            return
        self._owners[camera] = owner
        info = self._me if owner == self._me.id else self._live.get(owner) if owner else None
        for listener in self._listeners:
            try:
                listener(camera, info, owner == self._me.id)
            except Exception:
                log.exception("cluster: a listener failed on camera %s", camera)
