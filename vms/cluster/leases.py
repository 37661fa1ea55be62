"""The SQL of membership and camera leases (PostgreSQL only).

Every expiry is compared with the database's clock (``now()``), never with an
instance's: instances whose clocks disagree still agree on who is live and which lease
has expired. Each transaction is bounded on the server too: one whose client stops
talking (a frozen process) is ended after ``idle_limit``, so it cannot hold the
cluster's advisory lock or a lease row for ever.

Functions of an open connection inside a transaction (``engine.begin()``); event loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from vms.cluster.config_hash import differing
from vms.cluster.types import ConfigMismatch, InstanceIdTaken, InstanceInfo
from vms.storage import advisory_lock

CLUSTER_LOCK = 0x48574331
"""PostgreSQL advisory lock key held while an instance joins or balances, so that each
decision sees the previous one's result."""


@dataclass(frozen=True, slots=True)
class InstanceRow:
    info: InstanceInfo
    started_at: datetime
    age: float
    live: bool
    ready: bool


@dataclass(frozen=True, slots=True)
class LeaseRow:
    camera_id: str
    owner: str | None
    epoch: int
    valid: bool
    """Held and not expired."""


@dataclass(frozen=True, slots=True)
class View:
    instances: list[InstanceRow]
    leases: list[LeaseRow]


async def bound(conn: AsyncConnection, idle_limit: float) -> None:
    """Limit this transaction: idle (client silent), a statement, or a lock wait, ``idle_limit`` s."""
    ms = max(1, round(idle_limit * 1000))
    for setting in ("idle_in_transaction_session_timeout", "statement_timeout", "lock_timeout"):
        await conn.execute(text(f"SET LOCAL {setting} = {ms}"))


async def lock(conn: AsyncConnection) -> None:
    await advisory_lock(conn, CLUSTER_LOCK)


async def refuse_if_differs(
    conn: AsyncConnection, me: InstanceInfo, sections: dict[str, str], digest: str, lease: timedelta
) -> None:
    """Raise when a live instance has this instance's id or another shared configuration."""
    rows = await conn.execute(
        text(
            "SELECT id, config_hash, config_sections FROM cluster_instances "
            "WHERE heartbeat_at > now() - CAST(:lease AS interval) ORDER BY id"
        ),
        {"lease": lease},
    )
    differ: dict[str, list[str]] = {}
    for instance_id, their_digest, their_sections in rows:
        if instance_id == me.id:
            raise InstanceIdTaken(me.id)
        if their_digest != digest:
            for name in differing(sections, json.loads(their_sections)):
                differ.setdefault(name, []).append(instance_id)
    if differ:
        raise ConfigMismatch(list(differ), sorted({i for ids in differ.values() for i in ids}))


async def join(
    conn: AsyncConnection,
    me: InstanceInfo,
    sections: dict[str, str],
    digest: str,
    cameras: list[str],
    lease: timedelta,
) -> int:
    """Register this instance and the cameras' lease rows, under the cluster lock; refuse
    when a live instance has this id or another shared configuration. Returns how many
    cameras other instances hold: none when the whole cluster is starting."""
    await lock(conn)
    await refuse_if_differs(conn, me, sections, digest, lease)
    await conn.execute(
        text(
            "INSERT INTO cluster_instances (id, http_url, rtsp_url, started_at, heartbeat_at, "
            "config_hash, config_sections, ready) "
            "VALUES (:id, :http, :rtsp, now(), now(), :digest, :sections, true) "
            "ON CONFLICT (id) DO UPDATE SET http_url = excluded.http_url, rtsp_url = excluded.rtsp_url, "
            "started_at = now(), heartbeat_at = now(), config_hash = excluded.config_hash, "
            "config_sections = excluded.config_sections, ready = true"
        ),
        _row(me, sections, digest),
    )
    await conn.execute(text("UPDATE camera_leases SET owner = NULL WHERE owner = :me"), {"me": me.id})
    await conn.execute(
        text(
            "INSERT INTO camera_leases (camera_id, owner, epoch, expires_at) "
            "SELECT unnest(CAST(:ids AS text[])), NULL, 0, now() ON CONFLICT (camera_id) DO NOTHING"
        ),
        {"ids": cameras},
    )
    await conn.execute(
        text("DELETE FROM camera_leases WHERE camera_id <> ALL(CAST(:ids AS text[]))"), {"ids": cameras}
    )
    held = await conn.execute(
        text("SELECT count(*) FROM camera_leases WHERE owner IS NOT NULL AND expires_at > now()")
    )
    return int(held.scalar_one())


async def heartbeat(
    conn: AsyncConnection, me: InstanceInfo, ready: bool, sections: dict[str, str], digest: str
) -> None:
    """Prove this instance alive (its row is written again if the others forgot it)."""
    await conn.execute(
        text(
            "INSERT INTO cluster_instances (id, http_url, rtsp_url, started_at, heartbeat_at, "
            "config_hash, config_sections, ready) "
            "VALUES (:id, :http, :rtsp, now(), now(), :digest, :sections, :ready) "
            "ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), ready = excluded.ready"
        ),
        _row(me, sections, digest) | {"ready": ready},
    )


def _row(me: InstanceInfo, sections: dict[str, str], digest: str) -> dict[str, object]:
    return {
        "id": me.id,
        "http": me.http_url,
        "rtsp": me.rtsp_url,
        "digest": digest,
        "sections": json.dumps(sections, sort_keys=True),
    }


