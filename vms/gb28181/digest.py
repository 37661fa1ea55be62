"""HTTP digest authentication for REGISTER (RFC 2617, MD5, with or without ``qop=auth``).

A superior platform challenges our REGISTER with ``401`` and ``WWW-Authenticate:
Digest realm=..., nonce=...``; :func:`parse_challenge` checks that this client can
answer it and :func:`authorization` (the media plane's Digest, shared with its RTSP
client) answers it. GB/T 28181 uses MD5 only (MD5 here is the protocol's, not a
choice). Pure functions; any thread.
"""

from __future__ import annotations

from streams import digest_authorization as authorization
from streams import parse_auth_header

__all__ = ["ChallengeError", "authorization", "parse_challenge"]


class ChallengeError(ValueError):
    """A challenge this client cannot answer; the text says why."""


def parse_challenge(header: str) -> dict[str, str]:
    """The parameters of a ``Digest`` challenge, names in lower case; ``algorithm`` is always
    set (``MD5``), so that the answer names it."""
    scheme, found = parse_auth_header(header)
    if scheme != "digest":
        raise ChallengeError(f"the challenge's scheme is {scheme[:20]!r}, not Digest")
    if "realm" not in found or "nonce" not in found:
        raise ChallengeError("the Digest challenge has no realm or no nonce")
    algorithm = found.get("algorithm", "MD5").upper()
    if algorithm != "MD5":
        raise ChallengeError(f"the challenge asks for {algorithm[:20]}, only MD5 is supported")
    return found | {"algorithm": algorithm}
