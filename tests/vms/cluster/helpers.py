"""A cluster's test site: N demo cameras, short lease timings, a fresh PostgreSQL database.

``site(instance_id, ...)`` is the YAML of a site with ``cameras`` demo cameras, the RTSP
re-serve on a free port unless ``extra`` says otherwise, and a ``cluster:`` section with
test timings (a 2 s lease, so renewals every 0.67 s);
``Members`` starts :class:`~vms.cluster.Cluster` objects over their own engines on one
database, as separate instances would, and stops them all at the end. ``Sampler``
checks, every 20 ms, that no camera is held by two members at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy import text

from vms.cluster import Cluster
from vms.config import Config
from vms.config_loader import parse_config
from vms.storage import Database

LEASE = 2.0
RENEW = LEASE / 3
REBALANCE = 0.3


def site(instance_id: str, cameras: int = 12, extra: str = "", **cluster: Any) -> str:
    settings = {
        "instance_id": instance_id,
        "http_url": f"http://127.0.0.1:1/{instance_id}",
        "rtsp_url": "rtsp://127.0.0.1:1",
        "lease_timeout": LEASE,
        "rebalance_interval": REBALANCE,
        "max_moves": 4,
    } | cluster
    lines = "".join(f"  {key}: {value}\n" for key, value in settings.items())
    cams = "".join(
        f"  - id: cam-{i:02d}\n    name: 摄像机 {i}\n    hall: tax\n    url: demo://cam-{i:02d}?size=160x90&gop=25\n"
        for i in range(cameras)
    )
    if "rtsp_server:" not in extra:  # every instance of a cluster re-serves what it owns
        extra += "rtsp_server:\n  enabled: true\n  bind: 127.0.0.1\n  port: 0\n"
    return (
        "centres:\n  - id: meizhou\n    name: 梅州市政务服务中心\n"
        "halls:\n  - id: tax\n    name: 办税服务厅\n"
        f"cameras:\n{cams}cluster:\n{lines}{extra}"
    )


def camera_ids(count: int = 12) -> set[str]:
    return {f"cam-{i:02d}" for i in range(count)}


def site_config(instance_id: str, cameras: int = 12, extra: str = "", **cluster: Any) -> Config:
    return parse_config(site(instance_id, cameras, extra, **cluster), "test.yaml")


async def until(check: Callable[[], bool], what: str, within: float) -> float:
    """Wait until ``check()``; the seconds it took. Fails the test after ``within`` seconds."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within, f"{what}: not within {within} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


class Members:
    """Cluster objects on one database, each with its own engine."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.clusters: dict[str, Cluster] = {}
        self._dbs: list[Database] = []

    async def start(self, config: Config, after: float = 0) -> Cluster:
        """Start a member on its own engine, joining ``after`` seconds once that is open."""
        db = Database(self.url)
        await db.start()
        self._dbs.append(db)
        await asyncio.sleep(after)
        assert config.cluster is not None
        cluster = Cluster(db, config, config.cluster)
        await cluster.start()
        self.clusters[cluster.instance.id] = cluster
        return cluster

    async def stop(self, instance_id: str) -> None:
        await self.clusters.pop(instance_id).stop()

    async def leases(self) -> dict[str, tuple[str | None, int]]:
        """The lease table as the database has it: camera id → (owner, epoch)."""
        db = Database(self.url)
        await db.start()
        try:
            async with db.engine.connect() as conn:
                rows = await conn.execute(text("SELECT camera_id, owner, epoch FROM camera_leases"))
                return {camera: (owner, epoch) for camera, owner, epoch in rows}
        finally:
            await db.stop()

    def counts(self) -> dict[str, int]:
        return {name: len(cluster.owned()) for name, cluster in self.clusters.items()}

    async def close(self) -> None:
        for cluster in self.clusters.values():
            await cluster.stop()
        for db in self._dbs:
            await db.stop()


class Sampler:
    """Samples every member's ``owned()`` every 20 ms; ``overlaps`` lists each camera seen twice."""

    def __init__(self, members: Members, *others: Callable[[], set[str]]) -> None:
        self._members = members
        self._others = others
        self.overlaps: list[tuple[str, list[str]]] = []
        self.samples = 0

    def sample(self) -> None:
        seen: dict[str, list[str]] = {}
        for name, cluster in self._members.clusters.items():
            for camera in cluster.owned():
                seen.setdefault(camera, []).append(name)
        for index, other in enumerate(self._others):
            for camera in other():
                seen.setdefault(camera, []).append(f"other-{index}")
        self.overlaps += [(camera, names) for camera, names in seen.items() if len(names) > 1]
        self.samples += 1

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Sampler]:
        async def loop() -> None:
            while True:
                self.sample()
                await asyncio.sleep(0.02)

        task = asyncio.create_task(loop())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert self.samples > 0
        assert self.overlaps == [], f"cameras held twice: {self.overlaps[:5]}"