async def renew(conn: AsyncConnection, me: str, lease: timedelta) -> dict[str, int]:
    """Extend every unexpired lease of this instance in one statement; camera id → epoch of
    each lease still held. An expired one is not revived: whoever takes it gets a new epoch.
    A promise (:func:`promise`) still there is one whose hand-over failed: it is withdrawn."""
    rows = await conn.execute(
        text(
            "UPDATE camera_leases SET expires_at = now() + CAST(:lease AS interval), moving_to = NULL "
            "WHERE owner = :me AND expires_at > now() RETURNING camera_id, epoch"
        ),
        {"me": me, "lease": lease},
    )
    return {camera_id: epoch for camera_id, epoch in rows}


async def release(conn: AsyncConnection, me: str) -> None:
    """Give up every lease of this instance (they are free at once)."""
    await conn.execute(
        text("UPDATE camera_leases SET owner = NULL, expires_at = now(), moving_to = NULL WHERE owner = :me"),
        {"me": me},
    )


async def leave(conn: AsyncConnection, me: str) -> None:
    """Release every lease and remove this instance's row: a clean stop."""
    await release(conn, me)
    await conn.execute(text("DELETE FROM cluster_instances WHERE id = :me"), {"me": me})


async def view(conn: AsyncConnection, lease: timedelta) -> View:
    """Every instance and every lease, judged by the database's clock."""
    instances = await conn.execute(
        text(
            "SELECT id, http_url, rtsp_url, started_at, ready, "
            "EXTRACT(EPOCH FROM now() - heartbeat_at), heartbeat_at > now() - CAST(:lease AS interval) "
            "FROM cluster_instances ORDER BY id"
        ),
        {"lease": lease},
    )
    rows = [
        InstanceRow(InstanceInfo(i, http, rtsp), started, float(age), bool(live), bool(ready))
        for i, http, rtsp, started, ready, age, live in instances
    ]
    leases = await conn.execute(
        text(
            "SELECT camera_id, owner, epoch, owner IS NOT NULL AND expires_at > now() "
            "FROM camera_leases ORDER BY camera_id"
        )
    )
    return View(rows, [LeaseRow(c, o, e, bool(v)) for c, o, e, v in leases])


@dataclass(frozen=True, slots=True)
class Counts:
    held: dict[str, int]
    """Valid leases of each live, ready instance (zero for one holding none), a lease promised
    to another (:func:`promise`) counted as the receiver's."""
    instances: dict[str, InstanceInfo]
    """Those instances."""
    free: int
    cameras: int


async def counts(conn: AsyncConnection, lease: timedelta) -> Counts:
    rows = await conn.execute(
        text(
            "SELECT i.id, i.http_url, i.rtsp_url, count(l.camera_id) FROM cluster_instances i "
            "LEFT JOIN camera_leases l ON COALESCE(l.moving_to, l.owner) = i.id AND l.expires_at > now() "
            "WHERE i.ready AND i.heartbeat_at > now() - CAST(:lease AS interval) GROUP BY i.id"
        ),
        {"lease": lease},
    )
    held: dict[str, int] = {}
    instances: dict[str, InstanceInfo] = {}
    for instance_id, http_url, rtsp_url, count in rows:
        held[instance_id] = int(count)
        instances[instance_id] = InstanceInfo(instance_id, http_url, rtsp_url)
    totals = await conn.execute(
        text(
            "SELECT count(*), count(*) FILTER (WHERE owner IS NULL OR expires_at <= now()) FROM camera_leases"
        )
    )
    cameras, free = totals.one()
    return Counts(held, instances, int(free), int(cameras))


async def take(conn: AsyncConnection, me: str, count: int, lease: timedelta) -> dict[str, int]:
    """Take up to ``count`` free or expired leases; camera id → new epoch of each taken."""
    rows = await conn.execute(
        text(
            "UPDATE camera_leases SET owner = :me, epoch = epoch + 1, moving_to = NULL, "
            "expires_at = now() + CAST(:lease AS interval) WHERE camera_id IN ("
            "SELECT camera_id FROM camera_leases WHERE owner IS NULL OR expires_at <= now() "
            "ORDER BY camera_id LIMIT :count FOR UPDATE SKIP LOCKED) RETURNING camera_id, epoch"
        ),
        {"me": me, "count": count, "lease": lease},
    )
    return {camera_id: epoch for camera_id, epoch in rows}


async def promise(conn: AsyncConnection, me: str, camera_id: str, to: str) -> None:
    """Mark one of this instance's leases as being handed to ``to``: from now on the balancing
    of every instance counts it as ``to``'s, while this one still holds it and stops pulling."""
    await conn.execute(
        text(
            "UPDATE camera_leases SET moving_to = :to "
            "WHERE camera_id = :camera AND owner = :me AND expires_at > now()"
        ),
        {"me": me, "to": to, "camera": camera_id},
    )


async def hand_over(conn: AsyncConnection, me: str, camera_id: str, to: str, lease: timedelta) -> bool:
    """Give one of this instance's unexpired leases straight to ``to`` (a new epoch)."""
    result = await conn.execute(
        text(
            "UPDATE camera_leases SET owner = :to, epoch = epoch + 1, moving_to = NULL, "
            "expires_at = now() + CAST(:lease AS interval) "
            "WHERE camera_id = :camera AND owner = :me AND expires_at > now() RETURNING camera_id"
        ),
        {"me": me, "to": to, "camera": camera_id, "lease": lease},
    )
    return result.first() is not None


async def forget_dead(conn: AsyncConnection, after: timedelta) -> None:
    """Remove the rows of instances silent for longer than ``after``."""
    await conn.execute(
        text("DELETE FROM cluster_instances WHERE heartbeat_at < now() - CAST(:after AS interval)"),
        {"after": after},
    )
