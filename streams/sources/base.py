"""What every source is: an async generator of access units.

A source connects when iterated, yields :class:`~streams.packets.MediaPacket`
objects (video access units, and audio frames when asked for and offered) until
the stream ends (the generator returns) or fails (it raises a
:class:`~streams.errors.SourceError`), and releases everything when closed. The
ingest supervisor owns reconnecting, watchdogs and backoff; a source only reads.

A source that connects in steps (RTSP: OPTIONS, DESCRIBE, SETUP, PLAY) calls
:meth:`Source.opened` once the stream is set up and packets may flow, on the
event loop that iterates it: the ingest then gives the first packet its own,
shorter deadline. A source that never calls it is open with its first packet.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from streams.packets import AudioInfo, MediaPacket

if TYPE_CHECKING:
    from streams.specs import IceServer


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """How to reach one camera. Credentials travel here, never in the URL."""

    url: str
    transport: Literal["tcp", "udp"] = "tcp"
    username: str | None = None
    password: str | None = None
    """The RTSP password, or the API token a WHEP source sends as its bearer token."""
    connect_timeout: float = 5.0
    read_timeout: float = 5.0
    keepalive_interval: float = 20.0
    label: str = ""
    """Text drawn on synthetic pictures (demo sources), for example the hall and camera."""
    audio: bool = False
    """Also pull the camera's audio (RTSP only), yielded among the video packets; off by default."""
    ice_servers: tuple[IceServer, ...] = ()
    """STUN/TURN servers of a WHEP source's ICE agent; none by default."""
    ice_host_addresses: tuple[str, ...] = ()
    """The only addresses a WHEP source gathers host candidates on; empty: every interface
    but loopback (aioice's choice)."""


class Source(abc.ABC):
    """An openable stream of access units. See the module docstring."""

    def __init__(self, options: SourceOptions) -> None:
        self.options = options
        self.audio_info: AudioInfo | None = None
        """The audio stream's description once known (after connecting), None without audio."""
        self.open_listener: Callable[[], None] | None = None
        """Called by :meth:`opened`; set by the ingest that iterates this source."""

    def opened(self) -> None:
        """Say that this connection is set up and packets may flow (see the module docstring)."""
        if self.open_listener is not None:
            self.open_listener()

    @abc.abstractmethod
    def packets(self) -> AsyncGenerator[MediaPacket, None]:
        """Connect and yield access units; returns at end of stream, raises SourceError on failure."""
