"""Domain errors of the media plane.

Library errors (socket, PyAV, aiortc) are wrapped in these with ``raise ... from err``
so that callers handle one small hierarchy. Messages never contain credentials.
"""

from __future__ import annotations


class StreamError(Exception):
    """Base of every media-plane error."""


class SourceError(StreamError):
    """A source could not be opened or failed while reading."""

    public: str | None = None
    """Fixed words for users (``last_error``, alarms); the message itself may quote the
    camera and goes to the debug log only. See :mod:`streams.sources.failures`."""

    def __init__(self, *args: object, public: str | None = None) -> None:
        super().__init__(*args)
        self.public = public


class SourceUnreachable(SourceError):
    """Connection refused, host unreachable or the connect timed out."""


class SourceAuthError(SourceError):
    """The camera refused the credentials."""


class SourceProtocolError(SourceError):
    """The camera answered something we cannot use (bad RTSP, no video, bad SDP)."""


class UnsupportedCodec(SourceError):
    """The stream's codec is not one the relay can pass through."""


class CapacityError(StreamError):
    """A viewer cap was reached."""


class NegotiationError(StreamError):
    """A WebRTC offer cannot be answered (malformed SDP, no usable codec)."""


class WrongOutput(StreamError):
    """The stream cannot be played this way, but another output can play it
    (for example a stream with B-frames over WebRTC: MSE plays it)."""


class StreamNotReady(StreamError):
    """The camera has sent no keyframe yet, so its stream cannot be described."""


class OwnerCapacityError(CapacityError):
    """A cap of one owner (one user, as the control plane names it) was reached: the
    same owner already holds too many viewer sessions, in all or of one camera."""
