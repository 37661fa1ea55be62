"""HTTP digest authentication for REGISTER (RFC 2617, MD5, with or without ``qop=auth``).

A superior platform challenges our REGISTER with ``401`` and ``WWW-Authenticate:
Digest realm=..., nonce=...``; :func:`authorization` answers it. GB/T 28181 uses
MD5 only (MD5 here is the protocol's, not a choice). Pure functions; any thread.
"""

from __future__ import annotations

import hashlib
import re
import secrets

_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)')


class ChallengeError(ValueError):
    """A challenge this client cannot answer; the text says why."""


def parse_challenge(header: str) -> dict[str, str]:
    """The parameters of a ``Digest`` challenge, names in lower case."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ChallengeError(f"the challenge's scheme is {scheme[:20]!r}, not Digest")
    found = {name.lower(): value.strip('"') for name, value in _PARAM.findall(rest)}
    if "realm" not in found or "nonce" not in found:
        raise ChallengeError("the Digest challenge has no realm or no nonce")
    algorithm = found.get("algorithm", "MD5").upper()
    if algorithm != "MD5":
        raise ChallengeError(f"the challenge asks for {algorithm[:20]}, only MD5 is supported")
    return found


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def authorization(
    challenge: dict[str, str], *, method: str, uri: str, username: str, password: str, count: int = 1
) -> str:
    """The ``Authorization`` header value answering ``challenge``."""
    realm, nonce = challenge["realm"], challenge["nonce"]
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    fields = [
        f'username="{username}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
    ]
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        cnonce, nc = secrets.token_hex(8), f"{count:08x}"
        response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        fields += [f'response="{response}"', "qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    else:
        fields.append(f'response="{_md5(f"{ha1}:{nonce}:{ha2}")}"')
    fields.append("algorithm=MD5")
    if "opaque" in challenge:
        fields.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(fields)
