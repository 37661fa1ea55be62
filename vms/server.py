"""How uvicorn serves the app: time limits on requests, caps on connections, and a
log that says "out of resources" once per interval instead of once per attempt.

uvicorn bounds neither how long a client may take to send a request's head nor how
many connections it may hold, so a few hundred clients that each send a header line
now and then (slowloris) hold the process's file descriptors until it can accept
nobody. Here:

* :class:`GuardedHttp` (uvicorn's h11 protocol) closes a connection whose request
  head is not in within ``server.header_timeout`` seconds of its start (or of the
  previous answer, on a kept-alive connection), and whose body is not in within
  ``server.body_timeout`` once the head is. An answer being sent, a stream (MJPEG,
  alarm events) and a WebSocket (MSE, MJPEG tiles) have no time limit as long as
  the client reads;
* :class:`Connections` counts open connections, in total and per client address
  (trusted proxies excepted). At a cap, a new connection takes the place of the
  oldest one that is waiting for a request (slowloris and idle kept-alive
  connections); when none waits, the new one gets a 503 and is closed at once;
* a connection whose client leaves what is sent unread is cut after
  ``server.write_timeout``: by the kernel (``TCP_USER_TIMEOUT``) when the client's
  receive window stays shut, by :class:`_WriteStall` when the send buffers stay
  full; the app then sees the client leave (a frozen MJPEG viewer's viewing is
  recorded). WebSockets get the same;
* :class:`Exhaustion` logs a condition (a cap reached, ``EMFILE`` on accept,
  connections timed out) at once, then at most once per interval with a count;
  :func:`install_exception_handler` routes the event loop's accept errors to it;
* :func:`raise_file_limit` raises the process's soft ``RLIMIT_NOFILE`` to its hard
  limit, and the total cap stays below what the limit leaves.

Event loop only (the server's loop), except :func:`raise_file_limit`, called once
before the loop starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import resource
import socket
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

from vms.config import Config, ServerSettings

__all__ = [
    "GRACEFUL_SHUTDOWN",
    "Connections",
    "Exhaustion",
    "GuardedHttp",
    "Server",
    "install_exception_handler",
    "raise_file_limit",
    "server_config",
]

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN = 5
"""Seconds open streams (MJPEG, alarm events) get to end on shutdown before they are cut."""

BACKLOG = 128
"""Connections waiting to be accepted (the listen queue). asyncio also accepts up to this
many in one go, before the first of them is counted, so it bounds how far the open
connections can overshoot the cap (uvicorn's 2048 overshot a 1024-file limit at once)."""

FILES_HELD_BACK = 128 + 2 * BACKLOG
"""File descriptors the connection cap leaves to the database, the cameras and the logs,
and to connections accepted but not counted yet."""

LOG_INTERVAL = 10.0
"""Seconds between two log lines about the same exhausted resource."""

_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 5\r\n"
    b"Connection: close\r\n"
    b"Content-Length: 28\r\n\r\n"
    b"too many connections; retry\n"
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def raise_file_limit() -> int:
    """Raise the soft limit on open files to the hard limit where allowed; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as err:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, err)
        else:
            log.info("open-file limit raised from %d to %d", soft, hard)
            soft = hard
    return soft


def connection_cap(settings: ServerSettings, file_limit: int) -> int:
    """``server.max_connections``, lowered to what the open-file limit leaves."""
    room = max(16, file_limit - FILES_HELD_BACK)
    if settings.max_connections > room:
        log.warning(
            "server.max_connections %d lowered to %d: the open-file limit is %d",
            settings.max_connections,
            room,
            file_limit,
        )
        return room
    return settings.max_connections


class Exhaustion:
    """Logs the first occurrence of a condition at once, then, while it goes on, one line
    per interval with how many times it happened (a timer on the loop, no task)."""

    def __init__(self, interval: float = LOG_INTERVAL, logger: logging.Logger = log) -> None:
        self.interval = interval
        self._log = logger
        self._pending: dict[str, int] = {}
        self.totals: dict[str, int] = {}

    @property
    def summary_due(self) -> bool:
        """Whether a condition is within an interval whose count is still to be logged."""
        return bool(self._pending)

    def note(self, condition: str, level: int = logging.WARNING) -> None:
        self.totals[condition] = self.totals.get(condition, 0) + 1
        if condition in self._pending:
            self._pending[condition] += 1
            return
        self._log.log(level, "%s", condition)
        self._next_interval(condition, level)

    def _next_interval(self, condition: str, level: int) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to time the interval: every occurrence is logged
            return
        self._pending[condition] = 0
        loop.call_later(self.interval, self._summary, condition, level)

    def _summary(self, condition: str, level: int) -> None:
        count = self._pending.pop(condition, 0)
        if count:
            self._log.log(level, "%s: %d more times in %g s", condition, count, self.interval)
            self._next_interval(condition, level)


_ACCEPT_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def install_exception_handler(loop: asyncio.AbstractEventLoop, exhaustion: Exhaustion) -> None:
    """Accept errors for lack of resources (the loop retries by itself) go to ``exhaustion``;
    every other context goes to the handler that was there before."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS:
            exhaustion.note(f"cannot accept connections: {exc.strerror or exc}")
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class Connections:
    """Open connections by client address, and which of them wait for a request."""

    def __init__(
        self,
        total: int,
        per_address: int,
        exempt: Sequence[Network] = (),
        exhaustion: Exhaustion | None = None,
    ) -> None:
        self.total = total
        self.per_address = per_address
        self._exempt = tuple(exempt)
        self.exhaustion = exhaustion or Exhaustion()
        self._open: dict[asyncio.BaseTransport, str] = {}
        self._by_address: dict[str, int] = {}
        self._waiting: OrderedDict[asyncio.BaseTransport, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, transport: asyncio.BaseTransport, address: str) -> bool:
        """Count a new connection, making room if it must; False: refuse it."""
        if not self._exempted(address) and self._by_address.get(address, 0) >= self.per_address:
            if not self._evict(address):
                self.exhaustion.note(f"connections from one address at the cap of {self.per_address}")
                return False
            self.exhaustion.note(
                f"connections from one address at the cap of {self.per_address}: "
                "closed the oldest waiting one",
                logging.INFO,
            )
        if len(self._open) >= self.total:
            if not self._evict(None):
                self.exhaustion.note(f"connections at the cap of {self.total}")
                return False
            self.exhaustion.note(
                f"connections at the cap of {self.total}: closed the oldest waiting one", logging.INFO
            )
        self._open[transport] = address
        self._by_address[address] = self._by_address.get(address, 0) + 1
        return True

    @property
    def waiting(self) -> int:
        """How many open connections wait for a request."""
        return len(self._waiting)

    def set_waiting(self, transport: asyncio.BaseTransport, waiting: bool) -> None:
        """Mark a connection as waiting for a request (it may be replaced) or busy."""
        address = self._open.get(transport)
        if address is None:
            return
        if waiting:
            self._waiting[transport] = address
            self._waiting.move_to_end(transport)
        else:
            self._waiting.pop(transport, None)

    def release(self, transport: asyncio.BaseTransport) -> None:
        address = self._open.pop(transport, None)
        self._waiting.pop(transport, None)
        if address is None:
            return
        left = self._by_address[address] - 1
        if left:
            self._by_address[address] = left
        else:
            del self._by_address[address]

    def _exempted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._exempt)

    def _evict(self, address: str | None) -> bool:
        """Close the oldest waiting connection (of ``address``, or any); False if none waits."""
        victim = next((t for t, a in self._waiting.items() if address is None or a == address), None)
        if victim is None:
            return False
        self.release(victim)
        victim.close()
        return True


