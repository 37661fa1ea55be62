"""RTSP 1.0 messages on a TCP connection: requests and ``$`` frames in, responses out.

A client's connection carries RTSP requests and, once it plays over TCP, its
interleaved RTCP receiver reports (``$``, channel, 16-bit length, packet; RFC
2326, 10.12). :func:`read_message` returns either. Heads are bounded to
:data:`MAX_HEAD` bytes and bodies to :data:`MAX_BODY`; anything malformed raises
:class:`BadMessage`, after which the connection is closed.

Pure parsing over an ``asyncio.StreamReader``; event loop only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

MAX_HEAD = 8192
MAX_BODY = 65536
VERSION = "RTSP/1.0"

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    453: "Not Enough Bandwidth",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    459: "Aggregate Operation Not Allowed",
    461: "Unsupported Transport",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "RTSP Version Not Supported",
}


class BadMessage(Exception):
    """The client sent something that is not RTSP."""


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    uri: str
    headers: dict[str, str]
    """Header names in lower case; a repeated header keeps its last value."""
    body: bytes = b""

    @property
    def cseq(self) -> str:
        return self.headers.get("cseq", "0")

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class Interleaved:
    """One ``$`` frame: an RTP or RTCP packet on an interleaved channel."""

    channel: int
    data: bytes


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def encode(self, cseq: str) -> bytes:
        lines = [f"{VERSION} {self.status} {REASONS.get(self.status, 'Error')}", f"CSeq: {cseq}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        if self.body:
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


async def read_message(reader: asyncio.StreamReader) -> Request | Interleaved:
    """The next request or interleaved frame. Raises :class:`BadMessage`, and
    ``asyncio.IncompleteReadError`` when the client closed the connection."""
    first = await reader.readexactly(1)
    if first == b"$":
        head = await reader.readexactly(3)
        return Interleaved(head[0], await reader.readexactly(int.from_bytes(head[1:], "big")))
    try:
        head = first + await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as err:
        raise BadMessage("request head too long") from err
    if len(head) > MAX_HEAD:
        raise BadMessage("request head too long")
    request = parse_head(head)
    length = request.headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_BODY:
        raise BadMessage("bad Content-Length")
    body = await reader.readexactly(int(length)) if int(length) else b""
    return Request(request.method, request.uri, request.headers, body)


def parse_head(head: bytes) -> Request:
    """A request line and headers. Raises :class:`BadMessage`."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadMessage("request head is not UTF-8") from err
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("RTSP/"):
        raise BadMessage("not an RTSP request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise BadMessage("malformed header line")
        headers[name.strip().lower()] = value.strip()
    return Request(parts[0].upper(), parts[1], headers)
