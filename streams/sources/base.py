"""What every source is: an async generator of access units.

A source connects when iterated, yields :class:`~streams.packets.MediaPacket`
objects (video access units, and audio frames when asked for and offered) until
the stream ends (the generator returns) or fails (it raises a
:class:`~streams.errors.SourceError`), and releases everything when closed. The
ingest supervisor owns reconnecting, watchdogs and backoff; a source only reads.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Literal

from streams.packets import AudioInfo, MediaPacket


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """How to reach one camera. Credentials travel here, never in the URL."""

    url: str
    transport: Literal["tcp", "udp"] = "tcp"
    username: str | None = None
    password: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 5.0
    keepalive_interval: float = 20.0
    label: str = ""
    """Text drawn on synthetic pictures (demo sources), for example the hall and camera."""
    audio: bool = False
    """Also pull the camera's audio (RTSP only), yielded among the video packets; off by default."""


class Source(abc.ABC):
    """An openable stream of access units. See the module docstring."""

    def __init__(self, options: SourceOptions) -> None:
        self.options = options
        self.audio_info: AudioInfo | None = None
        """The audio stream's description once known (after connecting), None without audio."""

    @abc.abstractmethod
    def packets(self) -> AsyncGenerator[MediaPacket, None]:
        """Connect and yield access units; returns at end of stream, raises SourceError on failure."""
