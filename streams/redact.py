"""Keep credentials out of log lines, errors and API answers."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]*@", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with any ``user:password@`` part removed."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(r"\g<scheme>", url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_text(text: str, secrets: list[str]) -> str:
    """``text`` with every URL's user-info and every given secret replaced."""
    text = _USERINFO.sub(r"\g<scheme>", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
