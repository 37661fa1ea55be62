"""Picture faults that a test camera of ``gst_rtsp_server.py`` turns on and off while it streams.

A mount with the ``faults`` option has, between its picture source and its encoder,
GStreamer elements that leave the picture alone until a fault is set:

    SOURCE ! videobalance name=balance ! videoconvert ! gaussianblur name=blur sigma=0
           ! compositor name=mix (sink_0: the picture, sink_1: the layer, alpha 0)
    videotestsrc name=layer ! mix.

===============  ==============================================================
fault            what changes
===============  ==============================================================
``dark``         ``videobalance`` contrast 0.12: about an eighth of the light
``overexposed``  ``videobalance`` contrast 2, brightness 0.4: blown out
``covered``      the layer, a flat brown card, over the left 85 % of the picture
``blurred``      ``gaussianblur`` sigma 2.5 px
``frozen``       the ``appsrc`` re-sends one picture (``scene`` and ``clock``
                 sources only)
``moved``        the picture zoomed 1.2 times about its bottom-right corner: the
                 camera was knocked and sees a nearby part of the hall
``tinted``       the layer, green, over the whole picture at alpha 0.3
``snow``         the layer, ``videotestsrc pattern=snow``, over the whole
                 picture at alpha 0.5
``none``         everything back to neutral
===============  ==============================================================

A :class:`FaultControl` per mount remembers the fault (a media prepared later starts
with it) and applies it to every prepared media of the mount, all within the same
RTSP sessions. It is driven from the server's standard input (see
:func:`watch_commands`).

Imported by ``gst_rtsp_server.py`` under the system Python: GStreamer's bindings,
no numpy. Threads: commands run on the GLib main loop; medias are added from the
RTSP server's threads; feeders read :attr:`Freezer.frozen` from their own.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

from gi.repository import GLib, Gst

FAULTS = ("none", "dark", "overexposed", "covered", "blurred", "frozen", "moved", "tinted", "snow")
COVER_ARGB = 0xFF4A4238
TINT_ARGB = 0xFF00C000
BLUR_SIGMA = 2.5
ZOOM = 1.2

SetFault = Callable[[str], None]
"""Turns one mount's picture bad (a fault's name) or back (``none``); ValueError if it cannot."""


def fault_chain(width: int, height: int, fps: int, late: float) -> str:
    """The launch-line middle that takes raw video and leaves it, neutral, as I420 of this size.

    The compositor waits for a picture up to ``late`` seconds behind the clock (what the
    feeder may lag before it starts again from now). Without that it waits one frame of the
    layer, drops every picture that comes later, and the camera sends black: a feeder
    starved of CPU for a while turned a healthy camera dark."""
    size = f"width={width},height={height},framerate={fps}/1"
    return (
        "videobalance name=balance ! videoconvert ! video/x-raw,format=AYUV "
        "! gaussianblur name=blur sigma=0 ! videoconvert ! mix.sink_0 "
        f"videotestsrc name=layer is-live=true pattern=solid-color ! video/x-raw,{size} "
        "! mix.sink_1 "
        f"compositor name=mix background=black latency={round(late * 1e9)} sink_1::alpha=0 "
        f"! video/x-raw,format=I420,{size}"
    )


class Freezer:
    """Wraps a feeder's ``produce``: while :attr:`frozen`, it gives the last picture again."""

    def __init__(self, produce: Callable[[], bytes]) -> None:
        self._produce = produce
        self._last = b""
        self.frozen = False

    def __call__(self) -> bytes:
        if not (self.frozen and self._last):
            self._last = self._produce()
        return self._last


