"""Playback control and its notices: MANSRTSP in INFO, and the MediaStatus at a file's end.

A superior controls a playback dialog with an INFO whose body
(``Content-Type: Application/MANSRTSP``) is an RTSP-like request: ``PLAY`` (resume;
with ``Scale: 2.0`` play faster or slower; with ``Range: npt=<seconds>-`` seek to that
many seconds after the playback's ``t=`` start, ``npt=now-`` going on from here),
``PAUSE`` or ``TEARDOWN``. :func:`parse_control` reads the body or raises
:class:`ControlError`. The INFO is answered with the MANSRTSP response in its body
(:func:`rtsp_response`): ``RTSP/1.0 200 OK`` with the request's ``CSeq`` and, after a
seek, the ``Range`` actually played from (the keyframe at or before the point asked);
a point outside the playback's interval gets ``457 Invalid Range`` (RFC 2326, 11.3.10),
as the SIP status too.

When the recording of a playback or download has been sent to its end, the lower
platform tells the superior with a MESSAGE whose body is
``<Notify><CmdType>MediaStatus</CmdType>…<NotifyType>121</NotifyType></Notify>``
(:func:`media_status`); wvp-GB28181-pro then sends its BYE. Pure functions; any thread.
"""

from __future__ import annotations

import math
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
    position: float | None = None
    """Seconds after the playback's start to seek to (``Range: npt=<seconds>-``); None: from here."""
    cseq: str = ""


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
    position = _position(headers.get("range", "")) if method == "PLAY" else None
    cseq = headers.get("cseq", "")[:10]
    return Control(method, scale, position, cseq if cseq.isdigit() else "")  # type: ignore[arg-type]  # checked


def _position(text: str) -> float | None:
    """The start of a ``Range: npt=<start>-[<end>]``, in seconds; None for ``now`` or no range."""
    where = text.replace(" ", "").lower()
    if where in ("", "npt=now-", "npt=now"):
        return None
    start = where.removeprefix("npt=").partition("-")[0] if where.startswith("npt=") else ""
    try:
        position = float(start)
    except ValueError:
        raise ControlError(f"Range {text[:30]} is not served; only npt=<seconds>- or npt=now-") from None
    if not math.isfinite(position) or position < 0:
        raise ControlError(f"Range {text[:30]} is not a point of the playback")
    return position


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


def rtsp_response(
    control: Control, status: int = 200, reason: str = "OK", position: float | None = None
) -> bytes:
    """The MANSRTSP answer to ``control``: its status, its CSeq and the range played from."""
    lines = [f"RTSP/1.0 {status} {reason}", f"CSeq: {control.cseq or '0'}"]
    if position is not None:
        lines.append(f"Range: npt={position:.3f}-")
    return ("\r\n".join(lines) + "\r\n").encode()


def media_status(channel_id: str, sn: int) -> ET.Element:
    """The notice that a playback's or download's file was sent to its end."""
    element = document("Notify", "MediaStatus", sn, channel_id)
    add(element, "NotifyType", FILE_ENDED)
    return element
