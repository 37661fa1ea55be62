"""Sources of encoded video, and the factory that picks one by URL scheme.

``rtsp://`` and ``rtsps://`` reach IP cameras, ``whep://`` and ``wheps://`` another
service's WebRTC egress (WHEP over HTTP or HTTPS), ``file:`` loops a video file and
``demo://`` is a synthetic camera. Building a source opens nothing: it connects
when its :meth:`~streams.sources.base.Source.packets` generator is iterated.

Any thread may call :func:`open_source`; sources themselves run on the event loop.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from streams.sources.base import Source, SourceOptions

__all__ = ["Source", "SourceOptions", "check_url", "open_source", "supported_schemes"]

_SCHEMES = ("rtsp", "rtsps", "whep", "wheps", "file", "demo")


def supported_schemes() -> tuple[str, ...]:
    """URL schemes :func:`open_source` accepts."""
    return _SCHEMES


def open_source(options: SourceOptions) -> Source:
    """The source for ``options.url``; ``ValueError`` for an unknown scheme or a malformed
    demo or file URL. The message never repeats the URL of a network camera."""
    try:
        scheme = urlsplit(options.url).scheme.lower()
    except ValueError as err:
        raise ValueError("the source URL cannot be parsed") from err
    if scheme in ("rtsp", "rtsps"):
        from streams.sources.rtsp.source import RtspSource

        return RtspSource(options)
    if scheme in ("whep", "wheps"):
        from streams.sources.whep.source import WhepSource

        return WhepSource(options)
    if scheme == "file":
        from streams.sources.file import FileSource

        return FileSource(options)
    if scheme == "demo":
        from streams.sources.demo import DemoSource

        return DemoSource(options)
    shown = f"{scheme!r}" if scheme else "none"
    raise ValueError(f"unsupported source URL scheme {shown}; supported: {', '.join(_SCHEMES)}")


def check_url(url: str) -> None:
    """Raise ``ValueError`` if :func:`open_source` would refuse ``url`` (for example a demo
    URL with a bad size); opens nothing, so configuration checks can call it."""
    open_source(SourceOptions(url=url))