class _Chain:
    """The fault elements of one prepared media."""

    def __init__(self, bin_: Gst.Bin, width: int, height: int, freezer: Freezer | None) -> None:
        self.balance = bin_.get_by_name("balance")
        self.blur = bin_.get_by_name("blur")
        self.layer = bin_.get_by_name("layer")
        mix = bin_.get_by_name("mix")
        self.picture = mix.get_static_pad("sink_0")
        self.cover = mix.get_static_pad("sink_1")
        self.width, self.height = width, height
        self.freezer = freezer

    def set(self, fault: str) -> None:
        w, h = self.width, self.height
        contrast, brightness = {"dark": (0.12, 0.0), "overexposed": (2.0, 0.4)}.get(fault, (1.0, 0.0))
        self.balance.set_property("contrast", contrast)
        self.balance.set_property("brightness", brightness)
        self.blur.set_property("sigma", BLUR_SIGMA if fault == "blurred" else 0.0)
        zoom = ZOOM if fault == "moved" else 1.0
        _place(self.picture, (w - round(w * zoom), h - round(h * zoom), round(w * zoom), round(h * zoom)))
        layer = {
            "covered": ("solid-color", COVER_ARGB, 1.0, round(w * 0.85)),
            "tinted": ("solid-color", TINT_ARGB, 0.3, w),
            "snow": ("snow", COVER_ARGB, 0.5, w),
        }.get(fault, ("solid-color", COVER_ARGB, 0.0, w))
        pattern, colour, alpha, cover_width = layer
        self.layer.set_property("pattern", pattern)
        self.layer.set_property("foreground-color", colour)
        _place(self.cover, (0, 0, cover_width, h))
        self.cover.set_property("alpha", alpha)
        if self.freezer is not None:
            self.freezer.frozen = fault == "frozen"


def _place(pad: Gst.Pad, box: tuple[int, int, int, int]) -> None:
    for name, value in zip(("xpos", "ypos", "width", "height"), box, strict=True):
        pad.set_property(name, value)


class FaultControl:
    """The fault of one mount, applied to each of its prepared medias."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.fault = "none"
        self._chains: list[_Chain] = []
        self._lock = threading.Lock()

    def attach(self, media: Any, freezer: Freezer | None) -> None:
        """Take ``media``'s fault elements (it is being configured) and give them the fault."""
        chain = _Chain(media.get_element(), self.width, self.height, freezer)
        with self._lock:
            self._chains.append(chain)
            chain.set(self.fault)
        media.connect("unprepared", lambda _m: self._detach(chain))

    def _detach(self, chain: _Chain) -> None:
        with self._lock:
            if chain in self._chains:
                self._chains.remove(chain)

    def set(self, fault: str, *, can_freeze: bool) -> None:
        """Turn ``fault`` on (``none``: off). Raises ValueError for a fault this mount cannot make."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        if fault == "frozen" and not can_freeze:
            raise ValueError("frozen needs a picture fed by the server (scene= or clock)")
        with self._lock:
            self.fault = fault
            for chain in self._chains:
                chain.set(fault)


def watch_commands(faults: dict[str, SetFault], queries: Mapping[str, Callable[[], str]]) -> None:
    """Run the commands read from standard input, one a line, on the GLib main loop: ``fault
    PATH NAME``, or a query by its name alone; answer each with ``OK`` (a query: ``OK`` and its
    answer) or ``ERR reason`` on standard output. ``faults`` holds each mount's :data:`SetFault`
    by path, ``queries`` what answers each query. Stops at the end of the input."""
    pending = bytearray()

    def on_input(_channel: Any, _condition: GLib.IOCondition) -> bool:
        chunk = os.read(sys.stdin.fileno(), 4096)
        pending.extend(chunk)
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            words = line.decode().split()
            if len(words) == 1 and words[0] in queries:
                print(f"OK {queries[words[0]]()}", flush=True)
            elif words:
                print(_fault_command(faults, words), flush=True)
        return bool(chunk)

    channel = GLib.IOChannel.unix_new(sys.stdin.fileno())
    GLib.io_add_watch(channel, GLib.PRIORITY_DEFAULT, GLib.IOCondition.IN | GLib.IOCondition.HUP, on_input)


def _fault_command(faults: dict[str, SetFault], words: list[str]) -> str:
    if len(words) != 3 or words[0] != "fault":
        return "ERR usage: fault PATH NAME"
    set_fault = faults.get(words[1])
    if set_fault is None:
        return f"ERR no mount {words[1]!r}"
    try:
        set_fault(words[2])
    except ValueError as err:
        return f"ERR {err}"
    return "OK"
