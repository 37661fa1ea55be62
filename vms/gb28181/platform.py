"""One superior platform's SIP client: registration, keepalives and the transactions.

:class:`PlatformClient` owns one task that keeps us registered: REGISTER, answer the
digest challenge, then send a keepalive every ``keepalive_interval`` and refresh the
registration before it expires. A keepalive refused (the superior restarted and no
longer knows us) or ``keepalive_misses`` keepalives in a row unanswered (it stopped
answering) make it register again; a failed registration waits with exponential
backoff, the wait being on the stop event so ``stop()`` is instant. ``stop()``
unregisters (``Expires: 0``) when it can.

Requests we send are matched to their answers by Via branch and retransmitted over
UDP (500 ms doubling to 4 s) until ``transaction_timeout``. Requests we receive go
to the cascade's :class:`RequestHandler` in tasks this client owns (a bounded
number; beyond it, 503); a retransmitted request gets the cached answer again.
Event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime

from vms.config_gb28181 import PlatformSettings
from vms.gb28181 import manscdp
from vms.gb28181.digest import ChallengeError, authorization, parse_challenge
from vms.gb28181.sip import SipMessage, new_branch, new_call_id, new_tag, response_to
from vms.gb28181.transport import Address, SipTransport, TcpTransport, UdpTransport

log = logging.getLogger(__name__)

USER_AGENT = "Hallwatch"
MAX_HANDLERS = 32
_ANSWERED = 256
_T1, _T2 = 0.5, 4.0

RequestHandler = Callable[["PlatformClient", SipMessage, Address], Coroutine[object, object, None]]
Registered = Callable[["PlatformClient"], None]


class CascadeError(Exception):
    """Registration or a request failed; the text says how."""


@dataclass(slots=True)
class PlatformStatus:
    registered: bool = False
    since: datetime | None = None
    """When the current registration (or the current failure) began."""
    last_error: str | None = None
    last_error_at: datetime | None = None
    registrations: int = 0
    malformed: int = 0
    """Messages from the superior that could not be parsed (SIP or XML)."""


class PlatformClient:
    """See the module docstring."""

    def __init__(
        self, settings: PlatformSettings, handler: RequestHandler, *, registered: Registered | None = None
    ) -> None:
        """``registered`` is called each time a registration succeeds (not at its refreshes)."""
        self.settings = settings
        self.status = PlatformStatus()
        self._handler = handler
        self._on_registered = registered
        self._transport: SipTransport | None = None
        self._pending: dict[str, asyncio.Future[SipMessage]] = {}
        self._answered: OrderedDict[tuple[str, str], SipMessage | None] = OrderedDict()
        self._handlers: set[asyncio.Task[None]] = set()
        self._logged: set[tuple[str, str]] = set()
        self._stop = asyncio.Event()
        self._broken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._call_id = new_call_id()
        self._from_tag = new_tag()
        self._cseq = 0
        self.sn = 0

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"gb28181-{self.settings.name}")

    async def stop(self) -> None:
        """Unregister (briefly, if registered), then close everything. Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self.status.registered:
            with contextlib.suppress(CascadeError, OSError, TimeoutError):
                await asyncio.wait_for(self._register(0), 2.0)
        self.status.registered = False
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._close_transport()

    # -- addresses -------------------------------------------------------------

    @property
    def contact(self) -> Address:
        """The address the superior reaches us at."""
        host, port = self._transport.local if self._transport else ("0.0.0.0", 0)
        if self.settings.contact_host:
            return self.settings.contact_host, port
        if host in ("0.0.0.0", "::"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((self.settings.host, self.settings.port))
                host = probe.getsockname()[0]
        return host, port

    @property
    def local_uri(self) -> str:
        return f"sip:{self.settings.local_id}@{self.settings.domain}"

    @property
    def server_uri(self) -> str:
        return f"sip:{self.settings.server_id}@{self.settings.domain}"

    def next_sn(self) -> int:
        self.sn += 1
        return self.sn

    # -- the registration loop --------------------------------------------------

    async def _run(self) -> None:
        backoff = self.settings.backoff_initial
        while not self._stop.is_set():
            try:
                await self._connect()
                await self._register(self.settings.register_expiry)
                self._registered()
                backoff = self.settings.backoff_initial
                await self._stay_registered()
            except (CascadeError, OSError, TimeoutError) as err:
                self._failed(str(err) or type(err).__name__)
            if self.settings.transport == "tcp":
                await self._close_transport()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, self.settings.backoff_max)

    async def _connect(self) -> None:
        if self._transport is not None:
            return
        local = (self.settings.local_host, self.settings.local_port)
        remote = (self.settings.host, self.settings.port)
        self._broken.clear()
        if self.settings.transport == "udp":
            self._transport = await UdpTransport.open(local, remote, self._received, self.garbage)
        else:
            async with asyncio.timeout(self.settings.transaction_timeout):
                self._transport = await TcpTransport.open(
                    local, remote, self._received, self.garbage, self._broken.set
                )

    async def _close_transport(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close()

    def _registered(self) -> None:
        self.status.registered = True
        self.status.since = datetime.now(UTC)
        self.status.registrations += 1
        log.info("registered with platform %s (%s)", self.settings.name, self.settings.server_id)
        if self._on_registered is not None:
            self._on_registered(self)

    def _failed(self, reason: str) -> None:
        was = self.status.registered
        self.status.registered = False
        now = datetime.now(UTC)
        if was or self.status.since is None or self.status.last_error is None:
            self.status.since = now
        self.status.last_error, self.status.last_error_at = reason, now
        log.warning("platform %s: %s", self.settings.name, reason)

    async def _stay_registered(self) -> None:
        """Return (raising) when a new registration is needed."""
        expiry = self.settings.register_expiry
        loop = asyncio.get_running_loop()
        refresh_at = loop.time() + expiry - min(60.0, expiry * 0.2)
        misses = 0
        while True:
            wait = min(self.settings.keepalive_interval, max(0.0, refresh_at - loop.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._broken.wait(), wait)
            if self._broken.is_set():
                raise CascadeError("the TCP connection to the superior closed")
            if loop.time() >= refresh_at:
                await self._register(expiry)
                refresh_at = loop.time() + expiry - min(60.0, expiry * 0.2)
                continue
            try:
                answer = await self.request(self._keepalive())
            except TimeoutError:
                misses += 1
                if misses >= self.settings.keepalive_misses:
                    raise CascadeError(f"{misses} keepalives in a row were not answered") from None
                continue
            if answer.status != 200:
                raise CascadeError(f"the superior refused a keepalive: {answer.status} {answer.reason}")
            misses = 0

    def _keepalive(self) -> SipMessage:
        body = manscdp.document("Notify", "Keepalive", self.next_sn(), self.settings.local_id)
        manscdp.add(body, "Status", "OK")
        return self.new_request("MESSAGE", self.server_uri, body=manscdp.render(body, self.settings.encoding))

    async def _register(self, expires: int) -> None:
        message = self._register_message(expires)
        answer = await self.request(message)
        if answer.status in (401, 407):
            header = answer.header("WWW-Authenticate") or answer.header("Proxy-Authenticate") or ""
            try:
                challenge = parse_challenge(header)
            except ChallengeError as err:
                raise CascadeError(f"REGISTER challenge unusable: {err}") from None
            message = self._register_message(expires)
            message.headers.append(
                (
                    "Authorization" if answer.status == 401 else "Proxy-Authorization",
                    authorization(
                        challenge,
                        method="REGISTER",
                        uri=message.uri or "",
                        username=self.settings.local_id,
                        password=self.settings.password.get_secret_value(),
                    ),
                )
            )
            answer = await self.request(message)
        if answer.status != 200:
            raise CascadeError(f"REGISTER refused: {answer.status} {answer.reason}")

    def _register_message(self, expires: int) -> SipMessage:
        host, port = self.contact
        message = self.new_request(
            "REGISTER",
            f"sip:{self.settings.server_id}@{self.settings.domain}",
            to=self.local_uri,
            call_id=self._call_id,
            from_tag=self._from_tag,
        )
        message.headers += [
            ("Contact", f"<sip:{self.settings.local_id}@{host}:{port}>"),
            ("Expires", str(expires)),
        ]
        return message

    # -- sending ------------------------------------------------------------------

    def new_request(
        self,
        method: str,
        uri: str,
        *,
        to: str | None = None,
        to_tag: str | None = None,
        call_id: str | None = None,
        from_tag: str | None = None,
        cseq: int | None = None,
        body: bytes = b"",
        content_type: str = manscdp.CONTENT_TYPE,
    ) -> SipMessage:
        host, port = self.contact
        kind = self._transport.kind if self._transport else self.settings.transport.upper()
        if cseq is None:
            self._cseq += 1
            cseq = self._cseq
        to_value = f"<{to or uri}>" + (f";tag={to_tag}" if to_tag else "")
        headers = [
            ("Via", f"SIP/2.0/{kind} {host}:{port};rport;branch={new_branch()}"),
            ("From", f"<{self.local_uri}>;tag={from_tag or new_tag()}"),
            ("To", to_value),
            ("Call-ID", call_id or new_call_id()),
            ("CSeq", f"{cseq} {method}"),
            ("Max-Forwards", "70"),
            ("User-Agent", USER_AGENT),
        ]
        if body:
            headers.append(("Content-Type", content_type))
        return SipMessage(method=method, uri=uri, headers=headers, body=body)

    async def request(self, message: SipMessage) -> SipMessage:
        """Send a request; its final answer, or ``TimeoutError`` after ``transaction_timeout``."""
        if self._transport is None:
            raise CascadeError("not connected to the superior")
        future: asyncio.Future[SipMessage] = asyncio.get_running_loop().create_future()
        branch = message.branch
        self._pending[branch] = future
        try:
            async with asyncio.timeout(self.settings.transaction_timeout):
                interval = _T1
                while True:
                    await self._transport.send(message)
                    if self._transport.kind == "TCP":
                        return await future
                    with contextlib.suppress(TimeoutError):
                        return await asyncio.wait_for(asyncio.shield(future), interval)
                    interval = min(interval * 2, _T2)
        finally:
            self._pending.pop(branch, None)

    async def reply(self, request: SipMessage, answer: SipMessage) -> None:
        """Send ``answer`` to ``request`` and remember it for retransmissions."""
        key = (request.branch, request.method or "")
        if key in self._answered and answer.status is not None and answer.status >= 200:
            self._answered[key] = answer
        if self._transport is not None:
            answer.headers.append(("User-Agent", USER_AGENT))
            await self._transport.send(answer)

    async def respond(
        self,
        request: SipMessage,
        status: int,
        reason: str,
        *,
        warning: str | None = None,
        to_tag: str | None = None,
        body: tuple[str, bytes] | None = None,
    ) -> None:
        """Answer ``request``; ``body`` is a content type and the bytes of that type."""
        answer = response_to(request, status, reason, to_tag=to_tag)
        if warning:
            answer.headers.append(("Warning", f'399 hallwatch "{warning}"'))
        if body is not None:
            answer.headers.append(("Content-Type", body[0]))
            answer.body = body[1]
        await self.reply(request, answer)

    # -- receiving ------------------------------------------------------------------

    def _received(self, message: SipMessage, source: Address) -> None:
        if not message.is_request:
            future = self._pending.get(message.branch)
            if future is not None and not future.done() and (message.status or 0) >= 200:
                future.set_result(message)
            return
        key = (message.branch, message.method or "")
        if message.method != "ACK" and key in self._answered:
            cached = self._answered[key]
            if cached is not None and self._transport is not None:
                task = asyncio.create_task(self._transport.send(cached))
                self._own(task)
            return
        if len(self._handlers) >= MAX_HANDLERS:
            self._own(asyncio.create_task(self.respond(message, 503, "Service Unavailable")))
            return
        self._answered[key] = None
        while len(self._answered) > _ANSWERED:
            self._answered.popitem(last=False)
        self._own(asyncio.create_task(self._handler(self, message, source)))

    def _own(self, task: asyncio.Task[None]) -> None:
        self._handlers.add(task)
        task.add_done_callback(self._handled)

    def _handled(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("platform %s: a request failed", self.settings.name, exc_info=task.exception())

    def garbage(self, reason: str, source: Address) -> None:
        """Count a malformed message; log it the first time this source sends this kind."""
        self.status.malformed += 1
        key = (f"{source[0]}:{source[1]}", reason.split(":")[0])
        if key not in self._logged and len(self._logged) < 1024:
            self._logged.add(key)
            log.warning("platform %s: malformed message from %s: %s", self.settings.name, key[0], reason)
