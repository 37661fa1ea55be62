"""How the instances of a cluster pull cameras from each other: one reserved RTSP user.

An instance that does not own a camera pulls it, for its own viewers, from the
owner's RTSP re-serve (:mod:`streams.upstream`). It logs in there as
:data:`CLUSTER_USER`, whose Digest password is a random secret written once in the
shared database by the first instance that starts (a one-row table, ``cluster_secret``)
and read by every other at start: nothing to configure, and nothing an operator could
set differently on two instances. The name cannot be an account's (user names begin
with a letter or a digit), so no user can be shadowed by it or lock it out.

Whoever can read the database can read the secret; such a reader can already read
every session and token hash, so the secret adds nothing to guard beyond the database.

Event loop only.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from streams import Peer, Upstream
from streams.rtsp_server import REALM, ha1
from vms.cluster.types import InstanceInfo
from vms.storage import Database
from vms.storage.tables import ClusterSecret

CLUSTER_USER = "_cluster"
"""The RTSP user one instance pulls another's cameras as."""


@dataclass(frozen=True, slots=True)
class PeerLogin:
    """The reserved user's credentials: to pull from a peer, and to check a peer's answer."""

    secret: str = field(repr=False)

    @property
    def ha1(self) -> str:
        """The Digest HA1 a peer's answer is checked against."""
        return ha1(CLUSTER_USER, self.secret, REALM)

    def upstream(self, owner: InstanceInfo) -> Upstream | None:
        """Pull from ``owner``'s RTSP re-serve; None when it has none."""
        if owner.rtsp_url is None:
            return None
        return Upstream.of(Peer(owner.id, owner.rtsp_url, CLUSTER_USER, self.secret))


async def peer_login(db: Database) -> PeerLogin:
    """The cluster's secret, written now if no instance has written it yet (PostgreSQL)."""
    async with db.session() as s, s.begin():
        await s.execute(
            insert(ClusterSecret)
            .values(id=1, secret=secrets.token_urlsafe(32), created_at=datetime.now(UTC))
            .on_conflict_do_nothing(index_elements=["id"])
        )
        secret = await s.scalar(select(ClusterSecret.secret).where(ClusterSecret.id == 1))
    assert secret is not None
    return PeerLogin(secret)
