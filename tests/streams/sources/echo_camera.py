"""A hostile RTSP camera for tests: it echoes what the client sent, credentials included.

:class:`EchoCamera` is an asyncio TCP server on 127.0.0.1 that speaks just enough
RTSP to reach DESCRIBE. It answers OPTIONS with 200; DESCRIBE without an
``Authorization`` header with a Basic challenge; DESCRIBE with one according to
``mode``, quoting that header (the base64 of the client's ``user:password``) in the
reason phrase, in headers and in a body that echoes every request header:

* ``"401"``: ``RTSP/1.0 401 <Authorization>`` (the login refused, again);
* ``"404"`` / ``"500"``: that status with the same reason phrase;
* ``"garbage"``: a start line that is not RTSP at all: the header itself.
"""

from __future__ import annotations

import asyncio
from typing import Literal

EchoMode = Literal["401", "404", "500", "garbage"]


class EchoCamera:
    """See the module docstring. ``async with EchoCamera(mode) as cam:``; ``cam.url`` to reach it."""

    def __init__(self, mode: EchoMode) -> None:
        self.mode = mode
        self.port = 0
        self.echoed = 0
        """DESCRIBE requests with credentials that were echoed back."""
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/stream"

    async def __aenter__(self) -> EchoCamera:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        async with asyncio.timeout(5):
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                lines = head.decode("utf-8", "replace").split("\r\n")
                method = lines[0].split(" ", 1)[0]
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                writer.write(self._answer(method, headers))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def _answer(self, method: str, headers: dict[str, str]) -> bytes:
        cseq = headers.get("CSeq", "0")
        if method == "OPTIONS":
            return f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, DESCRIBE\r\n\r\n".encode()
        auth = headers.get("Authorization")
        if auth is None:
            return (
                f'RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Basic realm="echo"\r\n\r\n'
            ).encode()
        self.echoed += 1
        body = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
        if self.mode == "garbage":
            return f"Authorization: {auth}\r\nCSeq: {cseq}\r\n\r\n".encode()
        return (
            f"RTSP/1.0 {self.mode} {auth}\r\nCSeq: {cseq}\r\n"
            f'WWW-Authenticate: Basic realm="{auth}"\r\nX-Echo: {auth}\r\n'
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
