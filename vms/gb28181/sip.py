"""SIP messages (RFC 3261) as GB/T 28181 uses them: parse, build, serialise.

A :class:`SipMessage` is a request or a response with its headers in order and its
body as bytes (a MANSCDP body may be GB2312). :func:`parse` is tolerant where the
field is sloppy (compact header names, any case, LF-only line ends, a missing
``Content-Length`` over UDP) and exact where it matters: anything it cannot use
raises :class:`SipParseError` saying what is wrong, never another exception.
Pure functions and data; any thread.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

SIP_VERSION = "SIP/2.0"
BRANCH_MAGIC = "z9hG4bK"
MAX_MESSAGE = 256 * 1024
"""Bytes one message may take, head and body; larger ones are refused."""

_COMPACT = {
    "v": "Via",
    "f": "From",
    "t": "To",
    "i": "Call-ID",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "o": "Event",
    "s": "Subject",
}
_CANONICAL = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Length",
        "Content-Type",
        "Max-Forwards",
        "User-Agent",
        "Expires",
        "WWW-Authenticate",
        "Authorization",
        "Event",
        "Subscription-State",
        "Subject",
        "Warning",
        "Reason",
        "Date",
        "Allow",
        "Supported",
    )
}
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_STATUS = re.compile(r"^SIP/2\.0 ([1-6]\d\d)(?: (.*))?$")


class SipParseError(ValueError):
    """A message that cannot be used; the text says why (never the whole message)."""


@dataclass(slots=True)
class SipMessage:
    """A SIP request (``method`` and ``uri`` set) or response (``status`` set)."""

    method: str | None = None
    uri: str | None = None
    status: int | None = None
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def header(self, name: str) -> str | None:
        """The first value of a header (any case), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def headers_named(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    def set_header(self, name: str, value: str) -> None:
        """Replace every value of ``name`` by one, in the place of the first."""
        wanted = name.lower()
        kept: list[tuple[str, str]] = []
        placed = False
        for key, old in self.headers:
            if key.lower() != wanted:
                kept.append((key, old))
            elif not placed:
                kept.append((name, value))
                placed = True
        if not placed:
            kept.append((name, value))
        self.headers = kept

    @property
    def call_id(self) -> str:
        return self.header("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """``(number, method)`` of the CSeq header."""
        number, _, method = (self.header("CSeq") or "").partition(" ")
        return int(number), method.strip().upper()

    @property
    def branch(self) -> str:
        """The top Via's branch parameter ('' if none)."""
        return param(self.header("Via") or "", "branch") or ""

    def tag(self, header: str) -> str | None:
        """The tag parameter of From or To."""
        return param(self.header(header) or "", "tag")

    def to_bytes(self) -> bytes:
        if self.method is not None:
            first = f"{self.method} {self.uri} {SIP_VERSION}"
        else:
            first = f"{SIP_VERSION} {self.status} {self.reason}"
        lines = [first]
        lines += [f"{name}: {value}" for name, value in self.headers if name.lower() != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body

    def describe(self) -> str:
        """A short description for a log line: method or status, and the Call-ID."""
        what = self.method if self.method is not None else f"{self.status} to {self.cseq_text()}"
        return f"{what} (Call-ID {self.call_id[:40]!r})"

    def cseq_text(self) -> str:
        return self.header("CSeq") or "?"


def param(value: str, name: str) -> str | None:
    """A ``;name=value`` parameter of a header value (outside its ``<...>``), unquoted."""
    head = value.rpartition(">")[2] if ">" in value else value
    for part in head.split(";")[1:]:
        key, _, found = part.partition("=")
        if key.strip().lower() == name:
            return found.strip().strip('"')
    return None


def uri_user(value: str) -> str:
    """The user part of the SIP URI in a header value or request URI (``sip:user@host``)."""
    uri = value[value.find("<") + 1 : value.find(">")] if "<" in value else value
    uri = uri.split(";")[0].strip()
    if uri.lower().startswith(("sip:", "sips:")):
        uri = uri.partition(":")[2]
    return uri.partition("@")[0] if "@" in uri else ""


def new_branch() -> str:
    return BRANCH_MAGIC + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id() -> str:
    return secrets.token_hex(12)


def response_to(request: SipMessage, status: int, reason: str, *, to_tag: str | None = None) -> SipMessage:
    """A response copying Via, From, To (with ``to_tag`` added if it has none), Call-ID and CSeq."""
    headers = [(name, value) for name, value in request.headers if name.lower() == "via"]
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.header(name) or ""
        if name == "To" and to_tag is not None and param(value, "tag") is None:
            value = f"{value};tag={to_tag}"
        headers.append((name, value))
    return SipMessage(status=status, reason=reason, headers=headers)


def split_head(buffer: bytes) -> tuple[bytes, bytes] | None:
    """The head (without its blank line) and what follows, or None while incomplete."""
    for marker in (b"\r\n\r\n", b"\n\n"):
        end = buffer.find(marker)
        if end >= 0:
            return buffer[:end], buffer[end + len(marker) :]
    return None


def body_length(head: bytes) -> int | None:
    """The Content-Length a head declares (None if it declares none)."""
    for line in head.split(b"\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            text = value.strip()
            if not text.isdigit() or len(text) > 7:
                raise SipParseError("the Content-Length is not a number of bytes")
            return int(text)
    return None


def parse(data: bytes, *, stream: bool = False) -> SipMessage:
    """One whole message. Over a stream (TCP) ``Content-Length`` is required; over UDP its
    absence means the body runs to the end of the datagram."""
    if len(data) > MAX_MESSAGE:
        raise SipParseError(f"the message is larger than {MAX_MESSAGE} bytes")
    parts = split_head(data.lstrip(b"\r\n"))
    if parts is None:
        raise SipParseError("the message has no blank line ending its headers")
    head, rest = parts
    declared = body_length(head)
    if declared is None and stream:
        raise SipParseError("a message over TCP needs a Content-Length")
    if declared is not None and declared > len(rest):
        raise SipParseError(f"the body is shorter ({len(rest)} bytes) than its Content-Length ({declared})")
    body = rest if declared is None else rest[:declared]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("gb18030", errors="replace")
    lines = text.replace("\r\n", "\n").split("\n")
    message = _start_line(lines[0].strip())
    message.headers = _headers(lines[1:])
    message.body = body
    _check_required(message)
    return message


def _start_line(line: str) -> SipMessage:
    status = _STATUS.match(line)
    if status:
        return SipMessage(status=int(status.group(1)), reason=status.group(2) or "")
    parts = line.split(" ")
    if len(parts) != 3 or parts[2] != SIP_VERSION or not _TOKEN.match(parts[0]):
        raise SipParseError(f"the first line is neither a SIP request nor a response: {line[:60]!r}")
    return SipMessage(method=parts[0].upper(), uri=parts[1])


def _headers(lines: list[str]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _TOKEN.match(name):
            raise SipParseError(f"a header line has no name: {line[:60]!r}")
        lower = name.lower()
        name = _COMPACT.get(lower) or _CANONICAL.get(lower) or name
        headers.append((name, value.strip()))
    return headers


def _check_required(message: SipMessage) -> None:
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not message.header(name):
            raise SipParseError(f"the message has no {name} header")
    number, _, method = (message.header("CSeq") or "").partition(" ")
    if not number.strip().isdigit() or not method.strip():
        raise SipParseError("the CSeq header is not a number and a method")
    if message.method is not None and method.strip().upper() != message.method:
        raise SipParseError(f"the CSeq method differs from the request's ({message.method})")
