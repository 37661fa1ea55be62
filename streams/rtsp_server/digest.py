"""HTTP Digest authentication for RTSP (RFC 2617, as RTSP 1.0 clients implement it).

The server answers ``401`` with a challenge whose nonce it can check without
keeping state: the issue time and an HMAC of it under a secret drawn at start,
so a nonce is valid for :data:`NONCE_LIFETIME` seconds and only on this
process. A client that answers with an expired nonce is challenged again with
``stale=TRUE`` (it retries without asking its user). Both the RFC 2069 form
(no ``qop``, what FFmpeg, GStreamer and VLC use with a server that offers none)
and ``qop=auth`` are checked.

Who the user is, and the HA1 (``MD5(username:realm:password)``) to check the
answer against, are the control plane's: :meth:`DigestCredentials.matches`
takes a stored HA1. The arithmetic and the header syntax are :mod:`streams.digest`'s,
shared with the clients.

Pure computation; any thread.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import Enum

from streams import digest

REALM = "Hallwatch"
NONCE_LIFETIME = 300.0


def ha1(username: str, password: str, realm: str = REALM) -> str:
    """``MD5(username:realm:password)`` in hex: what a server stores to check Digest answers."""
    return digest.ha1(username, password, realm)


class NonceState(Enum):
    VALID = "valid"
    STALE = "stale"
    FOREIGN = "foreign"


class Nonces:
    """Issues and checks stateless nonces. See the module docstring."""

    def __init__(self, lifetime: float = NONCE_LIFETIME) -> None:
        self._secret = secrets.token_bytes(32)
        self._lifetime = lifetime

    def issue(self) -> str:
        stamp = f"{int(time.time()):x}"
        return stamp + self._mac(stamp)

    def check(self, nonce: str) -> NonceState:
        stamp, mac = nonce[:-32], nonce[-32:]
        if not stamp or not hmac.compare_digest(mac, self._mac(stamp)):
            return NonceState.FOREIGN
        if time.time() - int(stamp, 16) > self._lifetime:
            return NonceState.STALE
        return NonceState.VALID

    def _mac(self, stamp: str) -> str:
        return hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]


def challenge(nonce: str, *, stale: bool = False) -> str:
    """The ``WWW-Authenticate`` value of a 401."""
    return f'Digest realm="{REALM}", nonce="{nonce}"' + (", stale=TRUE" if stale else "")


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """A client's ``Authorization: Digest ...`` answer to one request."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    method: str
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None

    def matches(self, stored_ha1: str) -> bool:
        """Whether the answer was computed from the password whose HA1 is ``stored_ha1``."""
        expected = digest.response(
            stored_ha1,
            method=self.method,
            uri=self.uri,
            nonce=self.nonce,
            qop=self.qop,
            nc=self.nc,
            cnonce=self.cnonce,
        )
        return hmac.compare_digest(expected, self.response.lower())


def parse_authorization(value: str | None, method: str) -> DigestCredentials | None:
    """The Digest answer in an ``Authorization`` header, or None (absent, Basic, malformed)."""
    if value is None:
        return None
    scheme, params = digest.parse_header(value)
    if scheme != "digest":
        return None
    try:
        credentials = DigestCredentials(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"],
            method=method,
            qop=params.get("qop"),
            nc=params.get("nc"),
            cnonce=params.get("cnonce"),
        )
    except KeyError:
        return None
    if credentials.qop not in (None, "auth") or (
        credentials.qop and not (credentials.nc and credentials.cnonce)
    ):
        return None
    return credentials
