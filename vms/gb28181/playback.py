"""Playback control and its notices: MANSRTSP in INFO, and the MediaStatus at a file's end.

A superior controls a playback dialog with an INFO whose body
(``Content-Type: Application/MANSRTSP``) is an RTSP-like request: ``PLAY`` (resume;
with ``Scale: 2.0`` play faster or slower), ``PAUSE`` or ``TEARDOWN``. Seeking with
``Range: npt=<seconds>-`` is not served: only ``npt=now-`` (go on from here) is
accepted, anything else is refused with the reason. :func:`parse_control` reads the
body or raises :class:`ControlError`.

When the recording of a playback or download has been sent to its end, the lower
platform tells the superior with a MESSAGE whose body is
``<Notify><CmdType>MediaStatus</CmdType>…<NotifyType>121</NotifyType></Notify>``
(:func:`media_status`); wvp-GB28181-pro then sends its BYE. Pure functions; any thread.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal

from vms.gb28181.manscdp import add, document

CONTENT_TYPE = "Application/MANSRTSP"
FILE_ENDED = "121"
"""``NotifyType`` of a MediaStatus: the file was sent to its end."""
MIN_SCALE, MAX_SCALE = 0.125, 16.0

Method = Literal["PLAY", "PAUSE", "TEARDOWN"]


class ControlError(ValueError):
    """A MANSRTSP request we cannot serve; the text says why."""


@dataclass(frozen=True, slots=True)
class Control:
    method: Method
    scale: float | None = None


def parse_control(body: bytes) -> Control:
    lines = [line.strip() for line in body.decode("utf-8", errors="replace").splitlines() if line.strip()]
    if not lines:
        raise ControlError("the MANSRTSP body is empty")
    method = lines[0].split(" ")[0].upper()
    if method not in ("PLAY", "PAUSE", "TEARDOWN"):
        raise ControlError(f"MANSRTSP {method[:20]} is not served; only PLAY, PAUSE and TEARDOWN")
    headers = {
        name.strip().lower(): value.strip() for name, _, value in (x.partition(":") for x in lines[1:])
    }
    scale = _scale(headers.get("scale"))
    where = headers.get("range", "").replace(" ", "").lower()
    if method == "PLAY" and where not in ("", "npt=now-", "npt=now"):
        raise ControlError(f"seeking ({where[:30]}) is not served; only Range: npt=now-")
    return Control(method, scale)  # type: ignore[arg-type]  # checked above


def _scale(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        scale = float(text)
    except ValueError:
        raise ControlError(f"Scale {text[:20]} is not a number") from None
    if not MIN_SCALE <= scale <= MAX_SCALE:
        raise ControlError(f"Scale {scale:g} is not served; from {MIN_SCALE:g} to {MAX_SCALE:g} forward only")
    return scale


def media_status(channel_id: str, sn: int) -> ET.Element:
    """The notice that a playback's or download's file was sent to its end."""
    element = document("Notify", "MediaStatus", sn, channel_id)
    add(element, "NotifyType", FILE_ENDED)
    return element
