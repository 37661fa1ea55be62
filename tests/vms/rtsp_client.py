"""A minimal RTSP client on a real socket, for what FFmpeg hides: the exact status of each
answer, and requests with or without Digest credentials.

Its Digest is its own (RFC 2617 without ``qop``, as FFmpeg answers): it shares no code
with the server under test. TCP interleaved only; what arrives interleaved is skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass, field


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class RtspClient:
    host: str
    port: int
    path: str
    """``/<camera>`` or ``/<camera>/sub``."""
    username: str = ""
    password: str = ""
    session: str | None = None
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _cseq: int = 0
    _nonce: str | None = None
    answers: list[Answer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"rtsp://{self.host}:{self.port}{self.path}"

    async def __aenter__(self) -> RtspClient:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()

    async def request(
        self, method: str, uri: str | None = None, *, auth: bool = True, **headers: str
    ) -> Answer:
        """Send one request (with Digest credentials once a challenge gave a nonce, unless
        ``auth`` is false) and read its answer."""
        assert self._reader is not None and self._writer is not None
        uri = uri or self.url
        self._cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self._cseq}"]
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        if self.session is not None:
            lines.append(f"Session: {self.session}")
        if auth and self._nonce is not None:
            lines.append(f"Authorization: {self._digest(method, uri)}")
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self._writer.drain()
        answer = await self._answer()
        self.answers.append(answer)
        challenge = answer.headers.get("www-authenticate", "")
        if (found := re.search(r'nonce="([^"]+)"', challenge)) is not None:
            self._nonce = found.group(1)
        if "session" in answer.headers:
            self.session = answer.headers["session"].split(";")[0]
        return answer

    async def describe(self) -> Answer:
        """DESCRIBE as clients do it: without credentials first, again with them when challenged."""
        answer = await self.request("DESCRIBE", auth=False, Accept="application/sdp")
        if answer.status == 401:
            answer = await self.request("DESCRIBE", Accept="application/sdp")
        return answer

    async def setup_video(self) -> Answer:
        return await self.request(
            "SETUP", f"{self.url}/trackID=0", Transport="RTP/AVP/TCP;unicast;interleaved=0-1"
        )

    def _digest(self, method: str, uri: str) -> str:
        realm = "Hallwatch"
        response = _md5(
            f"{_md5(f'{self.username}:{realm}:{self.password}')}:{self._nonce}:{_md5(f'{method}:{uri}')}"
        )
        return (
            f'Digest username="{self.username}", realm="{realm}", nonce="{self._nonce}", '
            f'uri="{uri}", response="{response}"'
        )

    async def _answer(self) -> Answer:
        assert self._reader is not None
        async with asyncio.timeout(10):
            while (first := await self._reader.readexactly(1)) == b"$":
                header = await self._reader.readexactly(3)
                await self._reader.readexactly(int.from_bytes(header[1:3], "big"))
            head = first + await self._reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await self._reader.readexactly(int(headers.get("content-length", "0")))
        return Answer(int(lines[0].split(" ")[1]), headers, body)
