"""Catalog subscriptions of the superior platforms and the NOTIFYs they are owed.

:class:`CatalogSubscriptions` accepts SUBSCRIBE (``Event: Catalog``), refreshes and
unsubscribes (``Expires: 0``) in the same dialog, and sends NOTIFYs in each dialog:

- ON/OFF when a shared camera's live state changes (:meth:`on_state`);
- after each registration with the platform, what the configuration changed since
  the catalog last announced to it (:mod:`vms.gb28181.catalog_state`): DEL, ADD,
  UPDATE, then OFF for a camera disabled and ON for one enabled (when it is online;
  otherwise its ON follows when it connects). Once every live subscription answered
  them all, the current catalog is stored as announced; otherwise the next
  registration tells them again.

With a :class:`~vms.gb28181.subscription_store.SubscriptionStore`, dialogs and the
announced catalog live in the database, so they outlive a restart; a new subscription
stores the current catalog as announced unless another live subscription is still owed
a change. Without one (or while the database fails) subscriptions live in memory only.
One lock per platform orders the comparison after registration before any SUBSCRIBE.
Event loop only.
"""

from __future__ import annotations

import asyncio
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine

from streams import IngestState
from vms.gb28181 import manscdp, queries
from vms.gb28181.catalog_state import Changes, changes, snapshot
from vms.gb28181.channels import Directory, Node
from vms.gb28181.manscdp import Command
from vms.gb28181.platform import CascadeError, PlatformClient
from vms.gb28181.sip import SipMessage, new_tag, response_to
from vms.gb28181.subscription_store import StoreError, Subscription, SubscriptionStore

log = logging.getLogger(__name__)

Write = Callable[[SubscriptionStore], Coroutine[object, object, None]]

MAX_SUBSCRIPTIONS = 16
"""Catalog subscriptions one platform may hold."""
DEFAULT_EXPIRES = 3600
"""Seconds a subscription lasts when its SUBSCRIBE says nothing usable."""
MAX_EXPIRES = 86_400
"""The longest subscription granted; a longer one is shortened (the 200 says how long)."""


