"""What users are told when a source fails: our own fixed words, never the camera's.

A camera's reason phrases, headers, SDP and bodies are free text under its
control (one echoed the request's ``Authorization`` header, that is the base64
of its login). Such text may appear in an exception's message, which goes to the
debug log only, redacted (:func:`streams.redact.redact_text`). What reaches
``last_error``, alarms and log lines at INFO and above is chosen here: from a
fixed table, by error class, RTSP status code and the kind of socket error,
with nothing interpolated but numbers and our own method names.

A WHEP upstream (:mod:`streams.sources.whep`) has texts of its own, by HTTP status.

Raise sites pass these texts as ``SourceError(detail, public=...)``;
:func:`public_reason` maps any exception (ours, a source's that set no public
text, or a bug) to one.

Pure functions; any thread.
"""

from __future__ import annotations

import errno
import socket

from streams.errors import (
    SourceAuthError,
    SourceError,
    SourceProtocolError,
    SourceUnreachable,
    UnsupportedCodec,
)

_METHODS = frozenset(("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "GET_PARAMETER", "TEARDOWN"))

LOGIN_REFUSED = "the camera refused the login (401)"
LOGIN_REQUIRED = "the camera requires a login and none is configured (401)"
LOGIN_SCHEME = "the camera asks for a login method the relay does not support"
NOT_RTSP = "the camera answered something that is not RTSP"
BAD_ANSWER = "the camera's answer cannot be used"
NO_SESSION = "the camera's SETUP answer has no session"
NO_VIDEO = "the camera's stream has no video track"
BAD_CODEC = "the camera's video codec or packetization is not supported"
CLOSED = "the camera closed the connection"
LOST = "the connection to the camera was lost"
SESSION_DROPPED = "the camera dropped the RTSP session (454)"
TCP_REFUSED = "the camera refuses RTP over TCP (461)"
UDP_REFUSED = "the camera refuses RTP over UDP (461)"
NO_UDP_PORTS = "no free UDP port pair to receive RTP"
BAD_URL = "the camera's URL is not a valid rtsp:// or rtsps:// URL"
UNREACHABLE = "the camera cannot be reached"
FAILED = "the stream failed"

_STATUS: dict[int, str] = {
    400: "the camera rejected the {method} request (400)",
    403: "the camera forbids access to the stream (403)",
    404: "the camera answered 404 for the stream",
    405: "the camera does not allow {method} (405)",
    406: "the camera cannot describe the stream as SDP (406)",
    453: "the camera has not enough bandwidth (453)",
    454: SESSION_DROPPED,
    457: "the camera refuses the requested range (457)",
    459: "the camera refuses {method} on the whole session (459)",
    460: "the camera refuses {method} on a single track (460)",
    461: "the camera refuses the requested transport (461)",
    501: "the camera does not implement {method} (501)",
    503: "the camera is unavailable or busy (503)",
}


TOKEN_REFUSED = "the WHEP server refused the API token (401)"
TOKEN_REQUIRED = "the WHEP server requires an API token and none is configured (401)"
NOT_WHEP = "the WHEP server did not answer with an SDP answer"
NO_H264 = "the WHEP server sends no H.264 video"
WEBRTC_FAILED = "the WebRTC connection to the WHEP server failed"
BAD_WHEP_URL = "the camera's URL is not a valid whep:// or wheps:// URL"

_WHEP_STATUS: dict[int, str] = {
    400: "the WHEP server rejected the offer (400)",
    403: "the WHEP server forbids access to the camera (403)",
    404: "the WHEP server has no such camera, or does not show it to this token (404)",
    409: "the WHEP server cannot send this camera over WebRTC (409); pull its RTSP re-serve instead",
    415: "the WHEP server does not take SDP offers at this URL (415)",
    429: "the WHEP server allows this token no more viewers (429)",
    503: "the WHEP server is at its viewer limit or unavailable (503)",
}


def _method(method: str) -> str:
    return method if method in _METHODS else "a"


def status_reason(method: str, status: int) -> str:
    """The user's text for an RTSP request answered with an error ``status``."""
    if status == 401:
        return LOGIN_REFUSED
    if not 100 <= status <= 999:
        return f"the camera answered {_method(method)} with an invalid status"
    if status in _STATUS:
        return _STATUS[status].format(method=_method(method))
    if 500 <= status <= 599:
        return f"the camera failed with a server error ({status}) to {_method(method)}"
    return f"the camera answered {status} to {_method(method)}"


def whep_status_reason(status: int, *, has_token: bool) -> str:
    """The user's text for a WHEP offer answered with an error ``status``."""
    if status == 401:
        return TOKEN_REFUSED if has_token else TOKEN_REQUIRED
    if status in _WHEP_STATUS:
        return _WHEP_STATUS[status]
    if 500 <= status <= 599:
        return f"the WHEP server failed with a server error ({status})"
    return f"the WHEP server answered the offer with {status}"


def whep_no_answer_reason(timeout: float) -> str:
    return f"no answer to the WHEP offer within {timeout:g} s"


def connect_reason(err: BaseException, timeout: float) -> str:
    """The user's text for a failed TCP connect (``err`` from the socket layer)."""
    if isinstance(err, TimeoutError):
        return f"the camera did not accept the connection within {timeout:g} s"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, socket.gaierror):
        return "the camera's host name cannot be resolved"
    if isinstance(err, OSError) and err.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "the camera's network cannot be reached"
    if isinstance(err, OSError) and err.errno == errno.ECONNRESET:
        return "the camera reset the connection"
    return UNREACHABLE


def no_answer_reason(method: str, timeout: float) -> str:
    return f"no answer to {_method(method)} within {timeout:g} s"


def no_rtp_reason(timeout: float, *, video: bool = False) -> str:
    return f"no {'video ' if video else ''}RTP for {timeout:g} s"


def public_reason(err: BaseException) -> str:
    """The user's text for any failure of a source: the raise site's own, else by class."""
    if isinstance(err, SourceError) and err.public:
        return err.public
    if isinstance(err, SourceAuthError):
        return LOGIN_REFUSED
    if isinstance(err, SourceUnreachable):
        return UNREACHABLE
    if isinstance(err, UnsupportedCodec):
        return BAD_CODEC
    if isinstance(err, SourceProtocolError):
        return BAD_ANSWER
    if isinstance(err, SourceError):
        return FAILED
    return f"internal error: {type(err).__name__}"
