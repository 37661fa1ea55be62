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
* :class:`~vms.connections.Connections` counts open connections, in total and per client address
  (trusted proxies excepted). At a cap, a new connection takes the place of the
  oldest one that is waiting for a request (slowloris and idle kept-alive
  connections); when none waits, the new one gets a 503 and is closed at once;
* a connection whose client leaves what is sent unread is cut after
  ``server.write_timeout``: by the kernel (``TCP_USER_TIMEOUT``) when the client's
  receive window stays shut, by :class:`_WriteStall` when the send buffers stay
  full; the app then sees the client leave (a frozen MJPEG viewer's viewing is
  recorded). WebSockets get the same;
* :class:`~vms.connections.Exhaustion` logs a condition (a cap reached, ``EMFILE`` on accept,
  connections timed out) at once, then at most once per interval with a count;
  :func:`~vms.connections.install_exception_handler` routes the event loop's accept errors to it;
* :func:`raise_file_limit` raises the process's soft ``RLIMIT_NOFILE`` to its hard
  limit, and the total cap stays below what the limit leaves.

Event loop only (the server's loop), except :func:`raise_file_limit`, called once
before the loop starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import resource
import socket
from typing import Any, ClassVar

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

from vms.config import Config, ServerSettings
from vms.connections import Connections, Exhaustion, install_exception_handler

__all__ = [
    "GRACEFUL_SHUTDOWN",
    "GuardedHttp",
    "Server",
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

_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 5\r\n"
    b"Connection: close\r\n"
    b"Content-Length: 28\r\n\r\n"
    b"too many connections; retry\n"
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


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
