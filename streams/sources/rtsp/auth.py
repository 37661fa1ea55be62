"""RTSP client authentication: Basic and Digest (RFC 2617 / RFC 7616, MD5 or SHA-256).

An :class:`Authenticator` learns the server's challenge from a ``401`` answer and
then signs every later request (Digest by :func:`streams.digest.authorization`).
It holds the password; nothing here logs or formats it into a message.

Pure code; owned by one RTSP connection (event loop only).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from streams import digest


class AuthUnsupported(Exception):
    """The server asks for an authentication scheme or algorithm we do not speak."""


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str
    """``"basic"`` or ``"digest"``."""
    params: dict[str, str]


def parse_challenges(values: list[str]) -> list[Challenge]:
    """The challenges of every ``WWW-Authenticate`` header value."""
    return [Challenge(*digest.parse_header(value)) for value in values]


class Authenticator:
    """Signs requests with the credentials, once a challenge is known."""

    def __init__(self, username: str, password: str) -> None:
        self._username = username
        self._password = password
        self._challenge: Challenge | None = None
        self._nonce_count = 0

    @property
    def ready(self) -> bool:
        return self._challenge is not None

    def learn(self, header_values: list[str]) -> None:
        """Take the strongest supported challenge; raise AuthUnsupported if none is."""
        challenges = parse_challenges(header_values)
        digests = [
            c
            for c in challenges
            if c.scheme == "digest"
            and c.params.get("algorithm", "MD5").upper() in digest.ALGORITHMS
            and "nonce" in c.params
        ]
        basic = [c for c in challenges if c.scheme == "basic"]
        candidates = digests or basic
        if not candidates:
            offered = ", ".join(sorted({c.scheme for c in challenges})) or "nothing"
            raise AuthUnsupported(f"unsupported authentication scheme (server offers {offered})")
        chosen = candidates[0]
        if self._challenge is None or chosen.params.get("nonce") != self._challenge.params.get("nonce"):
            self._nonce_count = 0
        self._challenge = chosen

    def header(self, method: str, uri: str) -> str | None:
        """The ``Authorization`` value for a request, or None before any challenge."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            token = base64.b64encode(f"{self._username}:{self._password}".encode()).decode("ascii")
            return f"Basic {token}"
        self._nonce_count += 1
        return digest.authorization(
            challenge.params,
            method=method,
            uri=uri,
            username=self._username,
            password=self._password,
            count=self._nonce_count,
        )
