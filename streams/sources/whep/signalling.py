"""WHEP signalling as a client (RFC 9725): POST the offer, DELETE the session when done.

A camera URL ``whep://host:port/path`` is the endpoint ``http://host:port/path``,
``wheps://`` the same over HTTPS; the query is kept, a ``user:password@`` is
dropped (never sent). The API token, if any, goes as ``Authorization: Bearer``.
The offer is complete (ICE gathered before it is sent): no trickle, no PATCH.

Every failure is a :class:`~streams.errors.SourceError` with fixed words for users
(:mod:`streams.sources.failures`); the server's own words reach the debug log only.

Event loop only.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from streams.errors import SourceAuthError, SourceError, SourceProtocolError, SourceUnreachable
from streams.redact import redact_url
from streams.sources.failures import (
    BAD_WHEP_URL,
    NOT_WHEP,
    UNREACHABLE,
    connect_reason,
    whep_no_answer_reason,
    whep_status_reason,
)

log = logging.getLogger(__name__)

_HTTP_SCHEMES = {"whep": "http", "wheps": "https"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    """The HTTP(S) URL the offer is POSTed to."""
    shown: str
    """The camera URL as logs may show it (redacted)."""
    token: str | None


def endpoint(url: str, token: str | None) -> Endpoint:
    """The WHEP endpoint of a ``whep://`` or ``wheps://`` camera URL; SourceProtocolError if it is not one."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise SourceProtocolError(f"{shown}: malformed URL", public=BAD_WHEP_URL) from err
    scheme = _HTTP_SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise SourceProtocolError(f"{shown}: not a whep:// or wheps:// URL", public=BAD_WHEP_URL)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if port is None else f"{host}:{port}"
    return Endpoint(urlunsplit((scheme, netloc, parts.path or "/", parts.query, "")), shown, token or None)


def _headers(ep: Endpoint) -> dict[str, str]:
    return {"Authorization": f"Bearer {ep.token}"} if ep.token else {}


def _transport_error(ep: Endpoint, err: httpx.TransportError, timeout: float) -> SourceError:
    if isinstance(err, httpx.ConnectTimeout):
        return SourceUnreachable(
            f"{ep.shown}: connect timed out", public=connect_reason(TimeoutError(), timeout)
        )
    if isinstance(err, httpx.ConnectError):
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        public = connect_reason(cause, timeout) if cause is not None else UNREACHABLE
        return SourceUnreachable(f"{ep.shown}: cannot connect: {err}", public=public)
    if isinstance(err, httpx.TimeoutException):
        return SourceError(f"{ep.shown}: no answer to the offer", public=whep_no_answer_reason(timeout))
    return SourceUnreachable(f"{ep.shown}: {type(err).__name__}: {err}", public=UNREACHABLE)


async def post_offer(
    http: httpx.AsyncClient, ep: Endpoint, offer: str, within: float
) -> tuple[str, str | None]:
    """POST the offer; the answer SDP and the session's absolute URL (None if the server gave none)."""
    headers = _headers(ep) | {"Content-Type": "application/sdp", "Accept": "application/sdp"}
    try:
        response = await http.post(ep.url, content=offer.encode(), headers=headers, timeout=within)
    except httpx.TransportError as err:
        raise _transport_error(ep, err, within) from err
    if response.status_code != 201:
        detail = f"{ep.shown}: the offer was answered {response.status_code}: {response.text[:200]}"
        public = whep_status_reason(response.status_code, has_token=ep.token is not None)
        if response.status_code == 401:
            raise SourceAuthError(detail, public=public)
        raise SourceProtocolError(detail, public=public)
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/sdp" or not response.text.startswith("v=0"):
        raise SourceProtocolError(f"{ep.shown}: 201 without an SDP answer ({content_type})", public=NOT_WHEP)
    location = response.headers.get("location")
    session = response.url.join(location) if location else None
    if session is None or (session.scheme, session.netloc) != (response.url.scheme, response.url.netloc):
        # The token is sent only where the offer went: another origin's session is left to expire.
        log.info("%s: no session URL on the WHEP server; the session will end by itself", ep.shown)
        return response.text, None
    return response.text, str(session)


async def delete_session(http: httpx.AsyncClient, ep: Endpoint, location: str, within: float) -> None:
    """End the session on the server (best effort: a failure is logged, never raised)."""
    with contextlib.suppress(httpx.HTTPError):
        response = await http.delete(location, headers=_headers(ep), timeout=within)
        if response.status_code >= 300:
            log.debug("%s: DELETE of the WHEP session answered %d", ep.shown, response.status_code)
        return
    log.debug("%s: DELETE of the WHEP session failed", ep.shown)
