"""The cascade to every configured superior platform: what the app starts and stops.

:class:`Cascade` owns one :class:`~vms.gb28181.platform.PlatformClient` per platform
and answers what each superior asks: Catalog, DeviceInfo and DeviceStatus queries
(200 to the MESSAGE, then the result as MESSAGEs of our own), catalog subscriptions
(NOTIFY ON/OFF when a shared camera's state changes; it listens to the stream
manager), RecordInfo queries from the recordings (:mod:`vms.gb28181.records`), and
INVITEs for live play, playback and download with their INFO controls
(:mod:`vms.gb28181.invite`). A body that is not usable MANSCDP is answered 400 and
counted as malformed. Event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams import IngestState
from vms.config import Config
from vms.gb28181 import manscdp, queries, records
from vms.gb28181.channels import Directory
from vms.gb28181.invite import LiveDialog, LiveDialogs
from vms.gb28181.manscdp import Command, XmlError
from vms.gb28181.media import MediaStarter, RecordStarter
from vms.gb28181.platform import CascadeError, PlatformClient
from vms.gb28181.sip import SipMessage, new_tag, response_to
from vms.gb28181.transport import Address

log = logging.getLogger(__name__)

_QUERIES = ("Catalog", "DeviceInfo", "DeviceStatus", "RecordInfo")
ViewRecorder = Callable[..., None]
"""``record_soon(action, **fields)`` of :class:`vms.viewing.ViewingRecorder`."""
MAX_SUBSCRIPTIONS = 16
"""Catalog subscriptions one platform may hold."""


@dataclass(slots=True)
class Subscription:
    call_id: str
    local_tag: str
    remote_tag: str
    remote_uri: str
    sn: int
    expires_at: float
    cseq: int = 1


class Cascade:
    """See the module docstring."""

    def __init__(
        self,
        config: Config,
        *,
        online: Callable[[str], bool],
        recording: Callable[[str], bool],
        media: MediaStarter | None,
        record: ViewRecorder,
        recordings: RecordStarter | None = None,
    ) -> None:
        self._config = config
        self._online = online
        self._recording = recording
        self._record = record
        self._recordings = recordings
        self.live = LiveDialogs(media, config.gb28181.max_sessions_total, self._recorded, recordings)
        self.platforms = [PlatformClient(p, self._handle) for p in config.gb28181.platforms]
        self._directories = {
            client.settings.name: Directory(config, client.settings) for client in self.platforms
        }
        self._subscriptions: dict[str, dict[str, Subscription]] = {
            p.settings.name: {} for p in self.platforms
        }
        self._notifies: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        for platform in self.platforms:
            platform.start()

    async def stop(self) -> None:
        """End live sessions (BYE), unregister, close. Idempotent."""
        await self.live.stop()
        for task in list(self._notifies):
            task.cancel()
        await asyncio.gather(*self._notifies, return_exceptions=True)
        await asyncio.gather(*(platform.stop() for platform in self.platforms))

    def directory(self, platform: PlatformClient) -> Directory:
        return self._directories[platform.settings.name]

    # -- incoming requests ---------------------------------------------------------

    async def _handle(self, platform: PlatformClient, request: SipMessage, source: Address) -> None:
        method = request.method
        if method == "MESSAGE":
            await self._message(platform, request, source)
        elif method == "SUBSCRIBE":
            await self._subscribe(platform, request, source)
        elif method == "INVITE":
            await self.live.invite(platform, self.directory(platform), request, source)
        elif method == "ACK":
            self.live.ack(request)
        elif method == "BYE":
            await self.live.bye(platform, request)
        elif method == "INFO":
            await self.live.info(platform, request)
        elif method in ("OPTIONS", "NOTIFY"):
            await platform.respond(request, 200, "OK")
        else:
            await platform.respond(request, 405, "Method Not Allowed")

    def _command(self, platform: PlatformClient, request: SipMessage, source: Address) -> Command | None:
        try:
            return manscdp.parse_body(request.body, request.header("Content-Type"))
        except XmlError as err:
            platform.garbage(f"{request.method} body: {err}", source)
            return None

    async def _message(self, platform: PlatformClient, request: SipMessage, source: Address) -> None:
        command = self._command(platform, request, source)
        if command is None:
            await platform.respond(request, 400, "Bad Request", warning="the body is not MANSCDP XML")
            return
        if command.root != "Query" or command.cmd_type not in _QUERIES:
            await platform.respond(request, 200, "OK")  # notifications and controls we do not act on
            return
        directory = self.directory(platform)
        target = directory.node(command.device_id)
        if command.device_id != platform.settings.local_id and target is None:
            await platform.respond(request, 404, "Not Found", warning=f"no device {command.device_id[:20]}")
            return
        if command.cmd_type == "RecordInfo":
            await self._record_info(platform, request, command, target, source)
            return
        await platform.respond(request, 200, "OK")
        for body in self._answers(platform, directory, command, target):
            await self._send(platform, body)

    def _answers(
        self, platform: PlatformClient, directory: Directory, command: Command, target: Any
    ) -> list[ET.Element]:
        local_id = platform.settings.local_id
        if command.cmd_type == "Catalog":
            return queries.catalog_messages(
                directory, local_id, command.sn, self._online, platform.settings.catalog_batch
            )
        if command.cmd_type == "DeviceInfo":
            return [
                queries.device_info(directory, local_id, target, command.sn, self._config.gb28181.group_name)
            ]
        camera = target.key if target is not None and target.kind == "camera" else None
        online = self._online(camera) if camera else platform.status.registered
        recording = self._recording(camera) if camera else False
        return [queries.device_status(local_id, target, command.sn, online, recording, datetime.now())]

    async def _record_info(
        self, platform: PlatformClient, request: SipMessage, command: Command, target: Any, source: Address
    ) -> None:
        if target is None or target.kind != "camera":
            await platform.respond(request, 404, "Not Found", warning="RecordInfo is asked of a channel")
            return
        try:
            query = records.record_query(command)
        except XmlError as err:
            platform.garbage(f"RecordInfo: {err}", source)
            await platform.respond(request, 400, "Bad Request", warning=str(err))
            return
        await platform.respond(request, 200, "OK")
        spans = (
            []
            if self._recordings is None
            else await self._recordings.spans(target.key, query.start, query.end)
        )
        batch = platform.settings.catalog_batch
        for body in records.record_info_messages(target, query, spans, command.sn, batch):
            await self._send(platform, body)

    async def _send(self, platform: PlatformClient, body: ET.Element) -> None:
        message = platform.new_request(
            "MESSAGE", platform.server_uri, body=manscdp.render(body, platform.settings.encoding)
        )
        try:
            answer = await platform.request(message)
        except (TimeoutError, CascadeError, OSError) as err:
            log.warning("platform %s: a MESSAGE got no answer: %s", platform.settings.name, err or "timeout")
            return
        if answer.status != 200:
            log.warning(
                "platform %s refused a MESSAGE: %d %s", platform.settings.name, answer.status, answer.reason
            )

    # -- subscriptions ----------------------------------------------------------------

    async def _subscribe(self, platform: PlatformClient, request: SipMessage, source: Address) -> None:
        event = (request.header("Event") or "").split(";")[0].strip().lower()
        command = self._command(platform, request, source)
        if event != "catalog" or command is None or command.cmd_type != "Catalog":
            await platform.respond(request, 489, "Bad Event", warning="only Catalog subscriptions are served")
            return
        expires_text = request.header("Expires") or "3600"
        expires = int(expires_text) if expires_text.isdigit() else 3600
        held = self._subscriptions[platform.settings.name]
        existing = held.get(request.call_id)
        tag = existing.local_tag if existing else new_tag()
        if expires == 0:
            held.pop(request.call_id, None)
        elif existing is None and len(held) >= MAX_SUBSCRIPTIONS:
            await platform.respond(request, 486, "Busy Here", warning="too many subscriptions")
            return
        else:
            contact = request.header("Contact") or request.header("From") or ""
            uri = (
                contact[contact.find("<") + 1 : contact.find(">")]
                if "<" in contact
                else contact.split(";")[0]
            )
            held[request.call_id] = Subscription(
                request.call_id, tag, request.tag("From") or "", uri, command.sn, time.monotonic() + expires
            )
        answer = response_to(request, 200, "OK", to_tag=tag)
        answer.headers.append(("Expires", str(expires)))
        await platform.reply(request, answer)

    def on_state(self, camera_id: str, old: IngestState, new: IngestState, error: str | None) -> None:
        """Stream-manager listener: NOTIFY ON/OFF to every subscriber that sees the camera."""
        was, now = old.available, new.available
        if was == now:
            return
        for platform in self.platforms:
            node = self.directory(platform).camera_node(camera_id)
            if node is None or not self._subscriptions[platform.settings.name]:
                continue
            task = asyncio.create_task(self._notify_all(platform, [node], "ON" if now else "OFF"))
            self._notifies.add(task)
            task.add_done_callback(self._notifies.discard)

    async def _notify_all(self, platform: PlatformClient, nodes: list[Any], event: str) -> None:
        held = self._subscriptions[platform.settings.name]
        for key, subscription in list(held.items()):
            if subscription.expires_at < time.monotonic():
                held.pop(key, None)
                continue
            await self._notify(platform, subscription, nodes, event)

    async def _notify(
        self, platform: PlatformClient, sub: Subscription, nodes: list[Any], event: str
    ) -> None:
        directory = self.directory(platform)
        body = queries.catalog_notify(
            directory, platform.settings.local_id, sub.sn, nodes, event, self._online
        )
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
        remaining = max(0, int(sub.expires_at - time.monotonic()))
        message.headers += [("Event", "Catalog"), ("Subscription-State", f"active;expires={remaining}")]
        with contextlib.suppress(TimeoutError, CascadeError, OSError):
            answer = await platform.request(message)
            if answer.status == 481:
                self._subscriptions[platform.settings.name].pop(sub.call_id, None)

    # -- audit and status ------------------------------------------------------------------

    def _recorded(self, dialog: LiveDialog, reason: str) -> None:
        platform = dialog.platform.settings
        self._record(
            "view",
            username=f"platform {platform.name}",
            centre_id=platform.centre,
            camera_id=dialog.camera_id,
            protocol="gb28181",
            source_addr=dialog.target.host,
            started_at=dialog.started_at,
            ended_at=datetime.now(UTC),
            bytes=dialog.media.bytes_sent,
            detail={
                "end": reason,
                "channel": dialog.channel_id,
                "transport": dialog.target.transport,
                "kind": dialog.kind,
            },
        )
