"""The cascade to every configured superior platform: what the app starts and stops.

:class:`Cascade` owns one :class:`~vms.gb28181.platform.PlatformClient` per platform
and answers what each superior asks: Catalog, DeviceInfo and DeviceStatus queries
(200 to the MESSAGE, then the result as MESSAGEs of our own), catalog subscriptions
(:mod:`vms.gb28181.subscriptions`: NOTIFY ON/OFF when a shared camera's state changes,
as it listens to the stream manager, and DEL/ADD/UPDATE after a registration for what
the configuration changed since the superior was last told, kept in ``store``),
RecordInfo queries from the recordings (:mod:`vms.gb28181.records`), and INVITEs for
live play, playback and download with their INFO controls (:mod:`vms.gb28181.invite`).
A body that is not usable MANSCDP is answered 400 and counted as malformed. Event
loop only.
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
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
from vms.gb28181.sip import SipMessage
from vms.gb28181.subscription_store import SubscriptionStore
from vms.gb28181.subscriptions import CatalogSubscriptions
from vms.gb28181.transport import Address

log = logging.getLogger(__name__)

_QUERIES = ("Catalog", "DeviceInfo", "DeviceStatus", "RecordInfo")
ViewRecorder = Callable[..., None]
"""``record_soon(action, **fields)`` of :class:`vms.viewing.ViewingRecorder`."""


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
        store: SubscriptionStore | None = None,
    ) -> None:
        self._config = config
        self._online = online
        self._recording = recording
        self._record = record
        self._recordings = recordings
        self.live = LiveDialogs(media, config.gb28181.max_sessions_total, self._recorded, recordings)
        self.platforms = [
            PlatformClient(p, self._handle, registered=self._registered) for p in config.gb28181.platforms
        ]
        self._directories = {
            client.settings.name: Directory(config, client.settings) for client in self.platforms
        }
        self.subscriptions = CatalogSubscriptions(self.platforms, self._directories, online, store)

    def start(self) -> None:
        for platform in self.platforms:
            platform.start()

    async def stop(self) -> None:
        """End live sessions (BYE), unregister, close. Idempotent."""
        await self.live.stop()
        await self.subscriptions.stop()
        await asyncio.gather(*(platform.stop() for platform in self.platforms))

    def directory(self, platform: PlatformClient) -> Directory:
        return self._directories[platform.settings.name]

    def _registered(self, platform: PlatformClient) -> None:
        self.subscriptions.registered(platform)

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
        await self.subscriptions.subscribe(platform, request, command)

    def on_state(self, camera_id: str, old: IngestState, new: IngestState, error: str | None) -> None:
        """Stream-manager listener: NOTIFY ON/OFF to every subscriber that sees the camera."""
        self.subscriptions.on_state(camera_id, old, new)

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
