"""Keep credentials out of log lines, errors and API answers.

:func:`redact_url` removes a URL's ``user:password@`` and masks credential-like
query values (``password=``, ``token=`` ...). :func:`redact_text` does the same to
any text, and also masks ``Authorization`` header values, ``Basic``/``Digest``
tokens and given secrets: it is what a camera's own words go through before they
reach the debug log (they never reach users: see :mod:`streams.sources.failures`).
:func:`credential_forms` lists the shapes a login takes on the wire, so that an
echo of any of them is caught.

Pure functions; any thread.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import quote, urlsplit, urlunsplit

_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]*@", re.IGNORECASE)
_BARE_USERINFO = re.compile(r"(?<![\w/:@.-])[\w.~%!$&'()*+,;=-]+:[^\s/@]*@(?=[\w\[])")
"""``user:password@host`` without a scheme."""
_HEADER = re.compile(
    r"(?P<name>(?:proxy-)?authorization|www-authenticate|cookie)(?P<sep>\s*[:=]\s*)[^\r\n]*", re.I
)
_SCHEME_TOKEN = re.compile(r"\b(?P<scheme>basic|bearer|digest)\s+[^\r\n]*", re.IGNORECASE)
_KEY_VALUE = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|pass|passphrase|secret|token|access_token|auth|credential|"
    r"credentials|apikey|api_key|key|sig|signature)\b[\"']?\s*(?:=|:)\s*)"
    r"(?P<value>\"[^\"]*\"?|'[^']*'?|[^\s&;,\"']+)",
    re.IGNORECASE,
)
_SECRET_QUERY_KEYS = frozenset(
    (
        "password",
        "passwd",
        "pwd",
        "pass",
        "secret",
        "token",
        "access_token",
        "auth",
        "key",
        "sig",
        "signature",
    )
)
MASK = "***"


def redact_url(url: str) -> str:
    """The URL without any ``user:password@`` part and with credential-like query values masked."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return _KEY_VALUE.sub(rf"\g<key>{MASK}", _USERINFO.sub(r"\g<scheme>", url))
    netloc = parts.netloc
    if parts.username is not None or parts.password is not None:
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{port}" if port else host
    query = "&".join(_mask_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _mask_pair(pair: str) -> str:
    key, sep, _ = pair.partition("=")
    return f"{key}={MASK}" if sep and key.lower() in _SECRET_QUERY_KEYS else pair


def redact_text(text: str, secrets: list[str]) -> str:
    """``text`` with user-info, credential headers, tokens, ``password=`` values and every given
    secret replaced. Errs on the side of masking too much: it serves logs, not data."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(r"\g<scheme>", text)
    text = _BARE_USERINFO.sub("", text)
    text = _HEADER.sub(rf"\g<name>\g<sep>{MASK}", text)
    text = _SCHEME_TOKEN.sub(rf"\g<scheme> {MASK}", text)
    return _KEY_VALUE.sub(rf"\g<key>{MASK}", text)


def credential_forms(username: str | None, password: str | None) -> list[str]:
    """The password and the shapes a login takes on the wire (Basic token, URL-encoded),
    longest first; empty without a password."""
    if not password:
        return []
    forms = {password, quote(password, safe="")}
    if username is not None:
        pair = f"{username}:{password}".encode()
        forms.add(base64.b64encode(pair).decode("ascii"))
        forms.add(base64.urlsafe_b64encode(pair).decode("ascii").rstrip("="))
        forms.add(base64.b64encode(pair).decode("ascii").rstrip("="))
    return sorted(forms, key=len, reverse=True)