class _WriteStall:
    """Aborts a connection whose writes stay paused (the client reads nothing, the send
    buffers are full) for ``write_timeout`` seconds. Closing would wait for the buffers
    to drain, which never happens; aborting lets the app see the client leave."""

    write_timeout: ClassVar[float]
    guard: ClassVar[Connections]
    transport: asyncio.Transport
    _stall: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        if self._stall is None:
            self._stall = asyncio.get_running_loop().call_later(self.write_timeout, self._stalled)

    def resume_writing(self) -> None:
        self._unstall()
        super().resume_writing()  # type: ignore[misc]

    def _unstall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        if self.transport.is_closing() and self.transport.get_write_buffer_size() == 0:
            return
        self.guard.exhaustion.note("closed connections whose client stopped reading", logging.INFO)
        self.transport.abort()


def _limit_unacknowledged(transport: asyncio.BaseTransport, seconds: float) -> None:
    """Have the kernel drop the connection when what it sent stays unacknowledged, or the
    client's receive window stays shut, for ``seconds`` (``TCP_USER_TIMEOUT``): a client
    that stops reading is let go however slowly its stream filled the buffers."""
    sock = transport.get_extra_info("socket")
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if sock is None or option is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, int(seconds * 1000))


class GuardedHttp(_WriteStall, H11Protocol):
    """uvicorn's HTTP/1.1 protocol with time limits on request heads and bodies and a
    place among :class:`Connections`. Subclassed per server by :func:`server_config`,
    which sets the class attributes."""

    guard: ClassVar[Connections]
    header_timeout: ClassVar[float]
    body_timeout: ClassVar[float]

    _timer: asyncio.TimerHandle | None = None
    _timing: str | None = None
    _admitted = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unix"
        if not self.guard.admit(transport, address):
            transport.write(_REFUSAL)
            transport.close()
            return
        self._admitted = True
        _limit_unacknowledged(transport, self.write_timeout)
        super().connection_made(transport)
        self._follow()

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(None)
        self._unstall()
        if not self._admitted:
            return
        if self.transport.get_protocol() is self:
            self.guard.release(self.transport)
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Set the timer and the waiting mark from where the request stands."""
        if self.transport.is_closing():
            self._arm(None)
            return
        if self.transport.get_protocol() is not self:  # a WebSocket now: no limit
            self._arm(None)
            self.guard.set_waiting(self.transport, False)
            return
        state = self.conn.their_state
        busy = self.cycle is not None and not self.cycle.response_complete
        if state is h11.IDLE and not busy:
            self._arm("head")
            self.guard.set_waiting(self.transport, True)
        elif state is h11.SEND_BODY:
            self._arm("body")
            self.guard.set_waiting(self.transport, False)
        else:
            self._arm(None)
            self.guard.set_waiting(self.transport, False)

    def _arm(self, phase: str | None) -> None:
        if phase == self._timing:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timing = phase
        if phase is not None:
            delay = self.header_timeout if phase == "head" else self.body_timeout
            self._timer = self.loop.call_later(delay, self._expired, phase)

    def _expired(self, phase: str) -> None:
        self._timer = None
        self._timing = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        self.guard.exhaustion.note(
            f"closed connections that did not send a request {phase} in time", logging.INFO
        )
        self.transport.close()


def _ws_protocol(connections: Connections, settings: ServerSettings) -> type[asyncio.Protocol] | None:
    """uvicorn's WebSocket protocol, giving the connection's place back when it closes."""
    base: Any = AutoWebSocketsProtocol
    if base is None:
        return None

    class CountedWebSocket(_WriteStall, base):  # type: ignore[misc]
        guard = connections
        write_timeout = settings.write_timeout

        def connection_lost(self, exc: Exception | None) -> None:
            self._unstall()
            connections.release(self.transport)
            super().connection_lost(exc)

    return CountedWebSocket


def server_config(app: FastAPI, file_limit: int | None = None, **options: Any) -> uvicorn.Config:
    """How uvicorn serves the app, ``options`` (host, port, log level) aside.

    The limits come from the app's ``server`` settings; ``file_limit`` (default: the
    process's soft ``RLIMIT_NOFILE``) bounds the connection cap. Forwarding headers are
    believed only from ``server.trusted_proxies``.

    WebSocket compression (permessage-deflate) stays off: browsers ask for it on every
    WebSocket, and uvicorn would agree, compressing each video fragment once per viewer
    although video hardly compresses. Measured with bench/playback.py, that made an MSE
    viewer cost 2.2 % of a core instead of 0.1 % (1080p, 4 Mbit/s).
    """
    config: Config = app.state.config
    settings = config.server
    if file_limit is None:
        file_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    connections = Connections(
        connection_cap(settings, file_limit),
        settings.max_connections_per_address,
        exempt=[ipaddress.ip_network(n) for n in settings.trusted_proxies],
    )
    http = type(
        "GuardedHttp",
        (GuardedHttp,),
        {
            "guard": connections,
            "header_timeout": settings.header_timeout,
            "body_timeout": settings.body_timeout,
            "write_timeout": settings.write_timeout,
        },
    )
    proxies = [str(network) for network in settings.trusted_proxies]
    options.setdefault("timeout_graceful_shutdown", GRACEFUL_SHUTDOWN)
    options.setdefault("backlog", BACKLOG)
    uv = uvicorn.Config(
        app,
        http=http,
        ws=_ws_protocol(connections, settings) or "none",
        ws_per_message_deflate=False,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or "",
        **options,
    )
    app.state.connections = connections
    return uv


class Server(uvicorn.Server):
    """uvicorn's server that routes the loop's accept errors to the connections' log and
    ends the alarm event streams first on shutdown: uvicorn waits for open connections
    to close before the lifespan (which would end them) runs."""

    def __init__(self, app: FastAPI, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._app = app

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        connections: Connections | None = getattr(self._app.state, "connections", None)
        install_exception_handler(
            asyncio.get_running_loop(), connections.exhaustion if connections else Exhaustion()
        )
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        alarms = getattr(self._app.state, "alarms", None)
        if alarms is not None:
            await alarms.stop()
        await super().shutdown(sockets)
