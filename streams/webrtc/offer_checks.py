"""What a WHEP offer's transport must say before the relay answers it.

Every m-line must have, at its own level or the session's (the media level
wins, RFC 8866):

* a DTLS fingerprint (``a=fingerprint``, RFC 8122) of an algorithm the relay can
  verify (sha-256, sha-384, sha-512): without one, aiortc answers and then fails
  the DTLS handshake with an exception once the viewer connects;
* a DTLS role (``a=setup``: ``actpass``, ``active`` or ``passive``, RFC 8842);
* ICE credentials (``a=ice-ufrag``: 4 to 256 ice-chars; ``a=ice-pwd``: 22 to 256,
  RFC 8839).

:func:`check_transport` reads the SDP text itself, line by line, so that
nothing aiortc's parser fills in or drops changes the verdict. An unusable
offer raises :class:`~streams.errors.NegotiationError` with a message that names
what is missing.

Pure functions, any thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from streams.errors import NegotiationError

FINGERPRINT_ALGORITHMS = ("sha-256", "sha-384", "sha-512")
_SETUP_ROLES = ("actpass", "active", "passive")
_UFRAG = re.compile(r"[A-Za-z0-9+/]{4,256}")
_PWD = re.compile(r"[A-Za-z0-9+/]{22,256}")


@dataclass(slots=True)
class _Section:
    kind: str
    attributes: dict[str, list[str]] = field(default_factory=dict)


def _sections(offer_sdp: str) -> tuple[dict[str, list[str]], list[_Section]]:
    """The session-level attributes and each m-line's, as ``name -> [values]``."""
    session: dict[str, list[str]] = {}
    media: list[_Section] = []
    for raw in offer_sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            parts = line[2:].split()
            media.append(_Section(parts[0] if parts else ""))
        elif line.startswith("a="):
            name, _, value = line[2:].partition(":")
            target = media[-1].attributes if media else session
            target.setdefault(name.strip().lower(), []).append(value.strip())
    return session, media


def _value(name: str, section: _Section, session: dict[str, list[str]]) -> list[str]:
    return section.attributes.get(name) or session.get(name) or []


def check_transport(offer_sdp: str) -> None:
    """Raise NegotiationError unless every m-line has DTLS and ICE parameters."""
    session, media = _sections(offer_sdp)
    for section in media:
        where = f"its {section.kind or 'unnamed'} m-line"
        fingerprints = _value("fingerprint", section, session)
        if not fingerprints:
            raise NegotiationError(f"the offer has no DTLS fingerprint (a=fingerprint) for {where}")
        algorithms = {f.split()[0].lower() for f in fingerprints if f.split()}
        if not algorithms.intersection(FINGERPRINT_ALGORITHMS):
            offered = ", ".join(sorted(algorithms)) or "none"
            raise NegotiationError(
                f"the offer's DTLS fingerprint for {where} uses {offered}; "
                f"the relay verifies {', '.join(FINGERPRINT_ALGORITHMS)}"
            )
        setup = _value("setup", section, session)
        if not setup or setup[-1].lower() not in _SETUP_ROLES:
            raise NegotiationError(
                f"the offer has no usable DTLS role (a=setup: actpass, active or passive) for {where}"
            )
        ufrag = _value("ice-ufrag", section, session)
        if not ufrag:
            raise NegotiationError(f"the offer has no ICE username fragment (a=ice-ufrag) for {where}")
        if not _UFRAG.fullmatch(ufrag[-1]):
            raise NegotiationError(f"the offer's ICE username fragment for {where} is not 4 to 256 ice-chars")
        pwd = _value("ice-pwd", section, session)
        if not pwd:
            raise NegotiationError(f"the offer has no ICE password (a=ice-pwd) for {where}")
        if not _PWD.fullmatch(pwd[-1]):
            raise NegotiationError(f"the offer's ICE password for {where} is not 22 to 256 ice-chars")
