"""Catalog subscriptions and the catalog each superior platform was told, in the database.

A superior subscribes once and refreshes the subscription in the same SIP dialog; a
restart of ours must not lose it, or the configuration changes that only a restart
brings would never reach the superior. :class:`SubscriptionStore` keeps each dialog
(``gb28181_subscriptions``: Call-ID, tags, Contact, route set, SN, our CSeq, expiry)
and each platform's announced catalog (``gb28181_catalog``: one row per item, without
its live status). Every failure of the database is a :class:`StoreError`, so the
callers go on from memory. Event loop only.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from vms.gb28181.catalog_state import Announced, Catalog
from vms.storage import Database
from vms.storage.tables import AnnouncedChannel, CatalogSubscription


class StoreError(Exception):
    """The database did not take or give the subscriptions; the text says why."""


@dataclass(slots=True)
class Subscription:
    """One catalog subscription dialog; ``expires_at`` is wall-clock (``time.time()``)."""

    call_id: str
    local_tag: str
    remote_tag: str
    remote_uri: str
    sn: int
    expires_at: float
    cseq: int = 1
    route: list[str] = field(default_factory=list)

    def remaining(self) -> int:
        """Whole seconds left; 0 once it lapsed."""
        return max(0, int(self.expires_at - time.time()))


class SubscriptionStore:
    """See the module docstring."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @asynccontextmanager
    async def _transaction(self, what: str) -> AsyncIterator[AsyncSession]:
        try:
            async with self._db.session() as session, session.begin():
                yield session
        except (SQLAlchemyError, OSError, ConnectionError, json.JSONDecodeError) as err:
            raise StoreError(f"cannot {what}: {type(err).__name__}: {err}") from err

    async def subscriptions(self, platform: str) -> list[Subscription]:
        """The platform's unexpired subscriptions; the lapsed ones are deleted."""
        now_ms = round(time.time() * 1000)
        async with self._transaction("read the catalog subscriptions") as s:
            await s.execute(
                delete(CatalogSubscription).where(
                    CatalogSubscription.platform == platform, CatalogSubscription.expires_ms <= now_ms
                )
            )
            rows = await s.scalars(
                select(CatalogSubscription).where(CatalogSubscription.platform == platform)
            )
            return [_subscription(row) for row in rows]

    async def save(self, platform: str, sub: Subscription) -> None:
        """Insert or replace the dialog's row."""
        values = {
            "platform": platform,
            "call_id": sub.call_id,
            "local_tag": sub.local_tag,
            "remote_tag": sub.remote_tag,
            "remote_uri": sub.remote_uri,
            "route": json.dumps(sub.route),
            "sn": sub.sn,
            "cseq": sub.cseq,
            "expires_ms": round(sub.expires_at * 1000),
        }
        insert = postgresql.insert if self._db.dialect == "postgresql" else sqlite.insert
        statement = insert(CatalogSubscription).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[CatalogSubscription.platform, CatalogSubscription.call_id],
            set_={k: v for k, v in values.items() if k not in ("platform", "call_id")},
        )
        async with self._transaction("store a catalog subscription") as s:
            await s.execute(statement)

    async def note_cseq(self, platform: str, call_id: str, cseq: int) -> None:
        """Record the CSeq of a NOTIFY sent in the dialog (never lowering the stored one)."""
        async with self._transaction("store a NOTIFY's CSeq") as s:
            await s.execute(
                update(CatalogSubscription)
                .where(
                    CatalogSubscription.platform == platform,
                    CatalogSubscription.call_id == call_id,
                    CatalogSubscription.cseq < cseq,
                )
                .values(cseq=cseq)
            )

    async def forget(self, platform: str, call_id: str) -> None:
        async with self._transaction("delete a catalog subscription") as s:
            await s.execute(
                delete(CatalogSubscription).where(
                    CatalogSubscription.platform == platform, CatalogSubscription.call_id == call_id
                )
            )

    async def catalog(self, platform: str) -> Catalog | None:
        """The catalog the platform was last told, or None if it was never stored."""
        async with self._transaction("read the announced catalog") as s:
            rows = await s.scalars(select(AnnouncedChannel).where(AnnouncedChannel.platform == platform))
            found = {row.channel_id: _announced(row) for row in rows}
        return found or None

    async def save_catalog(self, platform: str, catalog: Catalog) -> None:
        """Replace the platform's announced catalog by ``catalog``."""
        rows = [
            AnnouncedChannel(
                platform=platform,
                channel_id=gb_id,
                kind=item.kind,
                name=item.name,
                parent_id=item.parent_id,
                attributes=json.dumps(item.attributes, ensure_ascii=False, sort_keys=True),
                enabled=item.enabled,
            )
            for gb_id, item in catalog.items()
        ]
        async with self._transaction("store the announced catalog") as s:
            await s.execute(delete(AnnouncedChannel).where(AnnouncedChannel.platform == platform))
            s.add_all(rows)


def _subscription(row: CatalogSubscription) -> Subscription:
    route = json.loads(row.route)
    return Subscription(
        call_id=row.call_id,
        local_tag=row.local_tag,
        remote_tag=row.remote_tag,
        remote_uri=row.remote_uri,
        sn=row.sn,
        expires_at=row.expires_ms / 1000,
        cseq=row.cseq,
        route=[str(hop) for hop in route] if isinstance(route, list) else [],
    )


def _announced(row: AnnouncedChannel) -> Announced:
    attributes = json.loads(row.attributes)
    if not isinstance(attributes, dict):
        attributes = {}
    return Announced(
        row.kind, row.name, row.parent_id, {str(k): str(v) for k, v in attributes.items()}, row.enabled
    )
