"""RTSP client authentication: Basic and Digest (RFC 2617 / RFC 7616, MD5 or SHA-256).

An :class:`Authenticator` learns the server's challenge from a ``401`` answer and
then signs every later request. It holds the password; nothing here logs or
formats it into a message.

Pure code; owned by one RTSP connection (event loop only).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass

_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')
_HASHES = {"MD5": hashlib.md5, "MD5-SESS": hashlib.md5, "SHA-256": hashlib.sha256}


class AuthUnsupported(Exception):
    """The server asks for an authentication scheme or algorithm we do not speak."""


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str
    """``"basic"`` or ``"digest"``."""
    params: dict[str, str]


def parse_challenges(values: list[str]) -> list[Challenge]:
    """The challenges of every ``WWW-Authenticate`` header value."""
    found: list[Challenge] = []
    for value in values:
        scheme, _, rest = value.strip().partition(" ")
        params: dict[str, str] = {}
        for match in _PARAM.finditer(rest):
            raw = match.group(2)
            if raw.startswith('"'):
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            params[match.group(1).lower()] = raw
        found.append(Challenge(scheme.lower(), params))
    return found


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
        digest = [
            c
            for c in challenges
            if c.scheme == "digest"
            and c.params.get("algorithm", "MD5").upper() in _HASHES
            and "nonce" in c.params
        ]
        basic = [c for c in challenges if c.scheme == "basic"]
        candidates = digest or basic
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
        return self._digest(challenge.params, method, uri)

    def _digest(self, params: dict[str, str], method: str, uri: str) -> str:
        algorithm = params.get("algorithm", "MD5")
        hash_fn = _HASHES[algorithm.upper()]

        def h(text: str) -> str:
            return hash_fn(text.encode()).hexdigest()

        realm, nonce = params.get("realm", ""), params["nonce"]
        qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
        cnonce = os.urandom(8).hex()
        ha1 = h(f"{self._username}:{realm}:{self._password}")
        if algorithm.upper().endswith("-SESS"):
            ha1 = h(f"{ha1}:{nonce}:{cnonce}")
        ha2 = h(f"{method}:{uri}")
        fields = [
            f'username="{self._username}"',
            f'realm="{realm}"',
            f'nonce="{nonce}"',
            f'uri="{uri}"',
        ]
        if "auth" in qops:
            self._nonce_count += 1
            nc = f"{self._nonce_count:08x}"
            response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
            fields += [f'response="{response}"', "qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
        else:
            fields.append(f'response="{h(f"{ha1}:{nonce}:{ha2}")}"')
        if "algorithm" in params:
            fields.append(f"algorithm={algorithm}")
        if "opaque" in params:
            fields.append(f'opaque="{params["opaque"]}"')
        return "Digest " + ", ".join(fields)