class CatalogSubscriptions:
    """See the module docstring."""

    def __init__(
        self,
        platforms: list[PlatformClient],
        directories: dict[str, Directory],
        online: queries.Online,
        store: SubscriptionStore | None,
    ) -> None:
        self._platforms = platforms
        self._directories = directories
        self._online = online
        self._store = store
        self._held: dict[str, dict[str, Subscription]] = {name: {} for name in directories}
        self._locks = {name: asyncio.Lock() for name in directories}
        self._loaded: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        """Cancel the NOTIFYs under way. Idempotent."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _own(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- SUBSCRIBE ------------------------------------------------------------------

    async def subscribe(self, platform: PlatformClient, request: SipMessage, command: Command) -> None:
        """Answer a Catalog SUBSCRIBE: a new dialog, a refresh, or ``Expires: 0``."""
        name = platform.settings.name
        expires = _expires(request)
        async with self._locks[name]:
            await self._load(name)
            held = self._live(name)
            sub = held.get(request.call_id)
            if sub is None and expires > 0 and len(held) >= MAX_SUBSCRIPTIONS:
                await platform.respond(request, 486, "Busy Here", warning="too many subscriptions")
                return
            tag = sub.local_tag if sub else new_tag()
            if expires == 0:
                held.pop(request.call_id, None)
                await self._persist(lambda db: db.forget(name, request.call_id))
            elif sub is not None:
                sub.expires_at, sub.sn = time.time() + expires, command.sn
                await self._persist(lambda db: db.save(name, sub))
            else:
                await self._subscribed(platform, request, command.sn, tag, expires)
        answer = response_to(request, 200, "OK", to_tag=tag)
        host, port = platform.contact
        answer.headers += [("Record-Route", hop) for hop in request.headers_named("Record-Route")]
        answer.headers += [
            ("Contact", f"<sip:{platform.settings.local_id}@{host}:{port}>"),
            ("Expires", str(expires)),
        ]
        await platform.reply(request, answer)

    async def _subscribed(
        self, platform: PlatformClient, request: SipMessage, sn: int, tag: str, expires: int
    ) -> None:
        name = platform.settings.name
        held = self._held[name]
        others = bool(held)
        sub = Subscription(
            request.call_id,
            tag,
            request.tag("From") or "",
            _contact_uri(request),
            sn,
            time.time() + expires,
            route=request.headers_named("Record-Route"),
        )
        held[request.call_id] = sub
        await self._persist(lambda db: db.save(name, sub))
        if not others:
            await self._persist(lambda db: db.save_catalog(name, snapshot(self._directories[name])))

    # -- state and configuration changes ------------------------------------------------

    def on_state(self, camera_id: str, old: IngestState, new: IngestState) -> None:
        """NOTIFY ON/OFF to every subscriber that sees the camera, when it comes or goes."""
        if old.available == new.available:
            return
        event = "ON" if new.available else "OFF"
        for platform in self._platforms:
            node = self._directories[platform.settings.name].camera_node(camera_id)
            if node is not None and self._held[platform.settings.name]:
                self._own(self._notify_state(platform, node, event))

    async def _notify_state(self, platform: PlatformClient, node: Node, event: str) -> None:
        for sub in list(self._live(platform.settings.name).values()):
            for body in self._notifies(platform, sub, [node], event):
                await self._notify(platform, sub, body)

    def _notifies(
        self, platform: PlatformClient, sub: Subscription, nodes: list[Node], event: str
    ) -> list[ET.Element]:
        settings = platform.settings
        return queries.catalog_notifies(
            self._directories[settings.name],
            settings.local_id,
            sub.sn,
            nodes,
            event,
            self._online,
            settings.catalog_batch,
        )

    def registered(self, platform: PlatformClient) -> None:
        """The platform registered: tell its subscribers what the configuration changed."""
        if self._store is not None:
            self._own(self._reconcile(platform, self._store))

    async def _reconcile(self, platform: PlatformClient, store: SubscriptionStore) -> None:
        name = platform.settings.name
        directory = self._directories[name]
        async with self._locks[name]:
            await self._load(name)
            if name not in self._loaded:
                return
            try:
                before = await store.catalog(name)
            except StoreError as err:
                log.warning("platform %s: catalog changes not compared: %s", name, err)
                return
            found = changes(before, directory) if before is not None else Changes()
            if found:
                log.info("platform %s: the catalog changed: %s", name, found)
                told = [await self._tell(platform, sub, found) for sub in list(self._live(name).values())]
                if not all(told):
                    return
            if before is None or found:
                await self._persist(lambda db: db.save_catalog(name, snapshot(directory)))

    async def _tell(self, platform: PlatformClient, sub: Subscription, found: Changes) -> bool:
        """Send ``found`` in the subscription's dialog; whether it was all answered (or the
        dialog is gone)."""
        settings = platform.settings
        bodies = []
        if found.deleted:
            bodies = queries.deletion_notifies(
                settings.local_id, sub.sn, found.deleted, settings.catalog_batch
            )
        enabled = [node for node in found.enabled if self._online(node.key)]
        for event, nodes in (
            ("ADD", found.added),
            ("UPDATE", found.updated),
            ("OFF", found.disabled),
            ("ON", enabled),
        ):
            if nodes:
                bodies += self._notifies(platform, sub, nodes, event)
        for body in bodies:
            status = await self._notify(platform, sub, body)
            if status == 481:
                return True
            if status is None or not 200 <= status < 300:
                log.warning(
                    "platform %s: a catalog NOTIFY got %s; told again at the next registration",
                    platform.settings.name,
                    status or "no answer",
                )
                return False
        return True

    # -- NOTIFY ---------------------------------------------------------------------------

    async def _notify(self, platform: PlatformClient, sub: Subscription, body: ET.Element) -> int | None:
        """Send one NOTIFY in the dialog; its final status, or None without one. A 481
        (the superior no longer knows the dialog) ends the subscription."""
        name = platform.settings.name
        sub.cseq += 1
        message = platform.new_request(
            "NOTIFY",
            sub.remote_uri,
            to=platform.server_uri,
            to_tag=sub.remote_tag,
            call_id=sub.call_id,
            from_tag=sub.local_tag,
            cseq=sub.cseq,
            body=manscdp.render(body, platform.settings.encoding),
        )
        message.headers += [("Route", hop) for hop in sub.route]
        message.headers += [("Event", "Catalog"), ("Subscription-State", f"active;expires={sub.remaining()}")]
        await self._persist(lambda db: db.note_cseq(name, sub.call_id, sub.cseq))
        try:
            answer = await platform.request(message)
        except (TimeoutError, CascadeError, OSError):
            return None
        if answer.status == 481 and self._held[name].pop(sub.call_id, None) is not None:
            await self._persist(lambda db: db.forget(name, sub.call_id))
        return answer.status

    # -- memory and database --------------------------------------------------------------

    def _live(self, name: str) -> dict[str, Subscription]:
        """The platform's subscriptions, the lapsed ones dropped (their rows go at the next load)."""
        held = self._held[name]
        now = time.time()
        for call_id in [key for key, sub in held.items() if sub.expires_at <= now]:
            del held[call_id]
        return held

    async def _load(self, name: str) -> None:
        """Read the platform's stored subscriptions once (call with its lock held)."""
        if self._store is None or name in self._loaded:
            return
        try:
            stored = await self._store.subscriptions(name)
        except StoreError as err:
            log.warning("platform %s: stored catalog subscriptions not read: %s", name, err)
            return
        for sub in stored:
            self._held[name].setdefault(sub.call_id, sub)
        self._loaded.add(name)
        if stored:
            log.info("platform %s: %d catalog subscriptions restored", name, len(stored))

    async def _persist(self, write: Write) -> None:
        """Run ``write`` on the store, if there is one; a failure is logged, memory goes on."""
        if self._store is None:
            return
        try:
            await write(self._store)
        except StoreError as err:
            log.warning("catalog subscriptions kept in memory only: %s", err)


def _expires(request: SipMessage) -> int:
    text = (request.header("Expires") or "").strip()
    if not text.isdigit() or len(text) > 12:
        return DEFAULT_EXPIRES
    return min(int(text), MAX_EXPIRES)


def _contact_uri(request: SipMessage) -> str:
    contact = request.header("Contact") or request.header("From") or ""
    if "<" in contact:
        return contact[contact.find("<") + 1 : contact.find(">")]
    return contact.split(";")[0]
