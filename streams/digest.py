"""HTTP Digest authentication (RFC 2617, RFC 7616): what a server and a client both compute.

The syntax of ``WWW-Authenticate`` and ``Authorization`` values (a scheme, then
``name=value`` pairs, values plain or quoted), HA1 and the response, and the
``Authorization`` value a client sends. Three users: the RTSP re-serve checks
answers (:mod:`streams.rtsp_server.digest`), the RTSP client answers cameras
(:mod:`streams.sources.rtsp.auth`), and the GB/T 28181 cascade answers a
superior platform's challenge to REGISTER (through :mod:`streams`' exports).
What each side does around it (nonces, staleness, which challenge to take, which
algorithms to accept) stays with that side.

Pure functions; any thread.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping

ALGORITHMS = {"MD5": "md5", "MD5-SESS": "md5", "SHA-256": "sha256", "SHA-256-SESS": "sha256"}
""":mod:`hashlib`'s name of each algorithm by its upper-case name; ``-SESS`` ones fold the
nonces into HA1."""

_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)')
_ESCAPED = re.compile(r"\\(.)")


def parse_header(value: str) -> tuple[str, dict[str, str]]:
    """The scheme of an authentication header's value, in lower case, and its parameters:
    names in lower case, quoted values unquoted."""
    scheme, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    for name, raw in _PARAM.findall(rest):
        params[name.lower()] = _ESCAPED.sub(r"\1", raw[1:-1]) if raw.startswith('"') else raw
    return scheme.lower(), params


def _hash(algorithm: str, text: str) -> str:
    return hashlib.new(ALGORITHMS[algorithm.upper()], text.encode(), usedforsecurity=False).hexdigest()


def ha1(username: str, password: str, realm: str, algorithm: str = "MD5") -> str:
    """``H(username:realm:password)`` in hex: what a server may store instead of the password."""
    return _hash(algorithm, f"{username}:{realm}:{password}")


def response(
    stored_ha1: str,
    *,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    algorithm: str = "MD5",
) -> str:
    """The ``response`` of an answer to ``nonce`` for ``method`` on ``uri``; the RFC 2069 form
    without ``qop``, else ``qop=auth`` with its nonce count and client nonce."""
    ha2 = _hash(algorithm, f"{method}:{uri}")
    if qop == "auth":
        return _hash(algorithm, f"{stored_ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    return _hash(algorithm, f"{stored_ha1}:{nonce}:{ha2}")


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(
    challenge: Mapping[str, str], *, method: str, uri: str, username: str, password: str, count: int = 1
) -> str:
    """The ``Authorization`` value answering a Digest ``challenge`` (its parameters, as
    :func:`parse_header` gives them, with a ``nonce`` and an algorithm of :data:`ALGORITHMS`).

    ``qop=auth`` when the challenge offers it, with ``count`` as the nonce count; the
    algorithm is named when the challenge named it, and its ``opaque`` is returned."""
    algorithm = challenge.get("algorithm", "MD5")
    realm, nonce = challenge.get("realm", ""), challenge["nonce"]
    qop = "auth" if "auth" in [q.strip() for q in challenge.get("qop", "").split(",")] else None
    cnonce, nc = secrets.token_hex(8), f"{count:08x}"
    key = ha1(username, password, realm, algorithm)
    if algorithm.upper().endswith("-SESS"):
        key = _hash(algorithm, f"{key}:{nonce}:{cnonce}")
    answer = response(
        key, method=method, uri=uri, nonce=nonce, qop=qop, nc=nc, cnonce=cnonce, algorithm=algorithm
    )
    fields = [f"username={_quoted(username)}", f"realm={_quoted(realm)}", f"nonce={_quoted(nonce)}"]
    fields += [f"uri={_quoted(uri)}", f'response="{answer}"']
    if qop:
        fields += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    if "algorithm" in challenge:
        fields.append(f"algorithm={algorithm}")
    if "opaque" in challenge:
        fields.append(f"opaque={_quoted(challenge['opaque'])}")
    return "Digest " + ", ".join(fields)
