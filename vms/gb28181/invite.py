"""Sessions for superior platforms: INVITE, ACK, BYE and the media session between.

:class:`LiveDialogs` answers an INVITE for a shared camera: 404 for a channel the
platform may not see, 486 beyond the platform's or the site's cap or when the camera
(or the relay) already has all the viewers it may have, whatever their protocol, 488 or 415 for
an SDP we cannot serve, each with the reason in a ``Warning`` header; else ``100``,
the media session opened, and ``200`` with our SDP (retransmitted over UDP until
the ACK). ``s=Play`` sends the live stream (a :class:`~vms.gb28181.media.MediaStarter`);
``s=Playback`` and ``s=Download`` send the recording between the ``t=`` times (a
:class:`~vms.gb28181.media.RecordStarter`; 404 with the reason when nothing is
recorded there), playback at real time (INFO with MANSRTSP pauses, resumes,
changes its scale and seeks, answered with the MANSRTSP response, see
:mod:`vms.gb28181.playback`), download at ``a=downloadspeed``.
The ACK starts the media; a BYE from the superior, or the media ending by itself
(then we send BYE; at the end of a recording a MediaStatus 121 MESSAGE first), ends
the dialog, and every dialog that had a session is recorded as a ``view`` by
``platform <name>``. Event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from streams import CapacityError, StreamError, UnknownCamera
from vms.gb28181 import manscdp, sdp
from vms.gb28181.channels import Directory
from vms.gb28181.media import (
    InvalidRange,
    MediaSession,
    MediaStarter,
    MediaTarget,
    PlaybackSession,
    RecordStarter,
)
from vms.gb28181.platform import CascadeError, PlatformClient
from vms.gb28181.playback import CONTENT_TYPE as MANSRTSP
from vms.gb28181.playback import Control, ControlError, media_status, parse_control, rtsp_response
from vms.gb28181.records import gb_time
from vms.gb28181.sip import SipMessage, new_tag, response_to, uri_user
from vms.gb28181.transport import Address

log = logging.getLogger(__name__)

ACK_TIMEOUT = 32.0
"""Seconds the 200 waits for its ACK (64 × T1), after which the dialog is dropped."""

MEDIA_STATUS_GRACE = 5.0
"""Seconds the superior has to send its BYE after our MediaStatus, before we send ours."""
UDP_DOWNLOAD_SPEED = 4.0
"""Times real time a download over UDP goes when the offer names no ``a=downloadspeed``
(over TCP it then goes as fast as the connection takes it; UDP has no such brake)."""

Recorder = Callable[["LiveDialog", str], None]
SessionKind = Literal["live", "playback", "download"]
_KINDS: dict[str, SessionKind] = {"play": "live", "playback": "playback", "download": "download"}


@dataclass(slots=True)
class LiveDialog:
    platform: PlatformClient
    camera_id: str
    channel_id: str
    call_id: str
    local_tag: str
    remote_tag: str
    remote_uri: str
    target: MediaTarget
    media: MediaSession
    kind: SessionKind = "live"
    playback: PlaybackSession | None = None
    """The media again, with its controls, when the dialog plays a recording back."""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False
    end_reason: str | None = None
    task: asyncio.Task[None] | None = None


class LiveDialogs:
    """The live dialogs of every platform; see the module docstring."""

    def __init__(
        self,
        media: MediaStarter | None,
        max_total: int,
        record: Recorder,
        recordings: RecordStarter | None = None,
    ) -> None:
        self._media = media
        self._recordings = recordings
        self._max_total = max_total
        self._record = record
        self.dialogs: dict[str, LiveDialog] = {}
        self.refused: dict[tuple[str, int], int] = {}
        """INVITEs answered with an error, by platform name and status."""
        self.started: dict[tuple[str, SessionKind], int] = {}
        """Sessions answered 200, by platform name and kind."""

    def count(self, platform: PlatformClient | None = None, kind: SessionKind | None = None) -> int:
        return sum(
            1
            for d in self.dialogs.values()
            if (platform is None or d.platform is platform) and (kind is None or d.kind == kind)
        )

    async def invite(
        self, platform: PlatformClient, directory: Directory, request: SipMessage, source: Address
    ) -> None:
        if request.call_id in self.dialogs:
            await platform.respond(request, 491, "Request Pending", warning="this dialog already plays")
            return
        await platform.respond(request, 100, "Trying")
        try:
            offer = self._check(platform, directory, request)
            camera_id = directory.node(offer.channel_id).key  # type: ignore[union-attr]  # checked
            target = MediaTarget(
                offer.host,
                offer.port,
                offer.transport,
                int(offer.ssrc),
                offer.payload_type,
                platform.settings.local_host,
            )
            kind = _KINDS[offer.session.lower()]
            playback = None if kind == "live" else await self._open_recording(camera_id, target, offer)
            media = playback or await self._open(camera_id, target)
        except sdp.OfferError as err:
            self.refused[(platform.settings.name, err.status)] = (
                self.refused.get((platform.settings.name, err.status), 0) + 1
            )
            log.info(
                "platform %s: INVITE from %s:%d refused: %d %s",
                platform.settings.name,
                *source,
                err.status,
                err.reason,
            )
            await platform.respond(
                request, err.status, _REASONS[err.status], warning=err.reason, to_tag=new_tag()
            )
            return
        tag = new_tag()
        contact = request.header("Contact") or request.header("From") or ""
        dialog = LiveDialog(
            platform,
            camera_id,
            offer.channel_id,
            request.call_id,
            tag,
            request.tag("From") or "",
            _uri_of(contact),
            target,
            media,
            kind,
            playback,
        )
        self.dialogs[request.call_id] = dialog
        key = (platform.settings.name, kind)
        self.started[key] = self.started.get(key, 0) + 1
        host, _ = platform.contact
        answer = response_to(request, 200, "OK", to_tag=tag)
        answer.headers += [
            ("Contact", f"<sip:{platform.settings.local_id}@{host}:{platform.contact[1]}>"),
            ("Content-Type", sdp.CONTENT_TYPE),
        ]
        answer.body = sdp.answer(
            offer, local_id=platform.settings.local_id, host=host, port=media.local_port
        ).encode()
        dialog.task = asyncio.create_task(
            self._run(dialog, answer), name=f"gb28181-live-{request.call_id[:16]}"
        )

    def _check(self, platform: PlatformClient, directory: Directory, request: SipMessage) -> sdp.Offer:
        if not request.body:
            raise sdp.OfferError(488, "the INVITE has no SDP offer")
        offer = sdp.parse_offer(request.body.decode("utf-8", errors="replace"))
        channel = uri_user(request.uri or "") or offer.channel_id
        node = directory.node(channel)
        if node is None or node.kind != "camera":
            raise sdp.OfferError(404, f"no channel {channel[:20]} is shared with this platform")
        kind = _KINDS.get(offer.session.lower())
        if kind is None:
            raise sdp.OfferError(
                488, f"s={offer.session[:20]} is not served; only Play, Playback and Download"
            )
        if kind != "live" and self._recordings is None:
            raise sdp.OfferError(503, "this site keeps no recordings to play back")
        if self.count(platform) >= platform.settings.max_sessions:
            raise sdp.OfferError(
                486, f"this platform already holds {platform.settings.max_sessions} live sessions"
            )
        if self.count() >= self._max_total:
            raise sdp.OfferError(486, f"the site already serves {self._max_total} cascade sessions")
        if self._media is None:
            raise sdp.OfferError(503, "this build has no PS-over-RTP sender")
        return dataclasses.replace(offer, channel_id=channel)

    async def _open(self, camera_id: str, target: MediaTarget) -> MediaSession:
        assert self._media is not None
        try:
            return await self._media.open(camera_id, target)
        except UnknownCamera as err:
            raise sdp.OfferError(404, str(err)) from err
        except CapacityError as err:
            raise sdp.OfferError(486, str(err)) from err
        except (StreamError, OSError) as err:
            raise sdp.OfferError(503, f"the camera cannot be sent now: {err}") from err

    async def _open_recording(self, camera_id: str, target: MediaTarget, offer: sdp.Offer) -> PlaybackSession:
        assert self._recordings is not None
        begin, stop = offer.times
        if not 0 < begin < stop:
            raise sdp.OfferError(
                488, f"s={offer.session} needs t=<start> <stop> in Unix seconds, start first"
            )
        start, end = datetime.fromtimestamp(begin, UTC), datetime.fromtimestamp(stop, UTC)
        if not await self._recordings.spans(camera_id, start, end):
            raise sdp.OfferError(
                404,
                f"nothing is recorded from {gb_time(start)} to {gb_time(end)}",
            )
        scale: float | None = 1.0
        if offer.session.lower() == "download":
            scale = offer.download_speed or (UDP_DOWNLOAD_SPEED if target.transport == "udp" else None)
        try:
            return await self._recordings.open_recording(camera_id, target, start, end, scale)
        except OSError as err:
            raise sdp.OfferError(503, f"the recording cannot be sent now: {err}") from err

    async def _run(self, dialog: LiveDialog, answer: SipMessage) -> None:
        platform = dialog.platform
        reason = "closed"
        try:
            await platform.reply(_request_key(answer), answer)
            if not await self._wait_ack(dialog, answer):
                reason = "no ACK"
                return
            await dialog.media.start()
            reason = await dialog.media.done
            if dialog.playback is not None and dialog.playback.finished:
                await self._file_ended(dialog)
            await self._send_bye(dialog)
        except (CascadeError, OSError, StreamError) as err:
            reason = f"failed: {err}"
        finally:
            await self._end(dialog, dialog.end_reason or reason)

    async def _wait_ack(self, dialog: LiveDialog, answer: SipMessage) -> bool:
        interval = 0.5
        async with asyncio.timeout(ACK_TIMEOUT) as deadline:
            while not dialog.acked.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(dialog.acked.wait(), interval)
                if not dialog.acked.is_set() and dialog.platform.settings.transport == "udp":
                    await dialog.platform.reply(_request_key(answer), answer)
                interval = min(interval * 2, 4.0)
        return not deadline.expired()

    async def _file_ended(self, dialog: LiveDialog) -> None:
        """MediaStatus 121 to the superior, then a while for its BYE (which cancels this task)."""
        platform = dialog.platform
        body = manscdp.render(media_status(dialog.channel_id, platform.next_sn()), platform.settings.encoding)
        with contextlib.suppress(TimeoutError, CascadeError, OSError):
            await platform.request(platform.new_request("MESSAGE", platform.server_uri, body=body))
        await asyncio.sleep(MEDIA_STATUS_GRACE)

    async def info(self, platform: PlatformClient, request: SipMessage) -> None:
        """Playback control (MANSRTSP) in a playback dialog."""
        dialog = self.dialogs.get(request.call_id)
        if dialog is None or dialog.platform is not platform:
            await platform.respond(request, 481, "Call/Transaction Does Not Exist")
            return
        playback = dialog.playback
        if playback is None:
            await platform.respond(request, 200, "OK")  # nothing to control in a live session
            return
        try:
            control = parse_control(request.body)
        except ControlError as err:
            await platform.respond(request, 488, "Not Acceptable Here", warning=str(err))
            return
        position = None
        if control.position is not None:
            try:
                position = await playback.seek(control.position)
            except InvalidRange as err:
                body = (MANSRTSP, rtsp_response(control, 457, "Invalid Range"))
                await platform.respond(request, 457, "Invalid Range", warning=str(err), body=body)
                return
        _apply(control, playback)
        body = (MANSRTSP, rtsp_response(control, position=position))
        await platform.respond(request, 200, "OK", body=body)
        if control.method == "TEARDOWN":
            await self.end(dialog, "TEARDOWN from the platform")

    async def _send_bye(self, dialog: LiveDialog) -> None:
        platform = dialog.platform
        bye = platform.new_request(
            "BYE",
            dialog.remote_uri,
            to=platform.server_uri,
            to_tag=dialog.remote_tag,
            call_id=dialog.call_id,
            from_tag=dialog.local_tag,
            cseq=2,
        )
        bye.set_header(
            "From", f"<sip:{platform.settings.local_id}@{platform.settings.domain}>;tag={dialog.local_tag}"
        )
        with contextlib.suppress(TimeoutError, CascadeError, OSError):
            await platform.request(bye)

    async def _end(self, dialog: LiveDialog, reason: str) -> None:
        if dialog.ended:
            return
        dialog.ended = True
        self.dialogs.pop(dialog.call_id, None)
        await dialog.media.stop()
        self._record(dialog, reason)

    def ack(self, request: SipMessage) -> None:
        dialog = self.dialogs.get(request.call_id)
        if dialog is not None:
            dialog.acked.set()

    async def bye(self, platform: PlatformClient, request: SipMessage) -> None:
        dialog = self.dialogs.get(request.call_id)
        if dialog is None or dialog.platform is not platform:
            await platform.respond(request, 481, "Call/Transaction Does Not Exist")
            return
        await platform.respond(request, 200, "OK")
        await self.end(dialog, "BYE from the platform")

    async def end(self, dialog: LiveDialog, reason: str) -> None:
        """End a dialog on the superior's word (no BYE of ours)."""
        dialog.end_reason = reason
        task = dialog.task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._end(dialog, reason)

    async def stop(self) -> None:
        """End every dialog: BYE to each superior (briefly), media stopped, viewings recorded."""
        for dialog in list(self.dialogs.values()):
            dialog.end_reason = "service stopping"
            if dialog.task is not None:
                dialog.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dialog.task
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._send_bye(dialog), 1.0)
            await self._end(dialog, dialog.end_reason)


_REASONS = {
    404: "Not Found",
    415: "Unsupported Media Type",
    486: "Busy Here",
    488: "Not Acceptable Here",
    503: "Service Unavailable",
}


def _apply(control: Control, media: PlaybackSession) -> None:
    if control.scale is not None:
        media.set_scale(control.scale)
    if control.method == "PAUSE":
        media.pause()
    elif control.method == "PLAY":
        media.resume()


def _uri_of(header: str) -> str:
    if "<" in header:
        return header[header.find("<") + 1 : header.find(">")]
    return header.split(";")[0].strip()


def _request_key(answer: SipMessage) -> SipMessage:
    """A stand-in request carrying the answer's Via and CSeq, for :meth:`PlatformClient.reply`."""
    number, method = answer.cseq
    return SipMessage(
        method=method, uri="", headers=[("Via", answer.header("Via") or ""), ("CSeq", f"{number} {method}")]
    )
